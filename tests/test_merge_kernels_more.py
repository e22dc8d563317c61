"""Kernels of nearswap, RAM / RAM+, SCE, Multi-SLERP, the Karcher mean and Arcee Fusion: every ISA
and thread count bit-identical to the scalar reference, the reference against float64 oracles
(tests/merge_oracle.py), torch's float32 reduction orders against an emulation written here from
their description, and the float32 exp / log against float64.

Tolerances (u = 2^-24):
- nearswap, RAM, SCE: a handful of float32 operations per element: 8 u times the magnitudes.
- multislerp, karcher: their coefficients come from torch-order float32 norms, whose relative error
  grows like sqrt(n / 8) u (one float32 lane accumulates n / 8 squares); 2e-5 relative to the
  inputs' scale covers n = 40000 with room, and a wrong formula is off by O(1).
- arcee_fusion: the float32 KL divergence of two close softmaxes is a small difference of larger
  terms (relative error ~1e-3 here): masks must agree with the float64 oracle except for entries
  whose importance lies within 1% of the threshold; kept entries equal x, dropped ones the base.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from llamix import _C
from llamix.merge import kernels as K

import merge_oracle as O
from conftest import require_peer
from helpers import merge_inputs_streamed, using_isa, write_tensors

U = 2.0 ** -24
SIZES = [1, 7, 8, 9, 31, 33, 100, 16383, 16385, 40000]


def both(fn):
    """fn() under the scalar reference and under the active ISA; asserts identical bits."""
    with using_isa("scalar"):
        ref = fn()
    got = fn()
    np.testing.assert_array_equal(np.asarray(got).view(np.uint8), np.asarray(ref).view(np.uint8))
    return got


def models(n, k=3, seed=0, spread=0.05, shape=None):
    rng = np.random.default_rng(seed)
    shape = shape or (n,)
    base = (rng.standard_normal(shape) * 0.2).astype(np.float32)
    xs = [(base + spread * rng.standard_normal(shape)).astype(np.float32) for _ in range(k)]
    return base, xs


def f64(a):
    return np.asarray(a, np.float64)


def scale_of(base, xs):
    return np.maximum.reduce([np.abs(f64(base))] + [np.abs(f64(x)) for x in xs])


@pytest.mark.parametrize("n", SIZES)
def test_nearswap(isa, threads, n):
    base, (x, *_) = models(n)
    got = both(lambda: K.nearswap(base, x, 0.04))
    want = O.nearswap(f64(base), f64(x), 0.04)
    assert np.all(np.abs(got - want) <= 8 * U * scale_of(base, [x]))
    if n >= 100:  # both regimes occur
        assert np.any(got == x) and np.any((got != x) & (got != base))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("plus", [False, True])
def test_ram(isa, threads, n, plus):
    base, xs = models(n, seed=n)
    kw = {"r": 0.5, "alpha": 0.8} if plus else {}
    got = both(lambda: K.ram(base, xs, eps=0.04, plus=plus, **kw))
    want = O.ram(f64(base), [f64(x) for x in xs], 0.04, **kw)
    assert np.all(np.abs(got - want) <= 8 * U * (scale_of(base, xs) + 1))


def test_ram_counts_and_lambda():
    """Three models, hand-made: unique changes of model 0 are scaled by 1 + r clamp(rho, 0, alpha)."""
    base = np.zeros(6, np.float32)
    xs = [np.array([1, 1, 0, 0, 1, 0], np.float32), np.array([0, 1, 1, 0, 0, 0], np.float32),
          np.array([0, 0, 0, 0, 0, 2], np.float32)]
    got = K.ram(base, xs, eps=0.5, plus=True, r=0.5, alpha=0.8)
    # model 0: shared 1 (index 1), unique 2 -> rho 0.5 -> lambda 1.25; model 1: shared 1, unique 1 ->
    # rho 1 -> clamp 0.8 -> 1.4; model 2: unique 1, shared 0 -> 1
    np.testing.assert_array_equal(got, np.array([1.25, 1.0, 1.4, 0, 1.25, 2], np.float32))
    np.testing.assert_array_equal(K.ram(base, xs, eps=0.5), np.array([1, 1, 1, 0, 1, 2], np.float32))
    np.testing.assert_array_equal(K.ram(base, []), base)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("topk", [1.0, 0.3])
def test_sce(isa, threads, n, topk):
    base, xs = models(n, seed=n + 1)
    got = both(lambda: K.sce(base, xs, topk))
    want = O.sce(f64(base), [f64(x) for x in xs], topk)
    # mean squares: torch's float32 sums; 1e-6 relative of the weights at most here
    assert np.all(np.abs(got - want) <= 64 * U * (scale_of(base, xs) + 1))


def test_sce_topk_ties_keep_the_later_entries():
    base = np.zeros(10, np.float32)
    xs = [np.array([1, 2, 1, 2, 1, 2, 1, 2, 3, 0], np.float32), np.zeros(10, np.float32)]
    # variances 0.25, 1, 0.25, 1, ..., 2.25, 0: nonzero 9, k = int(9 * 0.4) = 3 -> index 8, then the
    # last two of the tied variance 1 (indices 5 and 7)
    got = K.sce(base, xs, 0.4)
    assert np.flatnonzero(got).tolist() == [5, 7, 8]


@pytest.mark.parametrize("n", SIZES[2:])
@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp(isa, threads, n, with_base):
    base, xs = models(n, seed=n + 2, spread=0.3)
    w = [0.5, 0.2, 0.4]
    got = both(lambda: K.multislerp(xs, w, base=base if with_base else None))
    want = O.multislerp([f64(x) for x in xs], w, f64(base) if with_base else None)
    assert np.all(np.abs(got - want) <= 2e-5 * (scale_of(base, xs) + np.abs(want)))


def _bf16(a):
    """float32 -> bfloat16 bits (truncated: any bf16 values will do) as uint16, and their float32 values."""
    bits = (np.asarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return bits, (bits.astype(np.uint32) << 16).view(np.float32)


def _stored(xs, dtype):
    """The inputs as a merge reads them stored (float16, or bfloat16 bits; "mixed": the first in
    float32, the others bfloat16) and their float32 values."""
    if dtype == "float16":
        ins = [x.astype(np.float16) for x in xs]
        return ins, [x.astype(np.float32) for x in ins]
    pairs = [_bf16(x) for x in xs]
    ins, vals = [p[0] for p in pairs], [p[1] for p in pairs]
    if dtype == "mixed":
        ins[0] = vals[0]
    return ins, vals


@pytest.mark.parametrize("n", [33, 1025, 40000])
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "mixed"])
def test_multislerp_stored_types(isa, threads, n, k, dtype):
    # the fused kernel reads bf16 / f16 inputs in place (bf16 with two models has its own loop)
    base, xs = models(n, k=k, seed=n + k, spread=0.3)
    if dtype == "float16":
        ins = [x.astype(np.float16) for x in xs]
        b = base.astype(np.float16)
        vals, bv = [x.astype(np.float32) for x in ins], b.astype(np.float32)
    else:
        pairs = [_bf16(x) for x in xs]
        ins, vals = [p[0] for p in pairs], [p[1] for p in pairs]
        b, bv = _bf16(base)
        if dtype == "mixed":  # a float32 base with bf16 models
            b = bv
    w = [0.6, 0.4, 0.3][:k]
    got = both(lambda: K.multislerp(ins, w, base=b))
    want = O.multislerp([f64(v) for v in vals], w, f64(bv))
    assert np.all(np.abs(got - want) <= 2e-5 * (scale_of(bv, vals) + np.abs(want)))


def test_multislerp_special_cases():
    base, xs = models(1000, seed=3)
    np.testing.assert_array_equal(K.multislerp(xs[:1], [0.3]), xs[0])  # one model: returned as is
    a, zero = xs[0], np.zeros_like(base)
    # two opposite task vectors with equal weights cancel: mergekit falls back to the weighted sum
    got = K.multislerp([a, -a], [0.5, 0.5], base=zero)
    np.testing.assert_array_equal(got, zero)
    with pytest.raises(ValueError, match="weighted sum of the input tensors is zero"):
        K.multislerp([a, -a, a], [0.5, 0.5, 0.0], base=zero)


@pytest.mark.parametrize("spread", [0.2, 0.002])  # 0.002: nearly parallel inputs (Gram entries near 1)
@pytest.mark.parametrize("n", SIZES[2:])
def test_karcher(isa, threads, n, spread):
    base, xs = models(n, seed=n + 3, spread=spread)
    got, iterations = both(lambda: K.karcher([base] + xs, info=True)[0]), K.karcher([base] + xs, info=True)[1]
    want = O.karcher([f64(base)] + [f64(x) for x in xs])
    assert 1 <= iterations <= 10
    assert np.all(np.abs(got - want) <= 2e-5 * (scale_of(base, xs) + np.abs(want)))


@pytest.mark.parametrize("n", [33, 1025, 70001])  # 70001: >= 65536, the units' reciprocal is tried
@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "mixed"])
def test_karcher_stored_types(isa, threads, n, k, dtype):
    # the iterations read bf16 / f16 inputs in place and form the units in registers (bf16 and f16
    # through a reciprocal checked against the division for every value of the type): the bits are
    # the scalar reference's divisions, signed zeros and values whose units are subnormal included
    base, xs = models(n, k=k - 1, seed=n + k, spread=0.01)
    xs = [base] + xs
    for i, x in enumerate(xs):  # a few +-0 and tiny values at the same places in every input
        x[i::97] = 0.0
        x[i + 1::89] = -0.0
        x[i + 2::83] = 1e-39 * (i + 1)
    ins, vals = _stored(xs, dtype)  # "mixed": float32 first input, bf16 others
    got = both(lambda: K.karcher(ins))
    want = O.karcher([f64(v) for v in vals])
    assert np.all(np.abs(got - want) <= 2e-5 * (scale_of(vals[0], vals[1:]) + np.abs(want)) + 1e-38)  # subnormals


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_karcher_units_range_per_task(isa, threads, k, dtype):
    # the units' range test runs once per task (16384 elements) and later passes skip it where it
    # passed: zeros and tiny values in a few tasks only (those keep testing and dividing), the
    # other tasks on the unchecked, software-pipelined loop; n % 16 != 0 (a scalar tail)
    n = 5 * 16384 + 1003
    base, xs = models(n, k=k - 1, seed=70 + k, spread=0.2)
    xs = [base] + xs
    for i, x in enumerate(xs):
        x[16384 + 5 + i] = 0.0  # task 1
        x[3 * 16384 + 40 + i] = -1e-39 * (i + 1)  # task 3: a subnormal value
        # task 3: every input tiny at the same places (the mean tiny there too), units subnormal
        x[3 * 16384 + 64: 3 * 16384 + 320] = (np.float32(2.0 ** -126) * np.geomspace(1e-2, 200, 256) * (1 + i / 7)).astype(np.float32)
        x[n - 7 + i % 3] = -0.0  # the tail
    ins, vals = _stored(xs, dtype)
    got, iterations = both(lambda: K.karcher(ins)), K.karcher(ins, info=True)[1]
    assert iterations >= (2 if k > 2 else 1)  # k > 2: steps after the first (two inputs: one pass)
    want = O.karcher([f64(v) for v in vals])
    assert np.all(np.abs(got - want) <= 2e-5 * (scale_of(vals[0], vals[1:]) + np.abs(want)) + 1e-38)


def test_karcher_special_cases():
    base, xs = models(500, seed=4)
    np.testing.assert_array_equal(K.karcher([xs[0]]), xs[0])
    z = np.zeros(500, np.float32)
    np.testing.assert_array_equal(K.karcher([z, z]), z)
    # a zero input is left out of the mean but still counts in the mean norm (weights 1/N)
    got = K.karcher([xs[0], z])
    np.testing.assert_allclose(got, xs[0] / 2, rtol=1e-6, atol=1e-7)
    # tol above every angle: one pass, the normalized mean of the units
    got, it = K.karcher(xs, tol=1.0, info=True)
    assert it == 1


@pytest.mark.parametrize("shape", [(300,), (64, 48), (40, 1000)])
def test_arcee_fusion(isa, threads, shape):
    base, (x, *_) = models(0, shape=shape, seed=sum(shape), spread=0.05)
    got, th = both(lambda: K.arcee_fusion(base, x, rows=int(np.prod(shape[:-1])), info=True)[0]), \
        K.arcee_fusion(base, x, rows=int(np.prod(shape[:-1])), info=True)[1]
    imp = O.arcee_importance(f64(base), f64(x))
    want_th = O.arcee_threshold(imp)
    assert abs(th - want_th) <= 1e-2 * want_th
    kept = got != base
    want_kept = imp >= want_th
    near = np.abs(imp - want_th) <= 1e-2 * want_th
    assert np.all((kept == want_kept) | near)
    assert 0 < kept.sum() < kept.size
    # kept: base + (x - base), two roundings at the inputs' scale
    assert np.all(np.abs(f64(got) - x)[kept] <= 2 * U * scale_of(base, [x])[kept])
    np.testing.assert_array_equal(got[~kept], base[~kept])


def torch_norm_emulated(x):
    """torch's float32 2-norm of a contiguous row, from its description (merge_torch_order.h)."""
    f = np.float32
    n = x.size
    full = n - n % 8
    lanes = np.zeros(8, f)
    for row in x[:full].reshape(-1, 8):
        lanes = lanes + (row * row).astype(f)
    b = lanes[0]
    for v in lanes[1:]:
        b = f(b + v)
    for v in x[full:]:
        b = f(b + f(v * v))
    return f(np.sqrt(b))


