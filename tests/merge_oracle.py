"""float64 numpy oracles for the merge methods, written from the formulas in
docs/MERGING.md (mergekit 0.1.5 semantics), independent of llamix: numpy only (and the
numpy bf16 helpers of helpers.py), never llamix's kernels or arithmetic (test_merge_kernels.py
checks that importing it loads no llamix module). Top-k / magnitude selections (TIES,
breadcrumbs) rank by sorting |delta| in float64 (rank_keep); della's rank-dependent keep
probabilities are checked against np.argsort ranks in test_merge_kernels.py."""
from __future__ import annotations

import numpy as np

from helpers import bf16_to_f64, f32_to_bf16  # noqa: F401 - part of this module's interface


def linear(xs, w, normalize=True):
    out = sum(wi * x for wi, x in zip(w, xs))
    return out / sum(w) if normalize else out


def slerp(v0, v1, t, threshold=0.9995, eps=1e-8):
    n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
    n0 = n0 if n0 > eps else 1.0
    n1 = n1 if n1 > eps else 1.0
    d = np.clip(np.sum((v0 / n0) * (v1 / n1)), -1, 1)
    if abs(d) > threshold:
        return (1 - t) * v0 + t * v1
    th = np.arccos(d)
    return np.sin((1 - t) * th) / np.sin(th) * v0 + np.sin(t * th) / np.sin(th) * v1


def nuslerp_vectors(v0, v1, t):
    """rows of v0/v1 are the vectors"""
    n0 = np.maximum(np.linalg.norm(v0, axis=-1, keepdims=True), 1e-7)
    n1 = np.maximum(np.linalg.norm(v1, axis=-1, keepdims=True), 1e-7)
    c = np.clip(np.sum((v0 / n0) * (v1 / n1), axis=-1, keepdims=True), -1, 1)
    colinear = 1 - c * c <= 1e-16
    th = np.arccos(np.where(colinear, 0, c))
    with np.errstate(divide="ignore", invalid="ignore"):
        res = (np.sin((1 - t) * th) * v0 + np.sin(t * th) * v1) / np.sin(th)
    return np.where(colinear, (1 - t) * v0 + t * v1, res)


def rank_keep(delta, r0, r1):
    """Keep ranks [r0, r1) of |delta| ascending, equal magnitudes ordered by index (the tie rule).
    ``delta`` as the merge computes it (x - base in the working dtype, float32); its magnitudes
    are sorted in float64 (exact for float32 values), a stable sort keeping equal ones in index
    order."""
    flat = np.abs(np.asarray(delta, np.float64).ravel())
    order = np.argsort(flat, kind="stable")  # primary |delta|, then index
    keep = np.zeros(flat.size, bool)
    keep[order[r0:r1]] = True
    return keep.reshape(delta.shape)


def topk_range(n, density):
    """mergekit's magnitude(): ranks kept (ascending) for density."""
    if density >= 1:
        return 0, n
    if density <= 0:
        return 0, 0
    k = max(1, int(density * n))
    return n - k, n


def breadcrumbs_range(n, density, gamma):
    if density >= 1:
        return 0, n
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    return n_bot, n_bot + target


