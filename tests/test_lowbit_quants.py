"""The types published files use besides llamix's own: Q4_1, IQ4_NL, Q2_K, Q3_K, IQ4_XS (issue #15),
and Q5_1 (Q5_K's fallback for rows that are not a multiple of 256: most of Q5_K_M files of models
with hidden sizes 896, 1536, 2560, ...; packed kernels as Q4_1's with a fifth bit).

Oracles: ``gguf.quants.dequantize`` (bit-exact dequantization of random blocks with valid and edge
scales), ``gguf.quants.quantize`` for the Q8_0 activations that Q4_1 / IQ4_NL multiply, Q8_K
activations written here from the format, float64 numpy dot products over the dequantized
weights, and the scalar reference for every SIMD variant and thread count (bit-identical: every
ISA forms the same exact integer sums per block and combines them in the same float order).
"""
from __future__ import annotations

import numpy as np
import pytest

import llamix
from llamix import QuantizedTensor, _C
from llamix.quant import qtype_info

from conftest import require_peer
from helpers import assert_packed_under_any_isa_runs_under_any, using_isa

# type -> (block elements, block bytes, byte offsets of the fp16 scales that must stay finite)
TYPES = {
    "q4_1": (32, 20, (0, 2)),
    "q5_1": (32, 24, (0, 2)),
    "iq4_nl": (32, 18, (0,)),
    "q2_k": (256, 84, (80, 82)),
    "q3_k": (256, 110, (108,)),
    "iq4_xs": (256, 136, (0,)),
}
EDGE_SCALES = np.array([0.0, -0.0, 6e-8, -6e-8, 65504.0, -65504.0, 1.0, -1.0], np.float16)


def random_blocks(qtype: str, rows: int, n_blocks: int, rng, edges: bool = False) -> np.ndarray:
    """Random block bytes: every quant, scale and mask bit random, the fp16 scales finite (modest,
    or with ``edges`` also zero, signed zero, subnormal and the largest finite values)."""
    _, nbytes, offsets = TYPES[qtype]
    data = rng.integers(0, 256, (rows, n_blocks, nbytes), dtype=np.uint8)
    for off in offsets:
        scale = rng.uniform(-0.1, 0.1, (rows, n_blocks)).astype(np.float16)
        if edges:
            pick = rng.random((rows, n_blocks)) < 0.3
            scale[pick] = rng.choice(EDGE_SCALES, int(pick.sum()))
        data[..., off:off + 2] = scale.view(np.uint8).reshape(rows, n_blocks, 2)
    if edges:  # all-zero and all-ones quant bytes in some blocks
        data[0, 0, max(offsets) + 2:] = 0xFF
        if n_blocks > 1:
            data[0, 1, max(offsets) + 2:] = 0
    return data.reshape(rows, n_blocks * nbytes)


def gguf_type(qtype: str):
    from gguf import GGMLQuantizationType

    return getattr(GGMLQuantizationType, qtype.upper())


@pytest.mark.parametrize("edges", [False, True], ids=["modest", "edges"])
@pytest.mark.parametrize("qtype", list(TYPES))
def test_dequantize_bit_exact_with_gguf(isa, qtype, edges):
    require_peer("gguf", "test")
    from gguf import quants

    bs = TYPES[qtype][0]
    rng = np.random.default_rng(len(qtype) + 7 * edges)
    data = random_blocks(qtype, 7, 512 // bs, rng, edges)
    ours = QuantizedTensor(data, qtype, (7, 512)).dequantize()
    ref = quants.dequantize(data, gguf_type(qtype)).astype(np.float32)
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))


def test_q4_1_bytes_from_gguf_quantizer_dequantize_exactly():
    """gguf.quants can write Q4_1: its bytes read back exactly as it reads them."""
    require_peer("gguf", "test")
    from gguf import quants

    w = np.random.default_rng(1).standard_normal((9, 320)).astype(np.float32)
    data = quants.quantize(w, gguf_type("q4_1"))
    ours = QuantizedTensor(data, "q4_1", w.shape).dequantize()
    np.testing.assert_array_equal(ours, quants.dequantize(data, gguf_type("q4_1")))
    assert np.sqrt(np.mean((ours - w) ** 2)) < 0.1  # 4 bits over a block's range


def q8_K_numpy(x: np.ndarray) -> np.ndarray:
    """Q8_K activations written from the format: d = amax/127 (float32), q = round half away from zero."""
    b = x.reshape(-1, 256).astype(np.float32)
    d = np.abs(b).max(-1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, 0).astype(np.float32)
    v = b * inv
    q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127)
    return (q.astype(np.float64) * d.astype(np.float64)).reshape(x.shape)


def q8_0_gguf(x: np.ndarray) -> np.ndarray:
    """Q8_0 activations as llama.cpp's reference quantizer (through gguf.quants) makes them."""
    from gguf import GGMLQuantizationType, quants

    q = quants.quantize(np.ascontiguousarray(x, np.float32), GGMLQuantizationType.Q8_0)
    return quants.dequantize(q, GGMLQuantizationType.Q8_0).astype(np.float64)