def torch_sum_emulated(x):
    """torch's float32 cascade sum of a contiguous row, from its description."""
    f = np.float32
    n = x.size
    W = 8 if n >= 8 else 1
    items = x[: n // W * W].reshape(-1, W)
    groups = len(items) // 4
    cl = 1 if groups <= 2 else int(groups - 1).bit_length()
    power = max(4, cl // 4)
    step = 1 << power
    acc = np.zeros((4, 4, W), f)
    i = 0
    while i + step <= groups:
        for _ in range(step):
            acc[0] = (acc[0] + items[4 * i: 4 * i + 4]).astype(f)
            i += 1
        for j in range(1, 4):
            acc[j] = (acc[j] + acc[j - 1]).astype(f)
            acc[j - 1] = 0
            if i & ((step - 1) << (j * power)):
                break
    while i < groups:
        acc[0] = (acc[0] + items[4 * i: 4 * i + 4]).astype(f)
        i += 1
    for j in range(1, 4):
        acc[0] = (acc[0] + acc[j]).astype(f)
    p = acc[0]
    for it in items[groups * 4:]:
        p[0] = (p[0] + it).astype(f)
    for k in range(1, 4):
        p[0] = (p[0] + p[k]).astype(f)
    if W == 1:
        return f(f(0) + p[0][0])
    total = f(0)
    for v in x[len(items) * W:]:
        total = f(total + v)
    for v in p[0]:
        total = f(total + v)
    return f(f(0) + total)


@pytest.mark.parametrize("n", [0, 1, 3, 7, 8, 9, 33, 129, 1000, 16384, 16385, 40000, 70001])
def test_torch_order_reductions(isa, threads, n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 3, n)).astype(np.float32)
    assert K.torch_norm(x) == torch_norm_emulated(x)
    if n:
        assert K.torch_sum(x) == torch_sum_emulated(x)
    # and they are not the accurate values (else the emulation would prove nothing)
    if n >= 16384:
        exact = np.sqrt((x.astype(np.float64) ** 2).sum())
        assert K.torch_norm(x) != np.float32(exact) or K.torch_sum(x) != np.float32(x.astype(np.float64).sum())


def test_exp_log_within_two_ulps():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-87, 88, 200000), rng.uniform(-1, 1, 100000)]).astype(np.float32)
    e = _C.merge_exp_log_f32(x, False)
    want = np.exp(x.astype(np.float64))
    assert np.all(np.abs(e - want) <= 2 * np.spacing(want.astype(np.float32)))
    y = np.abs(rng.standard_normal(300000) * 10.0 ** rng.uniform(-30, 30, 300000)).astype(np.float32)
    y = y[y >= np.finfo(np.float32).tiny]
    lg = _C.merge_exp_log_f32(y, True)
    want = np.log(y.astype(np.float64))
    assert np.all(np.abs(lg - want) <= 2 * np.spacing(np.abs(want).astype(np.float32)))
    special = np.array([0.0, -0.0, -1.0, np.inf, np.nan, -100.0, 89.0], np.float32)
    ex = _C.merge_exp_log_f32(special, False)
    assert ex[0] == 1 and ex[3] == np.inf and np.isnan(ex[4]) and ex[5] == 0 and ex[6] == np.inf
    lg = _C.merge_exp_log_f32(special, True)
    assert lg[0] == -np.inf and lg[1] == -np.inf and np.isnan(lg[2]) and lg[3] == np.inf and np.isnan(lg[4])


