"""y = x @ dequantize(W).T for every weight type, kernel variant, thread count and awkward shape."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import llamix
from llamix import _C

from helpers import using_isa


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


# Shapes around the kernels' tiles: 16-row groups (1, 15, 16, 17, a prime) and token tiles of 4
# (AVX2) / 8 (AVX-512) plus the decode path (1 token) and a long prefill (513).
ROWS = [1, 15, 16, 17, 97]
TOKENS = [1, 2, 7, 8, 9, 64, 513]


def _sentinel_matmul(x, qw):
    """matmul into an output pre-filled with NaN, so any element a kernel forgets shows up."""
    out = np.full((x.shape[0], qw.shape[0]), np.nan, np.float32)
    y = llamix.matmul(x, qw, out=out)
    assert y is out
    return out


@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q5_1", "q8_0"])
@pytest.mark.parametrize("n", TOKENS)
@pytest.mark.parametrize("rows", ROWS)
def test_block_matmul_within_activation_rounding(isa, threads, qtype, n, rows):
    rng = np.random.default_rng(1000 * n + rows)
    k = 256 if n < 513 else 96
    w = rng.standard_normal((rows, k)).astype(np.float32)
    qw = llamix.quantize(w, qtype)
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = _sentinel_matmul(x, qw)
    assert y.shape == (n, rows) and y.dtype == np.float32
    assert np.isfinite(y).all()
    err = np.abs(y - _oracle(x, qw))
    assert (err <= _act_rounding_bound(x, qw.dequantize())).all(), err.max()


def _with_isa(name, f):
    with using_isa(name):
        return f()


@pytest.mark.parametrize("qtype", ["q4_0", "q5_0", "q5_1", "q8_0"])
@pytest.mark.parametrize("n,rows,k", [(1, 33, 512), (5, 16, 64), (8, 47, 128), (13, 17, 96), (64, 31, 32)])
def test_block_matmul_bit_identical_to_scalar(isa, qtype, n, rows, k):
    """SIMD kernels compute the reference's sums exactly: same integer dots, same
    (d_w * d_x) * isum per block, added in block order; the activation bytes are the same."""
    rng = np.random.default_rng(n * rows)
    w = (rng.standard_normal((rows, k)) * rng.uniform(0.01, 10, (rows, 1))).astype(np.float32)
    x = (rng.standard_normal((n, k)) * 3).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero activation block (scale 0)
    qw = llamix.quantize(w, qtype)
    ref = _with_isa("scalar", lambda: llamix.matmul(x, llamix.QuantizedTensor(qw.data, qtype, qw.shape)))
    prepared = llamix.matmul(x, qw)
    raw = _C.matmul(x, qw.data, qw.info.gguf_id, k)  # the raw-bytes path packs per task
    np.testing.assert_array_equal(prepared, ref)
    np.testing.assert_array_equal(raw, ref)


def test_q5_0_is_the_q8_0_weight_of_the_same_values(isa):
    """Q5_0's values d * (q - 16) are Q8_0 values with the same scale: the packed Q5_0 kernels give
    the Q8_0 kernels' bits on those Q8_0 blocks (llama.cpp also multiplies Q5_0 against Q8_0
    activations), every fifth-bit pattern included."""
    rng = np.random.default_rng(7)
    rows, k = 37, 256
    q5 = llamix.quantize((rng.standard_normal((rows, k)) * 0.05).astype(np.float32), "q5_0")
    blocks = q5.data.reshape(rows, k // 32, 22)
    blocks[:3, :, 2:6] = rng.integers(0, 256, (3, k // 32, 4), dtype=np.uint8)   # any fifth bits
    d, qh, qs = blocks[..., :2], blocks[..., 2:6].copy().view("<u4")[..., 0], blocks[..., 6:]
    e = np.arange(32)
    nib = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int16)
    vals = nib | (((qh[..., None] >> e) & 1) << 4).astype(np.int16)
    q8 = np.concatenate([d, (vals - 16).astype(np.int8).view(np.uint8)], axis=-1)
    as_q8 = llamix.QuantizedTensor(np.ascontiguousarray(q8.reshape(rows, -1)), "q8_0", (rows, k))
    np.testing.assert_array_equal(as_q8.dequantize(), q5.dequantize())
    for n in (1, 3, 20):
        x = (rng.standard_normal((n, k)) * 2).astype(np.float32)
        np.testing.assert_array_equal(llamix.matmul(x, q5), llamix.matmul(x, as_q8))


def test_q8_0_weights_at_minus_128(isa):
    """-128 is a valid int8 in a Q8_0 file (our quantizer never writes it, other tools may): every
    kernel must still compute the exact integer dot."""
    rng = np.random.default_rng(5)
    rows, k = 19, 96
    blocks = np.zeros((rows, k // 32, 34), np.uint8)
    blocks[:, :, :2] = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    qs = rng.integers(-128, 128, (rows, k // 32, 32), dtype=np.int8)
    qs[:, :, ::3] = -128
    blocks[:, :, 2:] = qs.view(np.uint8)
    qw = llamix.QuantizedTensor(blocks.reshape(rows, -1), "q8_0", (rows, k))
    x = (rng.standard_normal((3, k)) * 2).astype(np.float32)
    x[:, 1::2] = -np.abs(x[:, 1::2])  # negative activations against -128
    ref = _with_isa("scalar", lambda: _C.matmul(x, qw.data, 8, k))
    np.testing.assert_array_equal(llamix.matmul(x, qw), ref)
    err = np.abs(ref - _oracle(x, qw))
    assert (err <= _act_rounding_bound(x, qw.dequantize())).all()


def test_prepared_weight_stays_valid_across_isas():
    rng = np.random.default_rng(3)
    qw = llamix.quantize(rng.standard_normal((40, 128)).astype(np.float32), "q4_0")
    x = rng.standard_normal((3, 128)).astype(np.float32)
    results = [_with_isa(name, lambda: qw.prepared().matmul(x)) for name in _C.available_isas()]
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    # the repacked copy holds 16-row groups: the source's bytes plus the padding of the last group
    assert qw.prepared().nbytes == 48 * qw.data.shape[1]


@pytest.mark.parametrize("qtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("n", [1, 7, 64])
@pytest.mark.parametrize("k", [1, 15, 37, 200])
def test_float_matmul(isa, threads, qtype, n, k):
    rng = np.random.default_rng(10 + n + k)
    rows = 37
    w = rng.standard_normal((rows, k)).astype(np.float32)
    qw = llamix.quantize(w, qtype)
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = _sentinel_matmul(x, qw)
    ref = _oracle(x, qw)
    # float32 accumulation over k terms (any order): |err| <= k * eps32 * sum|x w|
    bound = k * 2.0 ** -23 * (np.abs(x).astype(np.float64) @ np.abs(qw.dequantize()).T.astype(np.float64)) + 1e-6
    assert (np.abs(y - ref) <= bound).all()


def test_float_arrays_directly():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 64)).astype(np.float16)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(llamix.matmul(x, w), x @ w.astype(np.float32).T, rtol=1e-5, atol=1e-5)
    y1 = llamix.matmul(x[0], w)
    assert y1.shape == (5,)
    np.testing.assert_array_equal(y1, llamix.matmul(x[:1], w)[0])


@pytest.mark.parametrize("n", [1, 9, 64])
def test_results_identical_across_thread_counts(isa, n):
    rng = np.random.default_rng(7)
    for qtype in ["q4_0", "q8_0", "f16"]:
        qw = llamix.quantize(rng.standard_normal((301, 512)).astype(np.float32), qtype)
        x = rng.standard_normal((n, 512)).astype(np.float32)
        outs = []
        for t in [1, 2, 3]:
            llamix.set_threads(t)
            outs.append(llamix.matmul(x, qw))
        llamix.set_threads(0)
        for y in outs[1:]:
            np.testing.assert_array_equal(y, outs[0])


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "f16", "bf16", "f32"])
def test_nan_and_inf_propagate(isa, qtype):
    """Non-finite inputs give non-finite outputs exactly where float64 math on the dequantized
    weights does (a NaN/inf activation poisons its whole output row; a NaN weight block its row)."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((19, 64)).astype(np.float32)
    w[3, 40] = np.nan
    qw = llamix.quantize(w, qtype)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    x[0, 3] = np.nan
    x[2, 33] = np.inf
    y = _sentinel_matmul(x, qw)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = _oracle(x, qw)
    np.testing.assert_array_equal(np.isfinite(y), np.isfinite(ref))
    assert np.isfinite(y[1]).sum() == 18 and np.isfinite(y[3]).sum() == 18


