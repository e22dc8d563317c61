"""An independent float64 numpy LLaMA forward pass over a llama2.c checkpoint (read here with
numpy, not with llamix's reader), written from llama2.c's run.c: RMSNorm, RoPE on adjacent
pairs, grouped-query causal attention, SwiGLU, shared or separate classifier."""
from __future__ import annotations

import numpy as np


def read_llama2c(path) -> dict:
    raw = np.fromfile(path, dtype=np.uint8)
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = raw[:28].view(np.int32).tolist()
    shared = vocab > 0
    vocab = abs(vocab)
    f = raw[28:].view(np.float32).astype(np.float64)
    hd = dim // n_heads
    kv_dim = n_kv * hd
    sizes = [("emb", (vocab, dim)), ("rms_att", (n_layers, dim)), ("wq", (n_layers, dim, dim)),
             ("wk", (n_layers, kv_dim, dim)), ("wv", (n_layers, kv_dim, dim)), ("wo", (n_layers, dim, dim)),
             ("rms_ffn", (n_layers, dim)), ("w1", (n_layers, hidden, dim)), ("w2", (n_layers, dim, hidden)),
             ("w3", (n_layers, hidden, dim)), ("rms_final", (dim,)), ("freq_re", (seq_len, hd // 2)),
             ("freq_im", (seq_len, hd // 2))]
    w, off = {}, 0
    for name, shape in sizes:
        n = int(np.prod(shape))
        w[name] = f[off:off + n].reshape(shape)
        off += n
    w["cls"] = w["emb"] if shared else f[off:off + vocab * dim].reshape(vocab, dim)
    w["cfg"] = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv, vocab=vocab, hd=hd)
    return w


def rmsnorm(x, g, eps=1e-5):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x, pos, hd, theta=10000.0):
    """x: (T, heads, hd); rotate adjacent pairs (2i, 2i+1) by pos * theta^(-2i/hd)."""
    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def logits(w: dict, ids, taps: dict | None = None) -> np.ndarray:
    """(T, vocab) float64 logits of a sequence starting at position 0. ``taps``, if given, receives
    each layer's matmul inputs: taps[(layer, "attn_in" | "attn_out" | "ffn_in" | "down_in")] = (T, k)."""
    tap = (lambda key, a: taps.__setitem__(key, a)) if taps is not None else (lambda key, a: None)  # noqa: E731
    c = w["cfg"]
    T, hd, H, KV = len(ids), c["hd"], c["n_heads"], c["n_kv"]
    pos = np.arange(T, dtype=np.float64)
    x = w["emb"][np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(c["n_layers"]):
        h = rmsnorm(x, w["rms_att"][l])
        tap((l, "attn_in"), h)
        q = rope((h @ w["wq"][l].T).reshape(T, H, hd), pos, hd)
        k = rope((h @ w["wk"][l].T).reshape(T, KV, hd), pos, hd)
        v = (h @ w["wv"][l].T).reshape(T, KV, hd)
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * hd)
        tap((l, "attn_out"), o)
        x = x + o @ w["wo"][l].T
        h = rmsnorm(x, w["rms_ffn"][l])
        tap((l, "ffn_in"), h)
        g = h @ w["w1"][l].T
        d = (g / (1 + np.exp(-g))) * (h @ w["w3"][l].T)
        tap((l, "down_in"), d)
        x = x + d @ w["w2"][l].T
    return rmsnorm(x, w["rms_final"]) @ w["cls"].T