@pytest.mark.parametrize("method", ["nearswap", "ram", "ramplus", "sce", "multislerp", "karcher", "arcee"])
def test_file_inputs_and_dtypes_match_arrays(tmp_path, method):
    """Inputs read from a file (pread, chunk by chunk) and bf16 inputs give the same bits as arrays."""
    from llamix.formats.safetensors import SafetensorsCheckpoint
    from safetensors.numpy import save_file

    base, xs = models(40000, seed=7)
    save_file({"b": base, **{f"x{i}": x for i, x in enumerate(xs)}}, str(tmp_path / "m.safetensors"))
    ck = SafetensorsCheckpoint(tmp_path / "m.safetensors")
    fb, fx = ck.ref("b"), [ck.ref(f"x{i}") for i in range(3)]
    run = {
        "nearswap": lambda b, x: K.nearswap(b, x[0], 0.04, out="bfloat16"),
        "ram": lambda b, x: K.ram(b, x, eps=0.04),
        "ramplus": lambda b, x: K.ram(b, x, eps=0.04, plus=True),
        "sce": lambda b, x: K.sce(b, x, 0.5),
        "multislerp": lambda b, x: K.multislerp(x, [0.2, 0.3, 0.5], base=b),
        "karcher": lambda b, x: K.karcher([b] + x),
        "arcee": lambda b, x: K.arcee_fusion(b, x[0], rows=40),
    }[method]
    np.testing.assert_array_equal(run(fb, fx), run(base, xs))
    bf = [(O.f32_to_bf16(a), "bfloat16") for a in [base] + xs]
    as_f32 = [O.bf16_to_f64(a).astype(np.float32) for a, _ in bf]
    np.testing.assert_array_equal(run(bf[0], bf[1:]), run(as_f32[0], as_f32[1:]))


