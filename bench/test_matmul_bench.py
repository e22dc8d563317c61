"""pytest-benchmark timings of the matmul kernels (run: python -m pytest bench/ --benchmark-only).

Each benchmark first checks its answer against numpy float64 math on the dequantized weights,
then times llamix next to numpy float32 on the same shape. bench/matmul_table.py prints the full
table (bandwidth fraction, working sets beyond the LLC, ratios)."""
from __future__ import annotations

import numpy as np
import pytest

import llamix

ROWS, K = 4096, 4096


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((ROWS, K), dtype=np.float32)
    return w, rng.standard_normal((1, K), dtype=np.float32), rng.standard_normal((512, K), dtype=np.float32)


def _checked(qt, x):
    y = llamix.matmul(x, qt)
    ref = x.astype(np.float64) @ qt.dequantize().T.astype(np.float64)
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 2e-2  # 8-bit activation rounding
    return qt.prepared()


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "f16"])
def test_gemv(benchmark, data, qtype):
    w, x, _ = data
    p = _checked(llamix.quantize(w, qtype), x)
    out = np.empty((1, ROWS), np.float32)
    benchmark.extra_info["weight_bytes"] = llamix.quantize(w[:1], qtype).nbytes * ROWS
    benchmark(p.matmul, x, out)


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_gemm_512(benchmark, data, qtype):
    w, _, X = data
    p = _checked(llamix.quantize(w, qtype), X[:32])
    out = np.empty((512, ROWS), np.float32)
    benchmark.extra_info["gflop"] = 2 * 512 * ROWS * K / 1e9
    benchmark(p.matmul, X, out)


def test_numpy_f32_gemv(benchmark, data):
    w, x, _ = data
    benchmark(np.matmul, w, x[0])


def test_numpy_f32_gemm_512(benchmark, data):
    w, _, X = data
    benchmark(np.matmul, X, w.T)
