"""bf16 attention products (attn_precision="bf16"): AMX's TDPBF16PS arithmetic, its exact
emulations (scalar spec, AVX2, AVX-512) and the AMX tiles, against an independent numpy model
of the instruction written from Intel's description (two float32 FMA chains per 32-pair block,
even and odd apart, then c + (even + odd); denormals in as zero, tiny results flushed to zero after
rounding, round to nearest even); the packing against numpy; and the whole attention against a
float64 numpy attention within the bf16 bound (docs/PERFORMANCE.md), bit-identical across thread
counts, kernel variants' AMX and emulation, and batches.

AMX cases skip with a reason where the CPU (or the OS) gives no tiles."""
from __future__ import annotations

import numpy as np
import pytest

from llamix import _C

from helpers import bf16_to_f64, f32_to_bf16, using_isa, using_threads
from test_attention_tiled import make, oracle, stored

AMX = bool(_C.amx_usable())
needs_amx = pytest.mark.skipif(not AMX, reason="no AMX tiles here (CPU without AMX-BF16, LLAMIX_AMX=0, or the OS "
                                               "refused the tile permission)")
FLT_MIN = np.float64(np.finfo(np.float32).tiny)


# ---- an independent model of TDPBF16PS (float64 holds every sum exactly enough, see _fma) ----

def _daz(x):
    x = np.asarray(x, np.float64)
    return np.where(np.abs(x) < FLT_MIN, np.copysign(0.0, x), x)


def _fma(a, b, c):
    """float32 fma(a, b, c) with DAZ inputs and FTZ (tininess after rounding) output, elementwise.
    a b is exact in float64 (bf16 inputs); c + a b in float64 is either exact or far from a float32
    midpoint (the smaller term is below 2^-29 of the larger), so rounding it to float32 is the single
    rounding of the fused operation."""
    a, b, c = _daz(a), _daz(b), _daz(c)
    with np.errstate(over="ignore", invalid="ignore"):
        s = c + a * b
        r = s.astype(np.float32).astype(np.float64)
        # tininess after rounding: the sum rounded to 24 bits with an unbounded exponent
        r24 = (s * 2.0 ** 64).astype(np.float32).astype(np.float64) / 2.0 ** 64
    tiny = np.abs(r24) < FLT_MIN
    return np.where(tiny, np.copysign(0.0, r), r)


def tdp_block(c, a, b):
    """c + one block: a (..., 32) bf16 values of rows, b (..., 32) of columns, float64 arrays."""
    even = np.zeros(np.broadcast(a[..., 0], b[..., 0]).shape)
    odd = even.copy()
    for i in range(16):
        even = _fma(a[..., 2 * i], b[..., 2 * i], even)
        odd = _fma(a[..., 2 * i + 1], b[..., 2 * i + 1], odd)
    return _fma(1.0, c, _fma(1.0, even, odd))