@pytest.mark.parametrize("method", ["multislerp", "multislerp_no_base", "karcher", "arcee", "model_stock"])
def test_resident_and_streaming_paths_agree(tmp_path, isa, threads, method):
    """Multi-pass methods keep a tensor's inputs in memory between passes when they fit the cache
    budget (read from the files once), and read them again on every pass otherwise: the same bits
    either way, from arrays or from files."""
    base, xs = models(40000, seed=11, spread=0.2)
    ck = write_tensors(tmp_path, {"b": ("bf16", O.f32_to_bf16(base)),
                                  **{f"x{i}": ("bf16", O.f32_to_bf16(x)) for i, x in enumerate(xs)}})
    fb, fx = (ck.ref("b"), "bfloat16"), [(ck.ref(f"x{i}"), "bfloat16") for i in range(3)]
    ab, ax = (np.asarray(fb[0]), "bfloat16"), [(np.asarray(r), "bfloat16") for r, _ in fx]
    run = {"multislerp": lambda b, x: K.multislerp(x, [0.2, 0.3, 0.5], base=b),
           "multislerp_no_base": lambda b, x: K.multislerp(x, [0.2, 0.3, 0.5], normalize=False),
           "karcher": lambda b, x: K.karcher([b] + x),
           "arcee": lambda b, x: K.arcee_fusion(b, x[0], rows=40),
           "model_stock": lambda b, x: K.model_stock(b, x, rows=40)}[method]
    arrays = run(ab, ax)
    resident = run(fb, fx)
    with merge_inputs_streamed():
        streamed = run(fb, fx)
    np.testing.assert_array_equal(resident.view(np.uint32), streamed.view(np.uint32))
    np.testing.assert_array_equal(arrays.view(np.uint32), streamed.view(np.uint32))


