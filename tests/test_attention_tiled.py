"""The tiled (flash) causal attention over a KV cache, as the forward pass runs it
(drivers/attention.cpp + the attn_tile_* kernels), for every kernel variant and thread count,
against a float64 numpy attention written from the formula: softmax(q k^T * scale) v with the
causal mask, an optional sliding window and grouped-query heads."""
from __future__ import annotations

import numpy as np
import pytest

from llamix import _C

from helpers import using_threads

gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType as GT  # noqa: E402


def oracle(q, k, v, pos, n_kv_heads, window, scale):
    """float64 causal grouped-query attention: q (n, n_heads, hd), k/v (pos + n, n_kv_heads * hd)."""
    n, n_heads, hd = q.shape
    group = n_heads // n_kv_heads
    kk = k.astype(np.float64).reshape(-1, n_kv_heads, hd)
    vv = v.astype(np.float64).reshape(-1, n_kv_heads, hd)
    out = np.empty((n, n_heads, hd))
    for t in range(n):
        p = pos + t
        first = max(0, p + 1 - window) if window else 0
        for h in range(n_heads):
            g = h // group
            s = kk[first:p + 1, g] @ q[t, h].astype(np.float64) * scale
            w = np.exp(s - s.max())
            out[t, h] = (w / w.sum()) @ vv[first:p + 1, g]
    return out


def make(n, pos, n_heads, n_kv_heads, hd, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, n_heads, hd)).astype(np.float32)
    k = rng.standard_normal((pos + n, n_kv_heads * hd)).astype(np.float32)
    v = rng.standard_normal((pos + n, n_kv_heads * hd)).astype(np.float32)
    return q, k, v


def stored(x, t):
    """What a cache of type t holds for x (float32 rows): gguf's reference quantizers."""
    if t == "f32":
        return x
    if t == "f16":
        return x.astype(np.float16).astype(np.float32)
    qt = {"q8_0": GT.Q8_0, "q4_0": GT.Q4_0}[t]
    return gguf_quants.dequantize(gguf_quants.quantize(x, qt), qt).astype(np.float32)


# (n query tokens, depth pos): prefill from empty, prefill on top of a cache, decoding at depths
# around the tile (64) and chunk (512) sizes up to 8192 keys
SHAPES = [(1, 0), (5, 0), (70, 0), (1, 63), (1, 64), (3, 511), (200, 313), (1, 1030), (64, 2000), (1, 4095),
          (1, 8191), (16, 8176)]


@pytest.mark.parametrize("n,pos", SHAPES)
@pytest.mark.parametrize("window", [0, 100])
def test_matches_float64(isa, threads, n, pos, window):
    n_heads, n_kv, hd = 8, 2, 64
    q, k, v = make(n, pos, n_heads, n_kv, hd, seed=n * 7 + pos)
    scale = 1.0 / np.sqrt(hd)
    out = _C.attention_causal(q, k, v, pos, n_kv, window, scale)
    ref = oracle(q, k, v, pos, n_kv, window, scale)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("group", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("hd", [16, 40, 64, 128, 256])
def test_gqa_ratios_and_head_sizes(isa, group, hd):
    n_kv = 2
    n, pos = 37, 150
    q, k, v = make(n, pos, n_kv * group, n_kv, hd, seed=group * 100 + hd)
    out = _C.attention_causal(q, k, v, pos, n_kv, 0, 0.1)
    np.testing.assert_allclose(out, oracle(q, k, v, pos, n_kv, 0, 0.1), rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("n,pos", [(1, 3000), (9, 1500), (300, 700)])
def test_bit_identical_across_thread_counts(isa, n, pos):
    q, k, v = make(n, pos, 8, 2, 64, seed=3)
    outs = []
    for t in (1, 2, 3):
        with using_threads(t):
            outs.append(_C.attention_causal(q, k, v, pos, 2, 0, 0.125))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("window", [0, 200])
@pytest.mark.parametrize("kv_type", ["f32", "f16"])
def test_token_result_does_not_depend_on_its_batch(isa, window, kv_type):
    """A token's output is the same bits whether it is decoded alone or prefilled in a batch (the
    tiles and chunks sit at absolute key positions; an f16 cache is read in place for a decoding
    step's few rows and widened first for a batch's many)."""
    n, pos = 150, 900
    q, k, v = make(n, pos, 8, 2, 64, seed=5)
    batch = _C.attention_causal(q, k, v, pos, 2, window, 0.125, kv_type, kv_type)
    for t in (0, 1, 63, 100, 149):
        one = _C.attention_causal(q[t:t + 1].copy(), k[:pos + t + 1].copy(), v[:pos + t + 1].copy(), pos + t, 2,
                                  window, 0.125, kv_type, kv_type)
        assert np.array_equal(one[0], batch[t]), t


@pytest.mark.parametrize("type_k,type_v", [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("q8_0", "f16"),
                                           ("f32", "q4_0")])
@pytest.mark.parametrize("n,pos", [(1, 700), (40, 100)])
def test_cache_types_read_what_they_store(isa, type_k, type_v, n, pos):
    """The kernel computes the attention of the values the cache holds (gguf's reference
    quantization of the rows): the float32 bound of the float64 oracle on those values."""
    q, k, v = make(n, pos, 8, 2, 64, seed=11)
    out = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v)
    ref = oracle(q, stored(k, type_k), stored(v, type_v), pos, 2, 0, 0.125)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=5e-5)


