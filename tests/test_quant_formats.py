"""Q4_0 / Q8_0 / F16 / BF16 bytes against the gguf package's reference quantizer, and round trips."""
from __future__ import annotations

import numpy as np
import pytest

import llamix
from llamix import QuantizedTensor

from conftest import require_peer


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


def _bf16_numpy(w: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bit patterns, written from the definition."""
    u = w.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return r


def test_bf16_round_to_nearest_even(isa):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    w[0, :3] = [1.00390625, 1.01171875, -3.0e38]  # exact ties between two bf16 values, and a large one
    q = llamix.quantize(w, "bf16")
    np.testing.assert_array_equal(q.data.view(np.uint16), _bf16_numpy(w))
    back = q.dequantize()
    np.testing.assert_array_equal(back.view(np.uint32), _bf16_numpy(w).astype(np.uint32) << 16)


def test_quantize_from_half_without_float32_copy(isa):
    w = np.random.default_rng(4).standard_normal((32, 128)).astype(np.float16)
    np.testing.assert_array_equal(llamix.quantize(w, "q4_0").data, llamix.quantize(w.astype(np.float32), "q4_0").data)
    bf = _bf16_numpy(w.astype(np.float32))
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