@pytest.mark.parametrize("n", [7, 40003, 200003])
@pytest.mark.parametrize("types", [("bf16", "bf16"), ("bf16", None), ("f16", "f32"), ("f32", None), ("f16", "bf16")])
def test_multislerp_norm_chains_match_the_feed(tmp_path, isa, threads, n, types):
    """Inputs readable where they are stored (arrays, mapped files): each model's norm is one
    thread's chain over its deltas, formed in registers (kernels().merge.delta_sq_lanes8 plus the
    scalar tail). Streamed from the files (cache budget 0): the deltas go through the ordered feed
    to sq_lanes8. The same bits, for every stored type, with and without a base, n % 8 != 0."""
    xt, bt = types
    conv = {"bf16": O.f32_to_bf16, "f16": lambda a: a.astype(np.float16), "f32": lambda a: a}
    name = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
    base, xs = models(n, seed=n + 5, spread=0.25)
    tensors = {f"x{i}": (xt, conv[xt](x)) for i, x in enumerate(xs[:2])}
    if bt:
        tensors["b"] = (bt, conv[bt](base))
    ck = write_tensors(tmp_path, tensors)
    fx = [(ck.ref(f"x{i}"), name[xt]) for i in range(2)]
    fb = (ck.ref("b"), name[bt]) if bt else None
    ax = [(tensors[f"x{i}"][1], name[xt]) for i in range(2)]
    ab = (tensors["b"][1], name[bt]) if bt else None
    run = lambda b, x: K.multislerp(x, [0.7, 0.4], base=b)  # noqa: E731
    arrays = run(ab, ax)
    mapped = run(fb, fx)
    with merge_inputs_streamed():
        streamed = run(fb, fx)
    np.testing.assert_array_equal(arrays.view(np.uint32), streamed.view(np.uint32))
    np.testing.assert_array_equal(mapped.view(np.uint32), streamed.view(np.uint32))