def oracle_and_bound(qtype: str, q: QuantizedTensor, x: np.ndarray):
    """float64 x_q @ w.T over the activations as the kernels quantize them and the dequantized
    weights, and the float32 rounding bound: integer sums are exact, so only the per-block float
    products and the running float32 sum round (~(blocks + 4) * 2^-23 relative to sum |w x|)."""
    from gguf import quants

    bs = TYPES[qtype][0]
    wd = quants.dequantize(q.data, gguf_type(qtype)).astype(np.float64)
    xd = np.stack([q8_K_numpy(r) for r in x]) if bs == 256 else q8_0_gguf(x)
    oracle = xd @ wd.T
    blocks = x.shape[1] // bs
    bound = (blocks + 4) * 2.0**-23 * (np.abs(xd) @ np.abs(wd).T) + 1e-30
    return oracle, bound


@pytest.mark.parametrize("qtype", list(TYPES))
@pytest.mark.parametrize("n,rows,k", [(1, 1, 256), (3, 17, 512), (9, 33, 768), (13, 16, 256)])
def test_matmul_matches_oracle_and_reference(isa, threads, qtype, n, rows, k):
    """Random blocks (every quant, scale and mask pattern) against random activations: each ISA
    and thread count equals the scalar reference bit for bit, and the float64 oracle within
    float32 rounding."""
    require_peer("gguf", "test")
    rng = np.random.default_rng(n * 100 + rows)
    q = QuantizedTensor.from_bytes(random_blocks(qtype, rows, k // TYPES[qtype][0], rng), qtype, (rows, k))
    x = rng.standard_normal((n, k)).astype(np.float32)
    y = llamix.matmul(x, q)
    with using_isa("scalar"):
        y_ref = llamix.matmul(x, QuantizedTensor.from_bytes(q.data, qtype, q.shape))
    np.testing.assert_array_equal(y, y_ref)
    oracle, bound = oracle_and_bound(qtype, q, x)
    assert np.all(np.abs(y - oracle) <= bound), np.max(np.abs(y - oracle) / bound)


@pytest.mark.parametrize("qtype", list(TYPES))
@pytest.mark.parametrize("rows", [1, 16, 17, 97])
def test_prepared_and_raw_paths_bit_for_bit(threads, qtype, rows):
    """Prepared weights (repacked groups where the type has them) and raw bytes, every variant,
    token counts around the tiles: all equal the scalar reference bit for bit."""
    rng = np.random.default_rng(rows + 3)
    k = 768
    data = random_blocks(qtype, rows, k // TYPES[qtype][0], rng)
    x = rng.standard_normal((70, k)).astype(np.float32)
    with using_isa("scalar"):
        expected = llamix.matmul(x, QuantizedTensor.from_bytes(data, qtype, (rows, k)))
    for name in _C.available_isas():
        with using_isa(name):
            p = QuantizedTensor.from_bytes(data, qtype, (rows, k)).prepared()
            for n in (1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 70):
                np.testing.assert_array_equal(p.matmul(x[:n]), expected[:n], err_msg=f"{name} n={n}")
                raw = _C.matmul(x[:n], data, qtype_info(qtype).gguf_id, k)
                np.testing.assert_array_equal(raw, expected[:n], err_msg=f"{name} raw n={n}")


@pytest.mark.parametrize("qtype", ["q2_k", "q3_k", "iq4_xs"])
def test_prepared_under_one_variant_runs_under_another(threads, qtype):
    """Packed groups are laid out for the variant chosen when the weight is prepared (Q3_K: AVX2
    and AVX-512 each have their own); under any other variant the weight still gives the scalar
    reference's bits (from its source bytes where the layouts differ), alone and in matmul_many."""
    rng = np.random.default_rng(21)
    k, rows = 512, 35
    data = random_blocks(qtype, rows, k // TYPES[qtype][0], rng)
    assert_packed_under_any_isa_runs_under_any(data, qtype, (rows, k), rng)


@pytest.mark.parametrize("n", [1, 9])
def test_matmul_many_mixes_the_new_types(isa, threads, n):
    """A Q3_K_M-style layer mixes types (Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL ...) on the same x: each
    result of matmul_many equals its own matmul bit for bit."""
    rng = np.random.default_rng(12)
    k = 512
    weights = [QuantizedTensor.from_bytes(random_blocks(t, rows, k // TYPES[t][0], rng), t, (rows, k))
               for rows, t in [(40, "q3_k"), (17, "q2_k"), (33, "iq4_xs"), (21, "q4_1"), (16, "iq4_nl"), (18, "q5_1")]]
    weights.append(llamix.quantize(rng.standard_normal((24, k)).astype(np.float32), "q4_k"))
    x = rng.standard_normal((n, k)).astype(np.float32)
    together = llamix.matmul_many(x, weights)
    for w, y in zip(weights, together):
        np.testing.assert_array_equal(y, llamix.matmul(x, w), err_msg=w.qtype)


def test_bad_shapes_are_refused_by_name():
    with pytest.raises(ValueError, match="block size 256"):
        QuantizedTensor(np.zeros((2, 84), np.uint8), "q2_k", (2, 300))
    with pytest.raises(ValueError, match="must be uint8 of shape"):
        QuantizedTensor(np.zeros((2, 100), np.uint8), "iq4_xs", (2, 256))
    with pytest.raises(ValueError, match="needs 40 bytes"):
        QuantizedTensor.from_bytes(np.zeros(39, np.uint8), "q4_1", (2, 32))