def task_vectors(base, xs, weights, masks=None, consensus=None, rescale=False, normalize=False, lam=1.0):
    """The generalized task-arithmetic pipeline in float64; masks: list of bool arrays or None."""
    deltas = []
    for i, x in enumerate(xs):
        d = x - base
        if masks is not None and masks[i] is not None:
            m = d * masks[i]
            if rescale:
                before, after = np.abs(d).sum(), np.abs(m).sum()
                if before >= 1e-7 and after >= 1e-7:
                    m = m * (before / after)
            d = m
        deltas.append(d * weights[i])
    D = np.stack(deltas)
    w = np.asarray(weights, np.float64).reshape((-1,) + (1,) * base.ndim)
    if consensus:
        # The vote is a sign decision: near-ties must be decided the way float32 decides them
        # (mergekit sums the weighted deltas in the working dtype, in model order).
        D32 = [(x.astype(np.float32) - base.astype(np.float32)) for x in xs]
        if masks is not None:
            D32 = [d * m if m is not None else d for d, m in zip(D32, masks)]
        D32 = [(d * np.float32(s)) * np.float32(wt) for d, s, wt in zip(D32, _scales(xs, base, masks, rescale), weights)]
        vote = D32[0].copy() if consensus == "sum" else np.sign(D32[0])
        for d in D32[1:]:
            vote = vote + (d if consensus == "sum" else np.sign(d))
        sigma = np.where(vote >= 0, 1.0, -1.0)
        agree = np.sign(D) == sigma
        mixed = (D * agree).sum(0)
        div = (w * agree).sum(0)
        div[div == 0] = 1
    else:
        mixed = D.sum(0)
        div = w.sum()
        if abs(div) < 1e-8:
            div = 1.0
    if normalize:
        mixed = mixed / div
    return base + lam * mixed


def _scales(xs, base, masks, rescale):
    out = []
    for i, x in enumerate(xs):
        d = x - base
        s = 1.0
        if rescale and masks is not None and masks[i] is not None:
            before, after = np.abs(d).sum(), np.abs(d * masks[i]).sum()
            if before >= 1e-7 and after >= 1e-7:
                s = before / after
        out.append(s)
    return out


def model_stock(base, xs, filter_wise=False):
    shape = base.shape
    if filter_wise:
        b = base.reshape(1, -1) if base.ndim == 1 else base
        ws = [x.reshape(b.shape) for x in xs]
    else:
        b = base.reshape(1, -1)
        ws = [x.reshape(1, -1) for x in xs]
    offs = [w - b for w in ws]
    cos = []
    for i in range(len(offs)):
        for j in range(i + 1, len(offs)):
            num = (offs[i] * offs[j]).sum(-1)
            den = np.maximum(np.linalg.norm(offs[i], axis=-1) * np.linalg.norm(offs[j], axis=-1), 1e-6)
            cos.append(np.clip(num / den, -1, 1))
    c = np.mean(cos, axis=0)[:, None]
    n = len(xs)
    den = 1 + (n - 1) * c
    t = np.where(np.abs(den) < 1e-6, 0.0, n * c / np.where(np.abs(den) < 1e-6, 1, den))
    avg = sum(ws) / n
    return (t * avg + (1 - t) * b).reshape(shape)


# --- nearswap, RAM, SCE, Multi-SLERP, Karcher, Arcee Fusion (docs/MERGING.md) --------------------
# Discrete decisions (|d| > eps, the SCE vote, the top-k by variance) are taken on the float32
# values the kernels see, so that the oracle and the kernel decide alike at the boundary.

def nearswap(a, b, t):
    w = np.clip(t / np.maximum(np.abs(a - b), 1e-6), 0, 1)
    return w * b + (1 - w) * a


def ram(base, xs, eps, r=None, alpha=None):
    """RAM (r None) or RAM+ tensor-local."""
    d32 = np.stack([x.astype(np.float32) - base.astype(np.float32) for x in xs])
    nz = np.abs(d32) > np.float32(eps)
    c = nz.sum(0)
    d = np.stack([x - base for x in xs]) * nz
    lam = np.ones(len(xs))
    if r is not None:
        flat_nz = nz.reshape(len(xs), -1)
        shared = (flat_nz & (c.reshape(-1) > 1)).sum(1)
        unique = (flat_nz & (c.reshape(-1) == 1)).sum(1)
        lam = 1 + r * np.clip(shared / np.maximum(unique, eps), 0, alpha)
    lam = lam.reshape((-1,) + (1,) * base.ndim)
    return base + (d * (c == 1) * lam + d * (c > 1) / np.maximum(c, 1)).sum(0)