def _torch_multislerp(xs, w, base, cos_sinc=None):
    """Multi-SLERP in torch float32 (docs/MERGING.md's formula with torch's reductions, one thread),
    as mergekit computes it; cos_sinc=(c, s) replaces cos(|t|) and sin(|t|)/|t|. Also returns |t|."""
    torch = require_peer("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = torch.stack([torch.from_numpy(x) for x in xs])
        if base is not None:
            t = t - torch.from_numpy(base)
        wt = torch.tensor(w, dtype=torch.float32)
        wt = wt / wt.sum()
        norms = torch.norm(t, dim=-1, keepdim=True)
        u = t / (norms + 1e-8)
        mean = (u * wt.view(-1, 1)).sum(0)
        mean = mean / torch.norm(mean)
        dots = (u * mean).sum(-1, keepdim=True)
        tangent = ((u - dots * mean) * wt.view(-1, 1)).sum(0)
        tn = torch.norm(tangent) + 1e-8
        if cos_sinc is None:
            res = mean * torch.cos(tn) + tangent * (torch.sin(tn) / tn)
        else:
            res = mean * cos_sinc[0] + tangent * cos_sinc[1]
        res = res * (norms.squeeze(-1) * wt).sum()
        if base is not None:
            res = res + torch.from_numpy(base)
        return res.numpy(), float(tn)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("crafted", [False, True])
@pytest.mark.parametrize("with_base", [False, True])
def test_multislerp_result_in_the_tangent_pass(tmp_path, isa, threads, crafted, with_base):
    """Tensors up to 2^22 elements get their result in the tangent pass, with cos(|t|) and
    sin(|t|)/|t| taken as 1 (what they round to for the float32 noise that the tangent t is), and the
    result pass runs only when they do not round to 1. crafted: 8 entries of 1 and the rest ~2.3e-4,
    whose squares are lost in torch's 8-lane float32 norm, so the norms are off by ~1e-4 relative
    and |t| is ~2.9e-4, where cos rounds below 1: that result must be the result pass's, also when
    the tangent pass already wrote its guess to the output file. Bit for bit against torch."""
    n = 200003
    rng = np.random.default_rng(7)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    xs = []
    for k in range(2):
        d = sign * 2.3e-4 * (1 + 0.1 * rng.random(n)) if crafted else rng.standard_normal(n) * 0.3
        d = d.astype(np.float32)
        d[:8] = 1.0 + 0.1 * k
        xs.append(d)
    base = (rng.standard_normal(n) * 0.02).astype(np.float32) if with_base else None
    if base is not None:
        xs = [(x + base).astype(np.float32) for x in xs]
    want, tn = _torch_multislerp(xs, [0.6, 0.4], base)
    guess, _ = _torch_multislerp(xs, [0.6, 0.4], base, cos_sinc=(1.0, 1.0))
    cos_is_one = np.float32(np.cos(np.float32(tn))) == 1
    assert cos_is_one != crafted
    assert np.array_equal(guess, want) != crafted  # the crafted case's guess is wrong somewhere
    got = both(lambda: K.multislerp(xs, [0.6, 0.4], base=base))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    path = tmp_path / "out.bin"
    path.write_bytes(bytes(4 * n))
    fd = os.open(path, os.O_WRONLY)
    try:
        assert K.multislerp(xs, [0.6, 0.4], base=base, out="float32", buffer=K.FileTarget(fd, 0)) is None
    finally:
        os.close(fd)
    np.testing.assert_array_equal(np.frombuffer(path.read_bytes(), np.uint32), want.view(np.uint32))
