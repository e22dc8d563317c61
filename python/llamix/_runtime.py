"""The compiled kernels (``_C``, imported here and only here, so the layers above see one
module), CPU features, the active kernel variant, and the thread pool."""
from __future__ import annotations

import ctypes
import os
import sys
import threading

from . import _C
from .errors import ArgumentError

# a bad LLAMIX_ISA / LLAMIX_THREADS (read by the kernels on first use) raises ArgumentError
_C.set_setting_error(ArgumentError)


def cpu_info() -> dict:
    """Report what the kernels run on.

    Returns a dict with ``features`` (CPU features usable by this OS), ``isa`` (the active kernel
    variant), ``available_isas`` (best first), ``threads`` (pool size), ``physical_cores`` and
    ``amx`` (whether AMX tiles are usable, see :func:`attn_precision`).
    """
    return {
        "features": list(_C.cpu_features()),
        "isa": _C.isa(),
        "available_isas": list(_C.available_isas()),
        "threads": _C.threads(),
        "physical_cores": _C.physical_cores(),
        "amx": bool(_C.amx_usable()),
    }


def max_threads() -> int:
    """The most compute threads set_threads accepts: 8 per CPU this process may use."""
    return _C.max_threads()


ATTN_PRECISIONS = ("auto", "f32", "bf16")


def attn_precision(value: str, name: str = "attn_precision") -> str:
    """The attention's arithmetic for ``value``: ``"f32"`` (float32 products), ``"bf16"`` (bf16
    inputs, float32 sums in the order of AMX's TDPBF16PS: on AMX tiles where usable, else its exact
    emulation, the same bits), or ``"auto"``: ``"bf16"`` where this process may use AMX tiles (the
    CPU has AMX-BF16, ``LLAMIX_AMX`` is not 0 and Linux granted the tile permission), else ``"f32"``;
    the environment variable ``LLAMIX_ATTN_PRECISION=f32`` (or ``bf16``) decides ``"auto"`` instead
    (the test suite sets f32: its float64 and peer comparisons have float32 tolerances).
    Raises ArgumentError for another value."""
    if value not in ATTN_PRECISIONS:
        raise ArgumentError(f"{name} must be one of {', '.join(ATTN_PRECISIONS)}, got {value!r}")
    if value != "auto":
        return value
    env = os.environ.get("LLAMIX_ATTN_PRECISION", "")
    if env:
        if env not in ATTN_PRECISIONS[1:]:
            raise ArgumentError(f"LLAMIX_ATTN_PRECISION={env}: expected f32 or bf16 (what attn_precision='auto' means)")
        return env
    return "bf16" if _C.amx_usable() else "f32"


def set_threads(n: int | None) -> None:
    """Set the number of compute threads (``None`` or 0: one per physical core).

    Raises ArgumentError below 0 or above 8 per CPU this process may use (spinning workers beyond
    the CPUs only take turns)."""
    n = 0 if n is None else int(n)
    if n < 0:
        raise ArgumentError(f"threads must be >= 0, got {n}")
    if n > max_threads():
        raise ArgumentError(f"threads: at most {max_threads()} (8 per CPU this process may use), got {n}")
    _C.set_threads(n)


def set_isa(name: str) -> None:
    """Force a kernel variant (``scalar``, ``avx2``, ``avx512``, ``neon``); the CPU must support it.

    The environment variable ``LLAMIX_ISA`` does the same at start-up.
    """
    _C.set_isa(name)


# OpenBLAS's shutdown entry points in this process, found from /proc/self/maps; rescanned when the
# set of imported modules changes (scipy brings its own OpenBLAS).
_openblas = {"modules": -1, "shutdown": []}


def _openblas_shutdowns() -> list:
    if _openblas["modules"] != len(sys.modules):
        paths = set()
        try:
            with open("/proc/self/maps") as f:
                for line in f:
                    path = line.rstrip("\n").split(maxsplit=5)[-1]
                    name = path.rsplit("/", 1)[-1].lower()
                    if path.startswith("/") and "openblas" in name and ".so" in name:
                        paths.add(path)
        except OSError:  # not Linux: nothing to do
            pass
        found = []
        for path in sorted(paths):
            try:
                found.append(ctypes.CDLL(path).blas_thread_shutdown_)
            except (OSError, AttributeError):
                continue
        _openblas.update(modules=len(sys.modules), shutdown=found)
    return _openblas["shutdown"]


def idle_blas_threads() -> None:
    """Stop OpenBLAS's worker threads (numpy's, scipy's) before llamix's kernels run.

    After a multi-threaded BLAS call OpenBLAS's workers keep spinning for a while (about 0.3 s)
    and take a core from llamix's threads: on 2 cores a matrix-vector product right after a numpy
    matvec ran at half speed. OpenBLAS restarts its workers by itself on its next threaded call
    (the same path it takes after a fork), so this costs a BLAS user some 0.1 ms at most. Done
    only while this is the process's one Python thread: another thread could be inside a BLAS
    call. Does nothing where no OpenBLAS is loaded. Environment variables are left alone.
    """
    if threading.active_count() != 1:
        return
    for shutdown in _openblas_shutdowns():
        shutdown()
