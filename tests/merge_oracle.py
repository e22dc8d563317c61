"""float64 numpy oracles for the merge methods, written from the formulas in
shared/MERGE_METHODS.md (mergekit 0.1.5 semantics), independent of llamix: numpy only (and the
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
