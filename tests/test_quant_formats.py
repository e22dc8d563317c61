"""Q4_0 / Q8_0 / F16 / BF16 bytes against the gguf package's reference quantizer, and round trips."""
from __future__ import annotations

import numpy as np
import pytest

import llamix
from llamix import QuantizedTensor

from conftest import require_peer
from helpers import f32_to_bf16


def _rows(kind: str, rng: np.random.Generator, rows: int = 16, k: int = 256) -> np.ndarray:
    if kind == "gauss":
        return rng.standard_normal((rows, k)).astype(np.float32)
    if kind == "zeros":
        return np.zeros((rows, k), np.float32)
    if kind == "huge_one":
        w = rng.standard_normal((rows, k)).astype(np.float32) * 1e-3
        w[:, ::37] = 3e4
        return w
    if kind == "negative_max":
        w = rng.uniform(-1, 1, (rows, k)).astype(np.float32)
        w[:, 5::32] = -7.0
        return w
    if kind == "tiny_scale":  # scales below fp16's smallest subnormal / normal
        return (rng.standard_normal((rows, k)) * 1e-9).astype(np.float32)
    if kind == "subnormal_scale":
        return (rng.standard_normal((rows, k)) * 1e-5).astype(np.float32)
    if kind == "ties":  # exact half-way points of the rounding rules
        base = rng.integers(-16, 16, (rows, k)).astype(np.float32) / 2
        base[:, ::32] = 8.0
        return base
    raise AssertionError(kind)


KINDS = ["gauss", "zeros", "huge_one", "negative_max", "tiny_scale", "subnormal_scale", "ties"]


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
@pytest.mark.parametrize("kind", KINDS)
def test_bytes_equal_gguf_reference(isa, qtype, kind):
    gguf = require_peer("gguf", "test")
    from gguf import GGMLQuantizationType, quants

    w = _rows(kind, np.random.default_rng(1))
    ours = llamix.quantize(w, qtype)
    ref = quants.quantize(w, getattr(GGMLQuantizationType, qtype.upper()))
    assert ours.data.shape == ref.shape
    np.testing.assert_array_equal(ours.data, ref)
    np.testing.assert_array_equal(ours.dequantize(), quants.dequantize(ref, getattr(GGMLQuantizationType, qtype.upper())))


@pytest.mark.parametrize("qtype,numpy_dtype", [("f16", np.float16), ("f32", np.float32)])
def test_float_types_match_numpy(isa, qtype, numpy_dtype):
    w = np.random.default_rng(2).standard_normal((8, 96)).astype(np.float32) * 1000
    w[0, :4] = [np.inf, -np.inf, 1e-8, 7e4]
    q = llamix.quantize(w, qtype)
    np.testing.assert_array_equal(q.data.view(numpy_dtype), w.astype(numpy_dtype))
    np.testing.assert_array_equal(q.dequantize(), w.astype(numpy_dtype).astype(np.float32))


def test_bf16_round_to_nearest_even(isa):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    w[0, :3] = [1.00390625, 1.01171875, -3.0e38]  # exact ties between two bf16 values, and a large one
    q = llamix.quantize(w, "bf16")
    np.testing.assert_array_equal(q.data.view(np.uint16), f32_to_bf16(w))
    back = q.dequantize()
    np.testing.assert_array_equal(back.view(np.uint32), f32_to_bf16(w).astype(np.uint32) << 16)


def test_quantize_from_half_without_float32_copy(isa):
    w = np.random.default_rng(4).standard_normal((32, 128)).astype(np.float16)
    np.testing.assert_array_equal(llamix.quantize(w, "q4_0").data, llamix.quantize(w.astype(np.float32), "q4_0").data)
    bf = f32_to_bf16(w.astype(np.float32))
    from_bf = llamix.quantize(bf, "q8_0", src="bf16")
    np.testing.assert_array_equal(from_bf.data, llamix.quantize((bf.astype(np.uint32) << 16).view(np.float32), "q8_0").data)


def test_from_bytes_wraps_without_copy():
    w = np.random.default_rng(5).standard_normal((3, 64)).astype(np.float32)
    q = llamix.quantize(w, "q4_0")
    buf = q.data.tobytes()
    q2 = QuantizedTensor.from_bytes(buf, "q4_0", (3, 64))
    assert q2.shape == (3, 64) and q2.qtype == "q4_0"
    np.testing.assert_array_equal(q2.dequantize(), q.dequantize())
    arr = q.data.reshape(-1)
    q3 = QuantizedTensor.from_bytes(arr, "q4_0", (3, 64))
    assert np.shares_memory(q3.data, q.data)


