"""The compiled kernels (``_C``, imported here and only here, so the layers above see one
module), CPU features, the active kernel variant, and the thread pool."""
from __future__ import annotations

from . import _C
from .errors import ArgumentError

# a bad LLAMIX_ISA / LLAMIX_THREADS (read by the kernels on first use) raises ArgumentError
_C.set_setting_error(ArgumentError)


def cpu_info() -> dict:
    """Report what the kernels run on.

    Returns a dict with ``features`` (CPU features usable by this OS), ``isa`` (the active kernel
    variant), ``available_isas`` (best first), ``threads`` (pool size) and ``physical_cores``.
    """
    return {
        "features": list(_C.cpu_features()),
        "isa": _C.isa(),
        "available_isas": list(_C.available_isas()),
        "threads": _C.threads(),
        "physical_cores": _C.physical_cores(),
    }


def set_threads(n: int | None) -> None:
    """Set the number of compute threads (``None`` or 0: one per physical core)."""
    n = 0 if n is None else int(n)
    if n < 0:
        raise ArgumentError(f"threads must be >= 0, got {n}")
    _C.set_threads(n)


def set_isa(name: str) -> None:
    """Force a kernel variant (``scalar``, ``avx2``, ``avx512``, ``neon``); the CPU must support it.

    The environment variable ``LLAMIX_ISA`` does the same at start-up.
    """
    _C.set_isa(name)
