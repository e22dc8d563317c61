"""Merge kernels: every ISA bit-identical to the scalar reference, the reference against float64
oracles (tests/merge_oracle.py), and the invariants of each method.

Tolerances (float32 math, u = 2^-24 the unit roundoff):
- linear: N fused multiply-adds and one division, each within u of its result:
  |err| <= (N + 2) u * sum_i |w_i x_i| / |sum_i w_i| per element.
- slerp / nuslerp / model_stock: coefficients from float32 acos/sin of a dot product computed in
  double (error a few u), then two products and a sum: |err| <= 16 u (|c0 x0| + |c1 x1|) is loose
  enough for the coefficient error and tight enough to catch any wrong formula.
- task vectors: a subtraction, a mask, a weight, an N-term sum and a division: (2N + 6) u times
  the magnitudes involved.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llamix.merge import kernels as K

import merge_oracle as O
from helpers import merge_inputs_streamed, using_isa, using_threads, write_tensors

U = 2.0 ** -24
# around the 8/16-lane tiles and the 16384-element chunks
SIZES = [1, 7, 8, 9, 15, 16, 17, 33, 16383, 16385, 40000]


def both(fn):
    """fn() under the scalar reference and under the active ISA; asserts identical bits."""
    with using_isa("scalar"):
        ref = fn()
    got = fn()
    np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(ref).view(np.uint8))
    return got


def rand(rng, n, dtype="float32", scale=1.0):
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    if dtype == "float32":
        return x, x.astype(np.float64)
    if dtype == "float16":
        h = x.astype(np.float16)
        return h, h.astype(np.float64)
    b = O.f32_to_bf16(x)
    return b, O.bf16_to_f64(b)


def as_f64(out, dtype):
    if dtype == "bfloat16":
        return O.bf16_to_f64(out)
    return np.asarray(out).astype(np.float64)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_linear(isa, threads, n, dtype):
    rng = np.random.default_rng(n)
    xs = [rand(rng, n, dtype) for _ in range(3)]
    w = [0.5, -0.25, 1.5]
    got = both(lambda: K.linear([x for x, _ in xs], w, normalize=True))
    want = O.linear([x for _, x in xs], w)
    tol = 5 * U * sum(abs(wi) * np.abs(x) for wi, (_, x) in zip(w, xs)) / abs(sum(w))
    assert np.all(np.abs(got - want) <= tol + 1e-30)


@pytest.mark.parametrize("normalize", [True, False])
def test_linear_mixed_input_dtypes(isa, threads, normalize):
    """Inputs of three dtypes in one sum, summed in place (one pass per block)."""
    n = 70001
    rng = np.random.default_rng(5)
    xs = [rand(rng, n, dt) for dt in ("bfloat16", "float32", "float16", "bfloat16")]
    w = [0.4, 0.3, -0.2, 0.25]
    got = both(lambda: K.linear([x for x, _ in xs], w, normalize=normalize))
    d = sum(w) if normalize else 1.0
    want = sum(wi * x for wi, (_, x) in zip(w, xs)) / d
    tol = 6 * U * sum(abs(wi) * np.abs(x) for wi, (_, x) in zip(w, xs)) / abs(d)
    assert np.all(np.abs(got - want) <= tol + 1e-30)


def test_linear_output_dtypes_round_once(isa):
    rng = np.random.default_rng(0)
    xs = [rand(rng, 1000)[0] for _ in range(2)]
    f32 = K.linear(xs, [1, 1])
    np.testing.assert_array_equal(K.linear(xs, [1, 1], out="bfloat16"), O.f32_to_bf16(f32))
    np.testing.assert_array_equal(K.linear(xs, [1, 1], out="float16"), f32.astype(np.float16))


def test_linear_zero_weight_sum_is_an_error():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="sum to zero"):
        K.linear([x, x], [1.0, -1.0], normalize=True)


def test_work_dtype_rounds_inputs(isa):
    rng = np.random.default_rng(1)
    x = rand(rng, 999)[0]
    got = K.linear([x], [1.0], work="bfloat16")
    np.testing.assert_array_equal(got, O.bf16_to_f64(O.f32_to_bf16(x)).astype(np.float32))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_slerp(isa, threads, n, t):
    rng = np.random.default_rng(n)
    (a, a64), (b, b64) = rand(rng, n, "bfloat16"), rand(rng, n, "bfloat16")
    got = both(lambda: K.slerp(a, b, t))
    want = O.slerp(a64, b64, t)
    assert np.all(np.abs(got - want) <= 16 * U * (np.abs(a64) + np.abs(b64)) + 1e-30)
    if t == 0:
        np.testing.assert_array_equal(got, a64.astype(np.float32))
    if t == 1:
        np.testing.assert_array_equal(got, b64.astype(np.float32))


def test_slerp_colinear_and_zero(isa):
    rng = np.random.default_rng(2)
    a = rng.standard_normal(5000).astype(np.float32)
    for b in (2 * a, -3 * a):  # parallel and anti-parallel: plain interpolation
        got = K.slerp(a, b, 0.25)
        np.testing.assert_allclose(got, 0.75 * a.astype(np.float64) + 0.25 * b, rtol=0, atol=4 * U * 4 * np.abs(a).max())
    z = np.zeros_like(a)  # a zero vector is not normalised: dot 0, theta pi/2
    got = K.slerp(z, a, 0.5)
    np.testing.assert_allclose(got, O.slerp(z.astype(np.float64), a.astype(np.float64), 0.5), atol=1e-6)


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("with_base", [False, True])
def test_nuslerp(isa, threads, rows, with_base):
    rng = np.random.default_rng(rows)
    n = 4 * 5003
    (a, a64), (b, b64), (c, c64) = (rand(rng, n) for _ in range(3))
    t = 0.7 / (0.3 + 0.7)
    got = both(lambda: K.nuslerp(a, b, t, base=c if with_base else None, rows=rows))
    if with_base:
        want = c64 + O.nuslerp_vectors((a64 - c64).reshape(rows, -1), (b64 - c64).reshape(rows, -1), t).ravel()
        mag = np.abs(a64 - c64) + np.abs(b64 - c64) + np.abs(c64)
    else:
        want = O.nuslerp_vectors(a64.reshape(rows, -1), b64.reshape(rows, -1), t).ravel()
        mag = np.abs(a64) + np.abs(b64)
    assert np.all(np.abs(got - want) <= 32 * U * mag)


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock(isa, threads, filter_wise):
    rng = np.random.default_rng(3)
    rows, cols = 9, 4001
    base = rng.standard_normal((rows, cols)).astype(np.float32)
    xs = [base + 0.1 * rng.standard_normal((rows, cols)).astype(np.float32) + 0.05 for _ in range(3)]
    got = both(lambda: K.model_stock(base, xs, rows=rows if filter_wise else 1))
    want = O.model_stock(base.astype(np.float64), [x.astype(np.float64) for x in xs], filter_wise)
    np.testing.assert_allclose(got, want, rtol=0, atol=64 * U * np.abs(base).max())



@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("n", [7, 16385, 3 * 16384 + 9])
def test_dots_read_in_place_equal_dots_of_loaded_copies(isa, threads, dtype, n):
    """nuslerp / model_stock sum their deltas' dots straight from inputs stored in the working dtype
    (delta_dot3); inputs of another type are loaded, rounded and subtracted first (load, sub, dot3).
    The same values both ways give the same bits."""
    rng = np.random.default_rng(n)
    stored = [rand(rng, n, dtype)[0] for _ in range(4)]
    as_f32 = [(O.bf16_to_f64(x) if dtype == "bfloat16" else x.astype(np.float64)).astype(np.float32) for x in stored]
    for base in (None, 3):
        kw = {} if base is None else {"base": stored[base]}
        kw32 = {} if base is None else {"base": as_f32[base]}
        got = both(lambda: K.nuslerp(stored[0], stored[1], 0.3, rows=1, work=dtype, **kw))
        want = K.nuslerp(as_f32[0], as_f32[1], 0.3, rows=1, work=dtype, **kw32)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    got = both(lambda: K.model_stock(stored[0], stored[1:], work=dtype))
    want = K.model_stock(as_f32[0], as_f32[1:], work=dtype)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("n_models", [2, 3, 4])
def test_model_stock_average_bits_at_extremes(isa, n_models):
    """The average's division by N (a multiplication by 1/N when N is a power of two) and the
    final lincomb2: the reference's bits on subnormals (row 0), huge values, infinities and NaNs
    (row 1, whose t is then NaN)."""
    rng = np.random.default_rng(13)
    n = 4099
    base = rng.standard_normal((2, n)).astype(np.float32)
    xs = [base + 0.1 * rng.standard_normal((2, n)).astype(np.float32) for _ in range(n_models)]
    base[0, ::13] = 0
    for x in xs:
        x[0, ::13] = rng.standard_normal(len(x[0, ::13])).astype(np.float32) * np.float32(2.0 ** -135)
        x[1, 1::17] = np.float32(3e38)
        x[1, 2::101] = np.inf
        x[1, 3::211] = np.nan
    got = both(lambda: K.model_stock(base, xs, rows=2))
    assert np.isfinite(got[0]).all() and np.any(np.abs(got[0]) < 2.0 ** -126)

# ---- task vectors --------------------------------------------------------------------------

def tv_inputs(rng, n, n_models=3, dtype="bfloat16"):
    base, base64 = rand(rng, n, dtype)
    xs = []
    for _ in range(n_models):
        d = rng.standard_normal(n).astype(np.float32) * 0.05
        x = (base64 + d).astype(np.float32)
        xs.append(O.f32_to_bf16(x) if dtype == "bfloat16" else x.astype(dtype))
    xs64 = [as_f64(x, dtype) for x in xs]
    return base, base64, xs, xs64


@pytest.mark.parametrize("n", [1, 17, 16385, 50000])
@pytest.mark.parametrize("kind", ["topk", "breadcrumbs"])
def test_rank_mask_exact_with_ties(isa, threads, n, kind):
    """bf16 deltas have many equal magnitudes: the mask must follow the stated tie rule exactly
    (ranks by |delta| ascending, equal magnitudes by ascending index)."""
    rng = np.random.default_rng(n)
    base, base64, xs, xs64 = tv_inputs(rng, n, 1)
    # quantise the delta coarsely so ties are everywhere
    x = O.f32_to_bf16((base64 + np.round((xs64[0] - base64) * 64) / 64).astype(np.float32))
    x64 = O.bf16_to_f64(x)
    r0, r1 = O.topk_range(n, 0.3) if kind == "topk" else O.breadcrumbs_range(n, 0.6, 0.05)
    got = both(lambda: K.sparsify_mask(base, x, K.sparsifier(K.RANK, r0, r1)))
    delta32 = (x64.astype(np.float32) - base64.astype(np.float32))
    want = O.rank_keep(delta32, r0, r1)
    np.testing.assert_array_equal(got, want)
    assert got.sum() == r1 - r0


@pytest.mark.parametrize("consensus", [None, "sum", "count"])
@pytest.mark.parametrize("sparsify", ["none", "topk", "random", "breadcrumbs"])
def test_task_vectors_against_oracle(isa, threads, consensus, sparsify):
    rng = np.random.default_rng(4)
    n = 20011
    base, base64, xs, xs64 = tv_inputs(rng, n)
    weights, densities = [0.6, 0.3, -0.2], [0.5, 0.3, 0.9]
    sps, masks = [], []
    for i, (x, x64) in enumerate(zip(xs, xs64)):
        # the oracle's masks: rank selections from its own sort of the float32 deltas; DARE's random
        # mask is the kernel's (its random stream is the implementation's choice), checked for
        # statistics in test_random_mask_statistics_and_determinism
        delta32 = x64.astype(np.float32) - base64.astype(np.float32)
        if sparsify == "none":
            sp = K.sparsifier(weight=weights[i])
            mask = None
        elif sparsify == "topk":
            r0, r1 = O.topk_range(n, densities[i])
            sp = K.sparsifier(K.RANK, r0, r1, weight=weights[i])
            mask = O.rank_keep(delta32, r0, r1)
        elif sparsify == "breadcrumbs":
            r0, r1 = O.breadcrumbs_range(n, densities[i], 0.01)
            sp = K.sparsifier(K.RANK, r0, r1, weight=weights[i])
            mask = O.rank_keep(delta32, r0, r1)
        else:
            sp = K.sparsifier(K.RANDOM, density=densities[i], weight=weights[i])
            mask = K.sparsify_mask(base, x, sp, seed=7, name="w", model_index=i)
        if sparsify in ("none", "topk", "breadcrumbs"):  # the kernel selects what the oracle selects
            np.testing.assert_array_equal(K.sparsify_mask(base, x, sp, seed=7, name="w", model_index=i),
                                          np.ones(n, bool) if mask is None else mask)
        sps.append(sp)
        masks.append(mask)
    rescale = sparsify == "random"
    got = both(lambda: K.task_vectors(base, xs, sps, consensus=consensus, rescale=rescale, normalize=True,
                                      lambda_=0.9, seed=7, name="w"))
    want = O.task_vectors(base64, xs64, weights, masks, consensus, rescale=rescale, normalize=True, lam=0.9)
    mag = np.abs(base64) + sum(np.abs(x - base64) for x in xs64) * 4
    assert np.all(np.abs(got - want) <= 12 * U * mag)


def test_ties_density_one_is_task_arithmetic_with_consensus(isa):
    rng = np.random.default_rng(5)
    n = 3001
    base, base64, xs, xs64 = tv_inputs(rng, n, 2)
    w = [1.0, 0.5]
    dense = [K.sparsifier(K.RANK, *O.topk_range(n, 1.0), weight=wi) for wi in w]
    got = K.task_vectors(base, xs, dense, consensus="sum", normalize=True)
    plain = K.task_vectors(base, xs, [K.sparsifier(weight=wi) for wi in w], consensus="sum", normalize=True)
    np.testing.assert_array_equal(got, plain)
    want = O.task_vectors(base64, xs64, w, None, "sum", normalize=True)
    assert np.all(np.abs(got - want) <= 12 * U * (np.abs(base64) + 1))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("n_models", [1, 2, 3])
@pytest.mark.parametrize("normalize,lam", [(False, 1.0), (True, 0.7)])
def test_task_arithmetic_one_pass_equals_the_chain(tmp_path, isa, threads, dtype, n_models, normalize, lam):
    """Unmasked task arithmetic on inputs in memory runs as one kernel pass (task_sum); read from
    files chunk by chunk (no cache budget) it runs as the chain of load, sub, scale, add, div,
    scale, add: the same bits, for every input dtype, model count, normalize and lambda."""
    rng = np.random.default_rng(11)
    n = 2 * 16384 + 1001  # whole L1 blocks, a partial one, and a tail under the vector width
    base, _, xs, _ = tv_inputs(rng, n, n_models, dtype)
    xs[0][:64] = base[:64]  # zero deltas
    short = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[dtype]
    ck = write_tensors(tmp_path, {"b": (short, base), **{f"x{i}": (short, x) for i, x in enumerate(xs)}})
    sps = [K.sparsifier(weight=wt) for wt in [0.6, -0.3, 0.45][:n_models]]

    def run(b, x):
        return K.task_vectors((b, dtype), [(a, dtype) for a in x], sps, normalize=normalize, lambda_=lam,
                              out="float32", work=dtype)

    one_pass = both(lambda: run(base, xs))
    with merge_inputs_streamed():
        chain = run(ck.ref("b"), [ck.ref(f"x{i}") for i in range(n_models)])
    np.testing.assert_array_equal(one_pass.view(np.uint32), chain.view(np.uint32))



@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("n_models", [2, 3])
@pytest.mark.parametrize("rows", [1, 7])
def test_model_stock_one_pass_equals_the_chain(tmp_path, isa, threads, dtype, n_models, rows):
    """Model Stock's final pass on inputs in memory is one kernel call per block (stock_mix); read
    from files chunk by chunk (no cache budget) it is the chain of load, add, div, lincomb2: the
    same bits, for every input dtype, model count, and per tensor or per row."""
    rng = np.random.default_rng(12)
    n = 7 * 5003  # rows of 5003: L1 blocks, partial ones, and tails under the vector width
    base, _, xs, _ = tv_inputs(rng, n, n_models, dtype)
    short = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}[dtype]
    ck = write_tensors(tmp_path, {"b": (short, base), **{f"x{i}": (short, x) for i, x in enumerate(xs)}})

    def run(b, x):
        return K.model_stock((b, dtype), [(a, dtype) for a in x], rows=rows, out="float32", work=dtype)

    one_pass = both(lambda: run(base, xs))
    with merge_inputs_streamed():
        chain = run(ck.ref("b"), [ck.ref(f"x{i}") for i in range(n_models)])
    np.testing.assert_array_equal(one_pass.view(np.uint32), chain.view(np.uint32))



def test_random_mask_statistics_and_determinism(isa, threads):
    rng = np.random.default_rng(6)
    n = 200_000
    base, _, xs, _ = tv_inputs(rng, n, 1, "float32")
    p = 0.3
    sp = K.sparsifier(K.RANDOM, density=p)
    m = both(lambda: K.sparsify_mask(base, xs[0], sp, seed=1, name="layer.0"))
    # kept fraction: binomial, 5 sigma
    assert abs(m.mean() - p) <= 5 * np.sqrt(p * (1 - p) / n)
    # the same key gives the same mask; any other key an independent one (agreement p^2 + q^2)
    np.testing.assert_array_equal(m, K.sparsify_mask(base, xs[0], sp, seed=1, name="layer.0"))
    for other in (dict(seed=2, name="layer.0"), dict(seed=1, name="layer.1"), dict(seed=1, name="layer.0", model_index=1)):
        m2 = K.sparsify_mask(base, xs[0], sp, **other)
        agree = (m == m2).mean()
        assert abs(agree - (p * p + (1 - p) ** 2)) <= 5 * np.sqrt(0.25 / n)


def test_dare_preserves_mean_in_expectation():
    """Averaged over seeds, a DARE task vector (kept entries rescaled by the L1 ratio, about
    1/density) approaches the dense one: per-element relative error shrinks like 1/sqrt(seeds)."""
    rng = np.random.default_rng(7)
    n, seeds, p = 4000, 400, 0.25
    base = np.zeros(n, np.float32)
    x = (rng.standard_normal(n) * 0.1).astype(np.float32)
    sp = [K.sparsifier(K.RANDOM, density=p)]
    acc = np.zeros(n)
    for s in range(seeds):
        acc += K.task_vectors(base, [x], sp, rescale=True, seed=s, name="w")
    mean = acc / seeds
    # each element: Bernoulli(p)/p has relative std sqrt((1-p)/p) ~ 1.73; 5 sigma of the mean of 400
    rel = np.abs(mean - x) / np.abs(x)
    assert np.median(rel) < 0.2
    assert abs(mean.sum() / x.sum() - 1) < 0.05 or abs(x.sum()) < 1


def test_della_probabilities_follow_rank(isa):
    rng = np.random.default_rng(8)
    rows, cols = 64, 1000
    base = np.zeros(rows * cols, np.float32)
    x = rng.standard_normal(rows * cols).astype(np.float32)
    d, eps = 0.5, 0.3
    m = both(lambda: K.sparsify_mask(base, x, K.sparsifier(K.DELLA, density=d, epsilon=eps), seed=3, rows=rows))
    m = m.reshape(rows, cols)
    ranks = np.argsort(np.argsort(np.abs(x.reshape(rows, cols)), axis=1, kind="stable"), axis=1)
    low, high = m[ranks < cols // 10].mean(), m[ranks >= cols - cols // 10].mean()
    # expected keep probability in the bottom / top decile: about d - 0.9 eps and d + 0.9 eps
    assert abs(low - (d - 0.9 * eps)) < 0.03 and abs(high - (d + 0.9 * eps)) < 0.03


@pytest.mark.parametrize("rows,cols,kind", [(9, 300, "ties"), (3, 40, "ties"), (2, 2500, "ties"), (3, 1000, "spread"),
                                           (4, 999, "bf16")])
def test_della_mask_is_the_random_mask_at_each_rank_probability(isa, rows, cols, kind):
    """Element i of a DELLA mask is the RANDOM mask's element i (same hash) at density
    p(rank_i) = density - eps + 2 eps rank_i / (L - 1), ranks by |delta| ascending, ties by index:
    exact for short and long rows, rows not a multiple of 8, ties (few distinct magnitudes, or
    bf16 inputs' quantized deltas), magnitudes over a hundred octaves with zeros and infinities,
    every ISA and any thread count."""
    rng = np.random.default_rng(12)
    n = rows * cols
    base = rng.standard_normal(n).astype(np.float32)
    if kind == "ties":  # few distinct magnitudes of either sign
        x = base + (rng.integers(-6, 7, n) * 0.25).astype(np.float32)
    elif kind == "spread":
        x = base + (rng.standard_normal(n) * 2.0 ** rng.integers(-100, 20, n)).astype(np.float32)
        x[::7] = base[::7]  # exact zeros
        x[5::97] = np.inf
    else:  # a fine-tune's bf16 deltas
        base = O.bf16_to_f64(O.f32_to_bf16(0.02 * base)).astype(np.float32)
        x = O.bf16_to_f64(O.f32_to_bf16(base + 0.002 * rng.standard_normal(n).astype(np.float32))).astype(np.float32)
    d, eps = 0.45, 0.3
    got = []
    for t in (1, 2, 3):
        with using_threads(t):
            got.append(K.sparsify_mask(base, x, K.sparsifier(K.DELLA, density=d, epsilon=eps), seed=5, name="w", rows=rows))
    np.testing.assert_array_equal(got[0], got[1])
    np.testing.assert_array_equal(got[0], got[2])
    delta = (x - base).reshape(rows, cols)
    ranks = np.argsort(np.argsort(np.abs(delta), axis=1, kind="stable"), axis=1, kind="stable").reshape(-1)
    want = np.zeros(n, bool)
    for r in range(cols):
        p = (d - eps) + r / (cols - 1) * 2.0 * eps
        m = np.asarray(K.sparsify_mask(base, x, K.sparsifier(K.RANDOM, density=p), seed=5, name="w")).astype(bool)
        want[ranks == r] = m[ranks == r]
    np.testing.assert_array_equal(np.asarray(got[0]).astype(bool), want)


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(9)
    base, _, xs, _ = tv_inputs(rng, 70001, 2)
    sps = [K.sparsifier(K.RANDOM, density=0.4, weight=1.0), K.sparsifier(K.RANK, *O.topk_range(70001, 0.2), weight=0.5)]
    outs = []
    for t in (1, 2, 3):
        with using_threads(t):
            outs.append(K.task_vectors(base, xs, sps, consensus="sum", rescale=True, normalize=True, seed=11, name="x"))
            outs.append(K.slerp(xs[0], xs[1], 0.4))
    for a, b in zip(outs[::2], outs[2::2]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(outs[1::2], outs[3::2]):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_raise():
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="elements"):
        K.linear([x, np.ones(9, np.float32)], [1, 1])
    with pytest.raises(ValueError, match="float32, float16 or bfloat16"):
        K.linear([x.astype(np.float64)], [1])
    with pytest.raises(ValueError):
        K.scale(x, 1.0, out="int8")


def test_oracle_is_independent_of_llamix():
    """The oracles must not compute with what they check: importing merge_oracle (and what it
    imports) loads no llamix module."""
    code = ("import sys, merge_oracle; "
            "print(sorted(m for m in sys.modules if m == 'llamix' or m.startswith('llamix.')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_copy_keeps_the_stored_bits_from_memory_and_from_a_file(tmp_path, dtype):
    """scale by 1 in the stored dtype (passthrough, and the one-model copies) is the stored bits:
    every bit pattern (NaNs with payloads, infinities, subnormals, -0) read back unchanged, from an
    array and from a file read chunk by chunk (a size that is not a multiple of the task chunk);
    an actual conversion (to float32) still gives the values."""
    n = 3 * 65536 + 123
    bits = np.arange(n, dtype=np.uint32).astype(np.uint16)  # every 16-bit pattern, and more
    arr = bits if dtype == "bfloat16" else bits.view(np.float16)
    short = {"bfloat16": "bf16", "float16": "f16"}[dtype]
    ref = write_tensors(tmp_path, {"t": (short, arr)}).ref("t")
    for src in (arr, ref):
        out = K.scale((src, dtype), 1.0, out=dtype, work="float32")
        assert out.view(np.uint16).tobytes() == bits.tobytes()
    f32 = K.scale((ref, dtype), 1.0, out="float32", work="float32")
    expect = (bits.astype(np.uint32) << 16).view(np.float32) if dtype == "bfloat16" else arr.astype(np.float32)
    ok = np.isnan(expect)
    assert np.array_equal(f32[~ok], expect[~ok]) and np.isnan(f32[ok]).all()