def _q4(rows=4, k=64):
    return llamix.quantize(np.ones((rows, k), np.float32), "q4_0")


@pytest.mark.parametrize("bad", [
    lambda qw: llamix.matmul(np.zeros((2, 63), np.float32), qw),                    # k mismatch
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float64), qw),                    # x dtype
    lambda qw: llamix.matmul(np.zeros((2, 2, 64), np.float32), qw),                 # x rank
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float32), np.zeros((4, 64), np.float64)),  # w dtype
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float32), np.zeros((64, 8), np.float32).T),  # w not contiguous
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float32), qw, out=np.zeros((2, 5), np.float32)),  # out shape
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float32), qw, out=np.zeros((2, 4), np.float64)),  # out dtype
    lambda qw: llamix.matmul(np.zeros((2, 64), np.float32), qw, out=np.zeros((4, 2), np.float32).T),  # out layout
    lambda qw: qw.prepared().matmul(np.zeros((64, 2), np.float32).T),              # x not contiguous (C level)
    lambda qw: _C.matmul(np.zeros((2, 33), np.float32), np.zeros((4, 18), np.uint8), 2, 33),  # k % 32
    lambda qw: _C.matmul(np.zeros((2, 64), np.float32), np.zeros((4, 35), np.uint8), 2, 64),  # row bytes
    lambda qw: _C.matmul(np.zeros((2, 64), np.float32), np.zeros((4, 36), np.int8), 2, 64),   # bytes dtype
    lambda qw: _C.matmul(np.zeros((2, 64), np.float32), np.zeros((4, 36), np.uint8), 99, 64),  # unknown type
    lambda qw: _C.PreparedWeight(np.zeros((4, 18), np.uint8), 2, 33),              # k % 32
    lambda qw: _C.PreparedWeight(np.zeros((4, 36), np.uint8)[:, ::2], 2, 32),      # not contiguous
    lambda qw: _C.PreparedWeight(np.zeros((4, 36), np.uint8), 8, 64),              # Q8_0 needs 68 bytes
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad(_q4())


