"""y = x @ dequantize(W).T for every weight type, kernel variant, thread count and awkward shape."""
from __future__ import annotations

import numpy as np
import pytest

import llamix


def _oracle(x: np.ndarray, qw) -> np.ndarray:
    """float64 math on the dequantized weights and the exact input."""
    w = qw.dequantize().astype(np.float64) if hasattr(qw, "dequantize") else qw.astype(np.float64)
    return x.astype(np.float64) @ w.T


def _act_rounding_bound(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Error bound from quantizing activations to Q8_0: each element moves by at most half a step
    (amax_block / 127 / 2) plus the fp16 rounding of the block scale (2^-11 relative), so
    |err| <= sum_blocks (amax/254 + amax*2^-11) * sum|w_block|; plus float32 accumulation."""
    n, k = x.shape
    xb = np.abs(x.reshape(n, k // 32, 32)).max(axis=2)                   # (n, blocks)
    step = xb * (1 / 254 + 2.0 ** -11) * 1.01
    wb = np.abs(w.reshape(w.shape[0], k // 32, 32)).sum(axis=2)           # (rows, blocks)
    return step @ wb.T + 1e-5 * (np.abs(x) @ np.abs(w).T) + 1e-6


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
@pytest.mark.parametrize("n", [1, 2, 7, 64, 513])
def test_block_matmul_within_activation_rounding(isa, threads, qtype, n):
    rng = np.random.default_rng(n)
    rows, k = 67, 256 if n < 513 else 96
    w = rng.standard_normal((rows, k)).astype(np.float32)
    qw = llamix.quantize(w, qtype)
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = llamix.matmul(x, qw)
    assert y.shape == (n, rows) and y.dtype == np.float32
    wd = qw.dequantize()
    err = np.abs(y - _oracle(x, qw))
    assert (err <= _act_rounding_bound(x, wd)).all(), err.max()


@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_float_matmul(isa, threads, qtype, n):
    rng = np.random.default_rng(10 + n)
    rows, k = 37, 200
    w = rng.standard_normal((rows, k)).astype(np.float32)
    qw = llamix.quantize(w, qtype)
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = llamix.matmul(x, qw)
    ref = _oracle(x, qw)
    # float32 accumulation over k terms: |err| <= k * eps32 * sum|x w|
    bound = k * 2.0 ** -23 * (np.abs(x).astype(np.float64) @ np.abs(qw.dequantize()).T.astype(np.float64)) + 1e-6
    assert (np.abs(y - ref) <= bound).all()


def test_float_arrays_directly():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 64)).astype(np.float16)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(llamix.matmul(x, w), x @ w.astype(np.float32).T, rtol=1e-5, atol=1e-5)


def test_results_identical_across_thread_counts(isa):
    rng = np.random.default_rng(7)
    qw = llamix.quantize(rng.standard_normal((301, 512)).astype(np.float32), "q4_0")
    x = rng.standard_normal((9, 512)).astype(np.float32)
    llamix.set_threads(1)
    y1 = llamix.matmul(x, qw)
    llamix.set_threads(2)
    y2 = llamix.matmul(x, qw)
    llamix.set_threads(0)
    np.testing.assert_array_equal(y1, y2)


def test_nan_and_inf_propagate(isa):
    rng = np.random.default_rng(8)
    qw = llamix.quantize(rng.standard_normal((16, 64)).astype(np.float32), "q8_0")
    x = rng.standard_normal((2, 64)).astype(np.float32)
    x[0, 3] = np.nan
    y = llamix.matmul(x, qw)
    assert not np.isfinite(llamix.matmul(x, qw.dequantize())[0]).any()
    assert not np.isfinite(y[0]).any()  # a NaN activation poisons its whole output row
    assert np.isfinite(y[1]).all()


@pytest.mark.parametrize("bad", [
    lambda qw: llamix.matmul(np.zeros((2, 63), np.float32), qw),
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float64), qw),
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float32), np.zeros((4, 64), np.float64)),
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float32), np.zeros((64, 8), np.float32).T),
])
def test_bad_shapes_raise(bad):
    qw = llamix.quantize(np.ones((4, 64), np.float32), "q4_0")
    with pytest.raises(ValueError):
        bad(qw)
