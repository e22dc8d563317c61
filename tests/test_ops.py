"""The transformer ops (RMSNorm, RoPE, SwiGLU, GeGLU, attention) for every kernel variant, against
float64 numpy oracles written from the formulas, on sizes around the 8-lane SIMD width."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import llamix
from llamix import _C

from helpers import using_isa

SIZES = [1, 7, 8, 9, 31, 64, 100, 129]
EPS32 = 2.0 ** -23


@pytest.mark.parametrize("n", SIZES)
def test_rmsnorm(isa, n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n)).astype(np.float32) * 3
    w = rng.standard_normal(n).astype(np.float32)
    y = _C.rmsnorm(x, w, 1e-5)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64 ** 2).mean(axis=1, keepdims=True) + 1e-5) * w
    # float32 sum of n squares (relative error <= n eps) enters through a square root: n eps / 2, plus
    # the rounding of the three products
    bound = (n / 2 + 4) * EPS32 * np.abs(ref) + 1e-30
    assert (np.abs(y - ref) <= bound).all()


@pytest.mark.parametrize("head_dim", [2, 8, 64, 130])
def test_rope_rotates_adjacent_pairs(isa, head_dim):
    rng = np.random.default_rng(head_dim)
    x = rng.standard_normal((3, head_dim)).astype(np.float32)
    ang = rng.uniform(-10, 10, head_dim // 2)
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    y = _C.rope(x, cos, sin)
    a, b = x[:, 0::2].astype(np.float64), x[:, 1::2].astype(np.float64)
    ref = np.empty_like(x, dtype=np.float64)
    ref[:, 0::2] = a * cos - b * sin
    ref[:, 1::2] = a * sin + b * cos
    assert np.abs(y - ref).max() <= 4 * EPS32 * (np.abs(a) + np.abs(b)).max()


@pytest.mark.parametrize("n", SIZES)
def test_swiglu(isa, n):
    rng = np.random.default_rng(100 + n)
    g = (rng.standard_normal(n) * 6).astype(np.float32)
    g[0] = -100.0  # exp overflow region: silu(-100) is -0 to float32 precision
    u = rng.standard_normal(n).astype(np.float32)
    y = _C.swiglu(g, u)
    g64 = g.astype(np.float64)
    ref = g64 / (1 + np.exp(-g64)) * u
    # SIMD exp is a polynomial with relative error < 2e-7 (a few ulp); plus the divide and multiply
    assert np.allclose(y, ref, rtol=8 * EPS32, atol=1e-30)


@contextlib.contextmanager
def using_isa(name):
    before = _C.isa()
    llamix.set_isa(name)
    try:
        yield
    finally:
        llamix.set_isa(before)


def _gelu_tanh64(g):
    """0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), as x / (1 + exp(-2u)) (the same
    function; no cancellation where tanh(u) is near -1)."""
    x = np.asarray(g, np.float64)
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)
    with np.errstate(over="ignore"):
        y = x / (1 + np.exp(-2 * u))
    tanh_form = 0.5 * x * (1 + np.tanh(u))
    assert np.allclose(y[x > -3], tanh_form[x > -3], rtol=1e-13)
    return y


@pytest.mark.parametrize("n", SIZES + [4096])
def test_geglu(isa, n):
    """GELU (tanh approximation) times u. Every variant computes z = 2 sqrt(2/pi) (g + c g^3) with the
    same float32 operations and differs from the scalar reference only in exp (a polynomial): within
    1e-6 relative. Against float64 the float32 rounding of z itself (argument of exp up to ~90)
    limits the agreement for negative g, where the result is tiny."""
    rng = np.random.default_rng(200 + n)
    g = (rng.standard_normal(n) * 4).astype(np.float32)
    g[0] = -100.0  # exp overflow region: the result is -0 to float32 precision
    if n > 2:
        g[1] = 0.0
    u = rng.standard_normal(n).astype(np.float32)
    y = _C.geglu(g, u)
    with using_isa("scalar"):
        ref = _C.geglu(g, u)
    assert np.allclose(y, ref, rtol=1e-6, atol=1e-30)
    exact = _gelu_tanh64(g) * u
    mild = g > -3  # z < 11: exp's argument rounded to float32 costs < 1e-6 relative
    assert np.allclose(y[mild], exact[mild], rtol=8 * EPS32, atol=1e-30)
    z = np.abs(2 * np.sqrt(2 / np.pi) * (g.astype(np.float64) + 0.044715 * g.astype(np.float64) ** 3))
    # z's rounding (|z| eps relative, a few roundings) passes into exp(-z) unchanged in absolute terms
    assert (np.abs(y - exact) <= (4 * z + 8) * EPS32 * np.abs(exact) + 1e-30).all()


def test_geglu_rows_independent_of_length(isa):
    """A row's values do not depend on where the SIMD body ends and the tail starts."""
    g = np.random.default_rng(7).standard_normal(37).astype(np.float32) * 3
    u = np.ones(37, np.float32)
    whole = _C.geglu(g, u)
    for cut in (1, 8, 9, 16, 30):
        assert np.array_equal(_C.geglu(g[:cut].copy(), u[:cut].copy()), whole[:cut])