def test_out_must_not_overlap_x():
    buf = np.zeros((2, 64), np.float32)
    qw = _q4(rows=64)
    with pytest.raises(ValueError):
        _C.matmul(buf, qw.data, 2, 64, buf)


def test_empty_inputs():
    qw = _q4()
    assert llamix.matmul(np.zeros((0, 64), np.float32), qw).shape == (0, 4)


@pytest.mark.parametrize("n", [1, 5, 40])
def test_matmul_many_equals_separate_calls(isa, threads, n):
    rng = np.random.default_rng(n)
    k = 128
    ws = [llamix.quantize(rng.standard_normal((rows, k)).astype(np.float32), qt)
          for rows, qt in [(48, "q4_0"), (17, "q8_0"), (16, "f16"), (33, "q4_0")]]
    x = rng.standard_normal((n, k)).astype(np.float32)
    outs = [np.full((n, w.shape[0]), np.nan, np.float32) for w in ws]
    got = llamix.matmul_many(x, ws, outs)
    for w, y, out in zip(ws, got, outs):
        assert y is out
        np.testing.assert_array_equal(y, llamix.matmul(x, w))


def test_matmul_many_bad_input():
    a = llamix.quantize(np.ones((4, 64), np.float32), "q4_0")
    b = llamix.quantize(np.ones((4, 32), np.float32), "q4_0")
    x = np.ones((2, 64), np.float32)
    for bad in [lambda: llamix.matmul_many(x, [a, b]),                     # different k
                lambda: llamix.matmul_many(x, []),                         # nothing to do
                lambda: llamix.matmul_many(x, [a, np.ones((4, 64))]),      # not quantized
                lambda: llamix.matmul_many(x, [a], [np.ones((2, 5), np.float32)]),  # out shape
                lambda: llamix.matmul_many(x, [a, a], [np.ones((2, 4), np.float32)])]:  # outs count
        with pytest.raises(ValueError):
            bad()


# Run in a fresh process: in a long test session the allocator reuses heap memory that earlier
# tests already had backed by huge pages, so the growth counted here would depend on test order.
HUGE_PAGE_PROBE = """
import gc, numpy as np, llamix

def anon_huge_kb():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("AnonHugePages:"))

weights = [llamix.quantize(np.ones((1024, 4096), np.float32), "q4_0") for _ in range(9)]  # 2.25 MiB each
gc.collect()
gc.disable()  # nothing else may free huge pages while we count
before = anon_huge_kb()
prepared = [w.prepared() for w in weights]  # each repacked copy spans at least one whole huge page
print(anon_huge_kb() - before)
"""


def test_prepared_weights_ask_for_huge_pages():
    """Decode streams the repacked weights once per token; on 4 KiB pages every 4 KiB costs a TLB
    miss, so buffers of 2 MiB and more are madvised for transparent huge pages (as numpy does)."""
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
        open("/proc/self/smaps_rollup").close()
    except OSError:
        pytest.skip("no transparent huge pages on this OS")
    if "[never]" in mode:
        pytest.skip("transparent huge pages are disabled on this machine")
    r = subprocess.run([sys.executable, "-c", HUGE_PAGE_PROBE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    grown = int(r.stdout.split()[-1])
    assert grown >= 8 * 2048, f"prepared weights got {grown} KiB of huge pages, expected >= {8 * 2048}"