def test_bad_arguments_raise():
    q, k, v = make(2, 3, 4, 2, 16)
    with pytest.raises(ValueError, match="KV cache type"):
        _C.attention_causal(q, k, v, 3, 2, 0, 1.0, "q5_0", "f32")
    with pytest.raises(ValueError, match="head_dim % 32"):
        _C.attention_causal(q, k, v, 3, 2, 0, 1.0, "q8_0", "f32")
    with pytest.raises(ValueError, match="pos"):
        _C.attention_causal(q, k, v, 4, 2, 0, 1.0)


@pytest.mark.parametrize("type_k,type_v", [("f32", "f32"), ("f16", "q8_0"), ("f16", "f16")])
@pytest.mark.parametrize("n,pos,group", [(20, 600, 4), (1, 600, 4), (1, 1000, 8), (2, 777, 3)])
def test_position_major_rows_give_the_same_bits(isa, type_k, type_v, n, pos, group):
    """The cache's two layouts (head-major streams, f32/f16 keys in transposed tiles; position-major
    rows) are the same attention, for batches and decoding steps (the tail tile included)."""
    q, k, v = make(n, pos, 2 * group, 2, 64, seed=13)
    a = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v, head_major=True)
    b = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v, head_major=False)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("group", [1, 3, 5, 8])
@pytest.mark.parametrize("hd", [16, 40, 64, 72, 128])
def test_f16_tiles_read_in_place_give_the_batch_bits(isa, group, hd):
    """A decoding step's few rows (at most 8) read an f16 cache's tiles in place, widened in
    registers (attn_tile_scores_f16 / attn_tile_accumulate_f16 where the kernel table has them:
    AVX2, AVX-512); a batch's many rows widen each tile to float32 first. Both must be the same
    float32 arithmetic, so the same bits, for any head size (columns past the last vector of 8 or
    16) and any number of rows up to 8 (each row block of the in-place kernels), with a tail tile;
    and both must match the float64 oracle on the values the cache holds."""
    n, pos, n_kv = 20, 600, 2
    q, k, v = make(n, pos, n_kv * group, n_kv, hd, seed=group * 1000 + hd)
    batch = _C.attention_causal(q, k, v, pos, n_kv, 0, 0.1, "f16", "f16")
    ref = oracle(q, stored(k, "f16"), stored(v, "f16"), pos, n_kv, 0, 0.1)
    np.testing.assert_allclose(batch, ref, rtol=1e-4, atol=2e-5)
    steps = [(t, 1) for t in (0, 7, 19)] + ([(10, 8 // group)] if group <= 4 else [])
    for t, m in steps:  # m tokens at positions pos + t..: m * group rows, at most 8
        one = _C.attention_causal(q[t:t + m].copy(), k[:pos + t + m].copy(), v[:pos + t + m].copy(), pos + t, n_kv, 0,
                                  0.1, "f16", "f16")
        assert np.array_equal(one, batch[t:t + m]), (t, m)
