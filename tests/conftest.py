"""Shared fixtures: every kernel variant this CPU runs, thread counts, the test assets, peers."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

# attn_precision="auto" means f32 here: the suite's float64 and peer comparisons have float32
# tolerances; the bf16 attention has its own tests (test_attention_amx.py) with its own bound.
os.environ.setdefault("LLAMIX_ATTN_PRECISION", "f32")

from llamix import _C  # noqa: E402

from helpers import skip_or_fail, using_isa, using_threads

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"


@pytest.fixture(params=list(_C.available_isas()))
def isa(request):
    """Run the test once per kernel variant the CPU supports (scalar always included)."""
    with using_isa(request.param):
        yield request.param


@pytest.fixture(params=[1, max(2, _C.physical_cores())], ids=lambda n: f"threads{n}")
def threads(request):
    with using_threads(request.param):
        yield request.param


@pytest.fixture(scope="session")
def assets() -> Path:
    if not ASSETS.is_dir():
        pytest.skip(f"test assets not found at {ASSETS} (they live in ../shared/assets beside the checkout)")
    return ASSETS


@pytest.fixture(scope="session")
def s260_bin(assets) -> Path:
    """stories260K as llama2.c wrote it (shared/assets/stories260K): the real tiny test model."""
    return assets / "stories260K" / "stories260K.bin"


def require_peer(module: str, extra: str = "peers"):
    """Import a peer package, or skip with a clear reason (fail in CI, where peers must run).
    Not llama_cpp: it runs only in child processes (llama_cpp_peer.require() and its calls)."""
    if module == "llama_cpp":
        raise ValueError("llama.cpp runs only in a child process: use llama_cpp_peer.require() and its functions")
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means the peer is unusable
        skip_or_fail(f"peer '{module}' is not importable ({e}); install llamix[{extra}] (see README)")