def topk_keep(values, k):
    """Keep the k largest values; equal values rank by index (the later ones are kept)."""
    flat = np.asarray(values, np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    keep = np.zeros(flat.size, bool)
    if k > 0:
        keep[order[flat.size - k:]] = True
    return keep.reshape(np.shape(values))


def sce(base, xs, select_topk=1.0):
    d32 = np.stack([x.astype(np.float32) - base.astype(np.float32) for x in xs])
    d = d32.astype(np.float64)
    if select_topk < 1:
        var = d.var(0)
        k = int(np.float32(np.float32(np.count_nonzero(var)) * np.float32(select_topk))) if select_topk > 0 else 0
        keep = topk_keep(var.astype(np.float32), k)
        d, d32 = d * keep, d32 * keep
    w = (d ** 2).reshape(len(xs), -1).mean(1)
    w = np.full(len(xs), 1 / len(xs)) if abs(w.sum()) < 1e-6 else w / w.sum()
    vote = d32[0].copy()
    for x in d32[1:]:
        vote = vote + x
    sigma = np.where(vote >= 0, 1.0, -1.0)
    e = w.reshape((-1,) + (1,) * base.ndim) * (np.sign(d) == sigma)
    return base + (d * e).sum(0) / np.maximum(e.sum(0), 1e-6)


def multislerp(xs, weights, base=None, normalize=True, eps=1e-8):
    if len(xs) == 1:
        return xs[0]
    t = np.stack([x.ravel() - (base.ravel() if base is not None else 0) for x in xs])
    w = np.asarray(weights, np.float64)
    if normalize:
        w = w / w.sum()
    norms = np.linalg.norm(t, axis=1, keepdims=True)
    u = t / (norms + eps)
    mean = (u * w[:, None]).sum(0)
    mean = mean / np.linalg.norm(mean)
    tangent = ((u - (u @ mean)[:, None] * mean) * w[:, None]).sum(0)
    tn = np.linalg.norm(tangent) + eps
    res = (mean * np.cos(tn) + tangent * np.sin(tn) / tn) * (norms[:, 0] * w).sum()
    res = res.reshape(xs[0].shape)
    return res + base if base is not None else res


def karcher(xs, max_iter=10, tol=1e-5):
    if len(xs) == 1:
        return xs[0]
    norms = [np.linalg.norm(x) for x in xs]
    units = [x.ravel() / n if n else np.zeros(x.size) for x, n in zip(xs, norms)]
    valid = [i for i, n in enumerate(norms) if n > tol]
    alpha = 1 / len(valid)
    mean = sum(alpha * units[i] for i in valid)
    mean = units[valid[0]] if np.linalg.norm(mean) < tol else mean / np.linalg.norm(mean)
    for _ in range(max_iter):
        tangent = np.zeros_like(mean)
        for i in valid:
            dot = np.clip(mean @ units[i], -1, 1)
            theta = np.arccos(dot)
            if theta < tol:
                continue
            tangent += alpha * theta / np.sin(theta) * (units[i] - dot * mean)
        tn = np.linalg.norm(tangent)
        if tn < tol:
            break
        mean = np.cos(tn) * mean + np.sin(tn) * tangent / tn
        un = np.linalg.norm(mean)
        if un > tol:
            mean = mean / un
    return (sum(norms) / len(xs) * mean).reshape(xs[0].shape)


def arcee_importance(base, x):
    """|x - base| times the KL divergence of softmax(x) + 1e-8 from softmax(base) + 1e-8 per row."""
    def softmax(v):
        e = np.exp(v - v.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    p, q = softmax(x) + 1e-8, softmax(base) + 1e-8
    return np.abs(x - base) * (p * np.log(p / q)).sum(-1, keepdims=True)


def arcee_threshold(importance):
    s = np.sort(importance.ravel())
    q1, med, q3 = (s[int(np.floor(q * (s.size - 1)))] for q in (0.25, 0.5, 0.75))
    return med + 1.5 * (q3 - q1)