@pytest.mark.parametrize("n_keys", [1, 2, 7, 8, 9, 33, 300])
@pytest.mark.parametrize("head_dim", [8, 64, 72, 100])
def test_attention(isa, n_keys, head_dim):
    rng = np.random.default_rng(n_keys * 1000 + head_dim)
    q = rng.standard_normal(head_dim).astype(np.float32)
    k = rng.standard_normal((n_keys, head_dim)).astype(np.float32)
    v = rng.standard_normal((n_keys, head_dim)).astype(np.float32)
    scale = float(1 / np.sqrt(head_dim))
    out = _C.attention(q, k, v, scale)
    s = k.astype(np.float64) @ q * scale
    p = np.exp(s - s.max())
    p /= p.sum()
    ref = p @ v.astype(np.float64)
    # scores carry head_dim eps relative error of sum|q k|; softmax propagates it additively;
    # the weighted sum adds n_keys eps of sum p|v|
    score_err = head_dim * EPS32 * (np.abs(k) @ np.abs(q)).max() * scale
    bound = (2 * score_err + (n_keys + 8) * EPS32) * np.abs(v).max() * 2
    assert np.abs(out - ref).max() <= bound


def test_simd_variants_agree_with_reference_closely():
    """Every ISA's ops stay within a few ulp of the scalar reference (same formulas)."""
    rng = np.random.default_rng(7)
    q = rng.standard_normal(64).astype(np.float32)
    k = rng.standard_normal((50, 64)).astype(np.float32)
    v = rng.standard_normal((50, 64)).astype(np.float32)
    outs = {}
    for isa in _C.available_isas():
        with using_isa(isa):
            outs[isa] = _C.attention(q, k, v, 0.125)
    for isa, o in outs.items():
        assert np.allclose(o, outs["scalar"], rtol=1e-5, atol=1e-6), isa


def test_ops_reject_bad_input():
    with pytest.raises(ValueError, match="float32"):
        _C.rmsnorm(np.zeros((2, 4)), np.zeros(4, np.float32), 1e-5)
    with pytest.raises(ValueError, match="shape"):
        _C.rmsnorm(np.zeros((2, 4), np.float32), np.zeros(5, np.float32), 1e-5)
    with pytest.raises(ValueError):
        _C.attention(np.zeros(8, np.float32), np.zeros((0, 8), np.float32), np.zeros((0, 8), np.float32), 1.0)


@pytest.mark.parametrize("n_keys", [1, 9, 300])
@pytest.mark.parametrize("head_dim", [8, 64, 100])
def test_attention_fp16_cache(isa, n_keys, head_dim):
    """With fp16 keys/values the kernel computes exactly the float32 attention of the rounded
    values (the conversion is exact), so the float32 bound applies to that oracle."""
    rng = np.random.default_rng(n_keys + head_dim)
    q = rng.standard_normal(head_dim).astype(np.float32)
    k = rng.standard_normal((n_keys, head_dim)).astype(np.float16)
    v = rng.standard_normal((n_keys, head_dim)).astype(np.float16)
    scale = float(1 / np.sqrt(head_dim))
    out = _C.attention_f16(q, k.view(np.uint16), v.view(np.uint16), scale)
    exact = _C.attention(q, k.astype(np.float32), v.astype(np.float32), scale)
    assert np.allclose(out, exact, rtol=1e-5, atol=1e-6)
    s = k.astype(np.float64) @ q * scale
    p = np.exp(s - s.max())
    ref = (p / p.sum()) @ v.astype(np.float64)
    assert np.abs(out - ref).max() <= 1e-4 * np.abs(v).max()


@pytest.mark.parametrize("n_q", [1, 2, 3, 8])
@pytest.mark.parametrize("head_dim", [16, 64, 72, 128])
@pytest.mark.parametrize("n_keys", [1, 5, 33, 300])
def test_attention_group_equals_per_head_attention(isa, n_q, head_dim, n_keys):
    """Grouped-query attention: each head's output is that head's attention (float64 oracle,
    same bound as test_attention)."""
    rng = np.random.default_rng(n_q * 7 + head_dim + n_keys)
    q = rng.standard_normal((n_q, head_dim)).astype(np.float32)
    k = rng.standard_normal((n_keys, head_dim)).astype(np.float32)
    v = rng.standard_normal((n_keys, head_dim)).astype(np.float32)
    scale = float(1 / np.sqrt(head_dim))
    out = _C.attention_group(q, k, v, scale)
    s = q.astype(np.float64) @ k.T.astype(np.float64) * scale
    p = np.exp(s - s.max(axis=1, keepdims=True))
    ref = (p / p.sum(axis=1, keepdims=True)) @ v.astype(np.float64)
    score_err = head_dim * EPS32 * (np.abs(q) @ np.abs(k).T).max() * scale
    bound = (2 * score_err + (n_keys + 8) * EPS32) * np.abs(v).max() * 2
    assert np.abs(out - ref).max() <= bound