@pytest.mark.parametrize("bad", [
    lambda: llamix.quantize(np.zeros((2, 33), np.float32), "q4_0"),
    lambda: llamix.quantize(np.zeros((2, 32), np.float64), "q4_0"),
    lambda: llamix.quantize(np.zeros((2, 32), np.float32), "q3_x"),
    lambda: QuantizedTensor.from_bytes(b"\0" * 17, "q4_0", (1, 32)),
])
def test_bad_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        bad()


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_nan_poisons_its_block_like_gguf(isa, qtype):
    require_peer("gguf", "test")
    from gguf import GGMLQuantizationType, quants

    w = np.random.default_rng(9).standard_normal((2, 64)).astype(np.float32)
    w[0, 40] = np.nan
    ours = llamix.quantize(w, qtype)
    ref = quants.quantize(w, getattr(GGMLQuantizationType, qtype.upper()))
    np.testing.assert_array_equal(ours.data[:, :2], ref[:, :2])  # first block's scale
    assert np.isnan(ours.dequantize()[0, 32:]).all() and np.isfinite(ours.dequantize()[0, :32]).all()


def _adversarial(rng: np.random.Generator, rows: int = 24, k: int = 160) -> np.ndarray:
    """Rows that stress every branch of the quantizers, one special per 32-element block."""
    w = rng.standard_normal((rows, k)).astype(np.float32)
    w[0] = 0.0
    w[1, :32] = -0.0                                   # negative zeros only: the scale must be +0
    w[1, 32:64] = 0.0
    w[1, 40] = -0.0
    w[2, 5] = np.nan                                   # NaN (the block goes to the reference)
    w[2, 70] = -np.nan
    w[3, 7] = np.inf                                   # inf: scale inf, other elements give inf * 0
    w[3, 40] = -np.inf
    w[4, :32] = 1e-40                                  # subnormal amax: 1/d overflows to inf
    w[4, 32:64] = -3e38                                # near float max
    w[5, :32] = np.float32(0.5) * np.arange(-16, 16)   # exact .5 ties after scaling
    w[6, ::7] = -w[6, ::7].max() * 1.0                 # equal magnitudes, first one wins
    w[7, 3], w[7, 9] = 2.0, -2.0                       # +max first
    w[8, 3], w[8, 9] = -2.0, 2.0                       # -max first
    w[9] = rng.standard_normal(k).astype(np.float32) * 1e-6
    w[10, :32] = np.float32(1e-40) * np.sign(rng.standard_normal(32))  # x * id = +-inf, mixed signs
    w[10, 32:64] = np.float32(3e-39) * rng.standard_normal(32)
    return w


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "f16", "bf16"])
def test_simd_bytes_equal_scalar_reference(isa, qtype):
    """Every variant's quantizer writes the reference's bytes, NaN payloads and signed zeros included."""
    w = _adversarial(np.random.default_rng(11))
    ours = llamix.quantize(w, qtype)
    llamix.set_isa("scalar")
    ref = llamix.quantize(w, qtype)
    llamix.set_isa(isa)
    np.testing.assert_array_equal(ours.data, ref.data)
    np.testing.assert_array_equal(ours.dequantize().view(np.uint32), ref.dequantize().view(np.uint32))


def test_adversarial_bytes_equal_gguf_reference(isa):
    require_peer("gguf", "test")
    from gguf import GGMLQuantizationType, quants

    w = _adversarial(np.random.default_rng(12))[:, :]
    finite = np.isfinite(w).all(axis=1)  # gguf's numpy casts NaN to int with a warning; compare finite rows
    for qtype in ["q4_0", "q8_0"]:
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            ref = quants.quantize(w[finite], getattr(GGMLQuantizationType, qtype.upper()))
        np.testing.assert_array_equal(llamix.quantize(w[finite], qtype).data, ref)


@pytest.mark.parametrize("k", [1, 7, 8, 9, 15, 16, 17, 31, 33, 100])
def test_conversions_tails(isa, k):
    """Element-wise conversions at every tail length; specials included; no write past the row."""
    rng = np.random.default_rng(k)
    w = (rng.standard_normal((3, k)) * 1e3).astype(np.float32)
    w.flat[:4] = [np.nan, -np.inf, 65519.0, 1e-8][: w.size]
    np.testing.assert_array_equal(llamix.quantize(w, "f16").data.view(np.float16), w.astype(np.float16))
    np.testing.assert_array_equal(llamix.quantize(w, "bf16").data.view(np.uint16)[np.isfinite(w)],
                                  f32_to_bf16(w)[np.isfinite(w)])
    h = w.astype(np.float16)
    np.testing.assert_array_equal(llamix.quantize(h, "f32").data.view(np.float32), h.astype(np.float32))
    bf = f32_to_bf16(np.nan_to_num(w))
    back = llamix.QuantizedTensor(bf.view(np.uint8).reshape(3, -1), "bf16", (3, k)).dequantize()
    np.testing.assert_array_equal(back.view(np.uint32), bf.astype(np.uint32) << 16)
