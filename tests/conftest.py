"""Shared fixtures: every kernel variant this CPU runs, thread counts, the test assets, peers."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

import llamix
from llamix import _C

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture(params=list(_C.available_isas()))
def isa(request):
    """Run the test once per kernel variant the CPU supports (scalar always included)."""
    before = _C.isa()
    llamix.set_isa(request.param)
    yield request.param
    llamix.set_isa(before)


@pytest.fixture(params=[1, max(2, _C.physical_cores())], ids=lambda n: f"threads{n}")
def threads(request):
    before = _C.threads()
    llamix.set_threads(request.param)
    yield request.param
    llamix.set_threads(before)


@pytest.fixture(scope="session")
def assets() -> Path:
    if not ASSETS.is_dir():
        pytest.skip(f"test assets not found at {ASSETS} (they live in ../shared/assets beside the checkout)")
    return ASSETS


def require_peer(module: str, extra: str = "peers"):
    """Import a peer package, or skip with a clear reason (fail in CI, where peers must run)."""
    try:
        return importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure means the peer is unusable
        msg = f"peer '{module}' is not importable ({e}); install llamix[{extra}] (see README)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def _llama_cpp_cpu_buffers_only() -> None:
    """ggml's AMX path crashes on some Xeons: llama.cpp models loaded in this process use CPU
    buffers only (``use_extra_bufts = False``), as tests/llamacpp_peer.py's child process does."""
    try:
        from llama_cpp import llama_cpp as low
    except Exception:  # noqa: BLE001 - no usable peer: the peer tests skip on their own
        return
    default = low.llama_model_default_params
    if getattr(default, "cpu_buffers_only", False):
        return

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    params.cpu_buffers_only = True
    low.llama_model_default_params = params


_llama_cpp_cpu_buffers_only()