def spec_scores(qbits, keys):
    """s (rows, 64) = q (rows, hd32) . keys (64, hd32), bf16 bit patterns."""
    q, k = bf16_to_f64(qbits), bf16_to_f64(keys)
    s = np.zeros((q.shape[0], 64))
    for b in range(q.shape[1] // 32):
        s = tdp_block(s, q[:, None, 32 * b:32 * b + 32], k[None, :, 32 * b:32 * b + 32])
    return s.astype(np.float32)


def spec_accumulate(pbits, values, alpha, o):
    """alpha o + p (rows, 64) . values (64, hd32)."""
    p, v = bf16_to_f64(pbits), bf16_to_f64(values)
    acc = np.where(alpha[:, None] == 1, o, (alpha[:, None] * o).astype(np.float32)).astype(np.float64)
    for b in range(2):
        acc = tdp_block(acc, p[:, None, 32 * b:32 * b + 32], v[32 * b:32 * b + 32].T[None, :, :])
    return acc.astype(np.float32)


# ---- the packed layouts (kernels/ops.h), from the definition ----

def pack_keys(kbits):
    """keys (64, hd32) bf16 -> kp: block (b, n) at (b * 4 + n) * 512, element d = 32 b + 2 i + e of
    key 16 n + j at i * 32 + 2 j + e."""
    hd32 = kbits.shape[1]
    t = kbits.reshape(4, 16, hd32 // 32, 16, 2)  # n, j, b, i, e
    return np.ascontiguousarray(t.transpose(2, 0, 3, 1, 4)).ravel()


def pack_values(vbits):
    """values (64, hd32) bf16 -> vp: block (b, c) at (b * hd32 / 16 + c) * 512, key 32 b + 2 i + e
    of column 16 c + j at i * 32 + 2 j + e."""
    hd32 = vbits.shape[1]
    t = vbits.reshape(2, 16, 2, hd32 // 16, 16)  # b, i, e, c, j
    return np.ascontiguousarray(t.transpose(0, 3, 1, 4, 2)).ravel()


def random_bf16(rng, shape, kind):
    """bf16 bit patterns: 'normal' (exponents 2^-12 .. 2^12), 'edge' (near underflow: denormals,
    zeros, the smallest normals), or 'mixed' (both, and signs of zero)."""
    bits = rng.integers(0, 1 << 16, size=shape, dtype=np.uint32)
    sign_mant = bits & 0x807F
    if kind == "normal":
        exp = rng.integers(127 - 12, 127 + 13, size=shape)
    elif kind == "edge":
        exp = rng.integers(0, 40, size=shape)
    else:
        exp = np.where(rng.random(shape) < 0.5, rng.integers(0, 40, size=shape), rng.integers(110, 145, size=shape))
    return (sign_mant | (exp.astype(np.uint32) << 7)).astype(np.uint16)


def random_f32(rng, shape, kind):
    u = rng.integers(0, 1 << 32, size=shape, dtype=np.uint64).astype(np.uint32)
    lo, hi = {"normal": (127 - 14, 127 + 15), "edge": (0, 60), "mixed": (0, 150)}[kind]
    exp = rng.integers(lo, hi, size=shape).astype(np.uint32)
    return ((u & 0x807FFFFF) | (exp << 23)).view(np.float32)


def same_bits(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("kind", ["normal", "edge", "mixed"])
@pytest.mark.parametrize("hd32", [32, 64, 128])
def test_scores_match_the_instruction_model(isa, kind, hd32):
    rng = np.random.default_rng(hd32 + len(kind))
    q = random_bf16(rng, (32, hd32), kind)
    keys = random_bf16(rng, (64, hd32), kind)
    want = spec_scores(q, keys)
    assert same_bits(_C.attn_bf16_scores(q, pack_keys(keys)), want)
    if AMX and isa == "avx512":
        assert same_bits(_C.attn_bf16_scores(q, pack_keys(keys), amx=True), want)


@pytest.mark.parametrize("kind", ["normal", "edge", "mixed"])
@pytest.mark.parametrize("hd32", [32, 64, 96])
def test_accumulate_matches_the_instruction_model(isa, kind, hd32):
    rng = np.random.default_rng(7 * hd32 + len(kind))
    p = random_bf16(rng, (32, 64), kind)
    values = random_bf16(rng, (64, hd32), kind)
    o = random_f32(rng, (32, hd32), kind)
    alpha = np.where(rng.random(32) < 0.5, 1.0, rng.random(32)).astype(np.float32)
    want = spec_accumulate(p, values, alpha, o)
    assert same_bits(_C.attn_bf16_accumulate(p, pack_values(values), alpha, o), want)
    if AMX and isa == "avx512":
        assert same_bits(_C.attn_bf16_accumulate(p, pack_values(values), alpha, o, amx=True), want)


@needs_amx
def test_amx_matches_the_model_on_many_random_tiles():
    """Several hundred thousand outputs of the instruction, random and edge inputs."""
    with using_isa("avx512"):
        rng = np.random.default_rng(1)
        for it in range(12):
            kind = ("normal", "edge", "mixed")[it % 3]
            q = random_bf16(rng, (256, 64), kind)
            keys = random_bf16(rng, (64, 64), kind)
            assert same_bits(_C.attn_bf16_scores(q, pack_keys(keys), amx=True), spec_scores(q, keys)), it
            o = random_f32(rng, (256, 64), kind)
            alpha = np.ones(256, np.float32)
            assert same_bits(_C.attn_bf16_accumulate(q[:, :64].copy(), pack_values(keys), alpha, o, amx=True),
                             spec_accumulate(q[:, :64], keys, alpha, o)), it


@pytest.mark.parametrize("hd", [16, 40, 64, 96, 128])
@pytest.mark.parametrize("half", [False, True])
def test_packing_rounds_to_bf16_in_the_pair_layout(isa, hd, half):
    rng = np.random.default_rng(hd)
    x = (rng.standard_normal((64, hd)) * 3).astype(np.float32)
    x[0, 0], x[1, 1], x[2, 2] = np.inf, -np.inf, np.nan
    x[3, 3] = np.float32(1.0 + 2.0 ** -8)  # a tie: rounds to even
    if half:
        x = x.astype(np.float16)
        src = x.view(np.uint16)
        x = x.astype(np.float32)
    else:
        src = x
    hd32 = (hd + 31) // 32 * 32
    bits = np.zeros((64, hd32), np.uint16)
    bits[:, :hd] = f32_to_bf16(x)
    assert np.array_equal(_C.attn_bf16_pack(np.ascontiguousarray(src.T), keys=True), pack_keys(bits))
    assert np.array_equal(_C.attn_bf16_pack(np.ascontiguousarray(src), keys=False), pack_values(bits))


# ---- the attention with bf16 products ----

def bf16_bound(out, ref):
    """The documented bound of bf16 products against float64: |out - ref| <= 2e-2 (inputs of unit
    scale: q, k, v standard normal, scale 1/sqrt(head_dim)); relative RMS error below 5e-3."""
    err = np.abs(out.astype(np.float64) - ref)
    assert err.max() <= 2e-2, err.max()
    assert np.sqrt((err ** 2).mean() / (ref ** 2).mean()) <= 5e-3


SHAPES = [(1, 0), (5, 0), (70, 0), (1, 63), (1, 64), (3, 511), (200, 313), (1, 1030), (64, 2000), (1, 4095),
          (1, 8191), (16, 8176)]


@pytest.mark.parametrize("n,pos", SHAPES)
@pytest.mark.parametrize("window", [0, 100])
def test_bf16_attention_within_its_bound(isa, n, pos, window):
    n_heads, n_kv, hd = 8, 2, 64
    q, k, v = make(n, pos, n_heads, n_kv, hd, seed=n * 7 + pos)
    scale = 1.0 / np.sqrt(hd)
    out = _C.attention_causal(q, k, v, pos, n_kv, window, scale, precision="bf16")
    bf16_bound(out, oracle(q, k, v, pos, n_kv, window, scale))


@pytest.mark.parametrize("group", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("hd", [16, 40, 64, 128, 256])
def test_bf16_gqa_ratios_and_head_sizes(isa, group, hd):
    n_kv, n, pos = 2, 37, 150
    q, k, v = make(n, pos, n_kv * group, n_kv, hd, seed=group * 100 + hd)
    scale = 1.0 / np.sqrt(hd)
    out = _C.attention_causal(q, k, v, pos, n_kv, 0, scale, precision="bf16")
    bf16_bound(out, oracle(q, k, v, pos, n_kv, 0, scale))


@pytest.mark.parametrize("type_k,type_v", [("f32", "f32"), ("f16", "f16"), ("q8_0", "q4_0"), ("f16", "q8_0")])
def test_bf16_reads_what_each_cache_type_stores(isa, type_k, type_v):
    n, pos = 40, 700
    q, k, v = make(n, pos, 8, 2, 64, seed=11)
    out = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v, precision="bf16")
    bf16_bound(out, oracle(q, stored(k, type_k), stored(v, type_v), pos, 2, 0, 0.125))


@pytest.mark.parametrize("n,pos", [(1, 3000), (9, 1500), (300, 700)])
def test_bf16_bit_identical_across_thread_counts(isa, n, pos):
    q, k, v = make(n, pos, 8, 2, 64, seed=3)
    outs = []
    for t in (1, 2, 3):
        with using_threads(t):
            outs.append(_C.attention_causal(q, k, v, pos, 2, 0, 0.125, "f16", "f16", precision="bf16"))
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("window", [0, 200])
@pytest.mark.parametrize("kv_type", ["f32", "f16", "q8_0"])
def test_bf16_token_result_does_not_depend_on_its_batch(isa, window, kv_type):
    n, pos = 150, 900
    q, k, v = make(n, pos, 8, 2, 64, seed=5)
    batch = _C.attention_causal(q, k, v, pos, 2, window, 0.125, kv_type, kv_type, precision="bf16")
    for t in (0, 1, 63, 100, 149):
        one = _C.attention_causal(q[t:t + 1].copy(), k[:pos + t + 1].copy(), v[:pos + t + 1].copy(), pos + t, 2,
                                  window, 0.125, kv_type, kv_type, precision="bf16")
        assert np.array_equal(one[0], batch[t]), t


@needs_amx
@pytest.mark.parametrize("type_k,type_v,head_major", [("f16", "f16", True), ("f32", "f32", True),
                                                      ("q8_0", "q4_0", True), ("f16", "f16", False)])
@pytest.mark.parametrize("n,pos,group", [(1, 1000, 8), (7, 600, 4), (300, 500, 8), (45, 100, 3), (1, 3000, 3),
                                         (2, 2100, 4)])
def test_amx_and_the_emulation_give_the_same_bits(type_k, type_v, head_major, n, pos, group):
    q, k, v = make(n, pos, 2 * group, 2, 64, seed=17)
    with using_isa("avx512"):
        assert _C.attention_uses_amx()
        tiles = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v, head_major, precision="bf16")
        _C.set_attention_amx(False)
        try:
            assert not _C.attention_uses_amx()
            emulated = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v, head_major, precision="bf16")
        finally:
            _C.set_attention_amx(True)
    assert np.array_equal(tiles, emulated)


@pytest.mark.parametrize("type_k,type_v", [("f16", "f16"), ("f16", "q8_0"), ("f32", "f16")])
@pytest.mark.parametrize("hd", [32, 64, 128, 256])
@pytest.mark.parametrize("n,pos,group", [(1, 0, 8), (1, 63, 1), (1, 1000, 8), (2, 777, 4), (1, 1030, 3),
                                         (5, 300, 2), (40, 90, 8)])
def test_packed_f16_cache_gives_the_bits_of_f16_rows(isa, type_k, type_v, hd, n, pos, group):
    """Under bf16 products a head-major f16 stream holds packed bf16 tiles, read in place (no
    packing per read, AMX blocks as high as a decoding step's rows): the same bits as f16 in
    position-major rows, widened and packed on every read."""
    q, k, v = make(n, pos, 2 * group, 2, hd, seed=n + pos + hd)
    packed = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v, True, precision="bf16")
    rows = _C.attention_causal(q, k, v, pos, 2, 0, 0.125, type_k, type_v, False, precision="bf16")
    assert np.array_equal(packed, rows)


def test_products_are_the_same_bits_on_every_variant():
    """The tile products (not the softmax, whose exp differs by variant as in f32) of every
    kernel variant and of the AMX tiles on the same inputs."""
    rng = np.random.default_rng(3)
    q = random_bf16(rng, (48, 64), "mixed")
    keys = random_bf16(rng, (64, 64), "mixed")
    o = random_f32(rng, (48, 64), "mixed")
    alpha = rng.random(48).astype(np.float32)
    results = []
    for name in _C.available_isas():
        with using_isa(name):
            results.append((_C.attn_bf16_scores(q, pack_keys(keys)),
                            _C.attn_bf16_accumulate(q, pack_values(keys), alpha, o)))
            if AMX and name == "avx512":
                results.append((_C.attn_bf16_scores(q, pack_keys(keys), amx=True),
                                _C.attn_bf16_accumulate(q, pack_values(keys), alpha, o, amx=True)))
    for s, acc in results[1:]:
        assert same_bits(s, results[0][0]) and same_bits(acc, results[0][1])


def test_f32_is_the_default_and_bad_names_raise():
    q, k, v = make(20, 30, 4, 2, 32, seed=2)
    assert np.array_equal(_C.attention_causal(q, k, v, 30, 2, 0, 0.2),
                          _C.attention_causal(q, k, v, 30, 2, 0, 0.2, precision="f32"))
    with pytest.raises(ValueError, match="precision"):
        _C.attention_causal(q, k, v, 30, 2, 0, 0.2, precision="fp8")
    with pytest.raises(ValueError, match="attn_precision"):
        _C.KVCache(1, 16, 64, attn_precision="f64")


# ---- the Model's setting ----

def test_model_attn_precision_setting(monkeypatch):
    import llamix
    from llamix.errors import ArgumentError

    ck = llamix.random_checkpoint("tiny", "q8_0", seed=4, n_layers=2)
    ids = list(range(3, 40))
    f32 = llamix.Model(ck, n_ctx=64, kv_cache="f16", attn_precision="f32")
    bf16 = llamix.Model(ck, n_ctx=64, kv_cache="f16", attn_precision="bf16")
    assert (f32.attn_precision, bf16.attn_precision) == ("f32", "bf16")
    monkeypatch.delenv("LLAMIX_ATTN_PRECISION", raising=False)  # conftest's f32 for the suite
    assert llamix.Model(ck, n_ctx=64).attn_precision == ("bf16" if AMX else "f32")
    monkeypatch.setenv("LLAMIX_ATTN_PRECISION", "bf16")
    assert llamix.Model(ck, n_ctx=64).attn_precision == "bf16"
    assert llamix.Model(ck, n_ctx=64, attn_precision="f32").attn_precision == "f32"  # only auto follows it
    monkeypatch.setenv("LLAMIX_ATTN_PRECISION", "fp8")
    with pytest.raises(ArgumentError, match="LLAMIX_ATTN_PRECISION"):
        llamix.Model(ck, n_ctx=64)
    assert llamix.cpu_info()["amx"] == AMX
    a, b = f32.eval(ids, all_logits=True), bf16.eval(ids, all_logits=True)
    assert not np.array_equal(a, b)  # the setting reaches the attention
    assert np.abs(a - b).max() <= 0.05 * np.abs(a).max()
    # a token's logits do not depend on its batch under bf16 either
    bf16.reset()
    bf16.eval(ids[:20])
    assert np.array_equal(bf16.eval(ids[20:], all_logits=True), b[20:])
    with pytest.raises(ArgumentError, match="attn_precision"):
        llamix.Model(ck, n_ctx=64, attn_precision="fp8")


def test_cli_flag(capsys):
    from llamix.cli import main

    assert main(["bench", "--shape", "tiny", "-p", "8", "-n", "0", "-r", "1", "--attn-precision", "bf16",
                 "--json"]) == 0
    assert '"attn_precision": "bf16"' in capsys.readouterr().out


@needs_amx
def test_amx_after_another_library_used_the_tiles():
    """PyTorch's oneDNN runs its bf16 matmuls on AMX in the same threads and releases the tiles
    after them: each attention task loads its own tile configuration (a stale one faults)."""
    torch = pytest.importorskip("torch")
    q, k, v = make(40, 20, 8, 2, 64, seed=9)
    before = _C.attention_causal(q, k, v, 20, 2, 0, 0.125, precision="bf16")
    x = torch.randn(64, 64, dtype=torch.bfloat16)
    for _ in range(3):
        x = x @ x / 8
    with using_threads(1):  # the calling thread, whose tiles torch has just used
        assert np.array_equal(_C.attention_causal(q, k, v, 20, 2, 0, 0.125, precision="bf16"), before)
