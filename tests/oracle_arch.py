"""An independent float64 numpy forward pass of the GGUF architectures llamix runs (llama, qwen2,
qwen3, gemma3, phi3), reading the file with gguf-py (not llamix's reader) and computing in the
file's own layout: q/k rows as stored, so the NEOX architectures rotate halves (i with
i + head_dim/2) as transformers' ``rotate_half`` does, llama rotates adjacent pairs; phi3's fused
``attn_qkv`` / ``ffn_up`` (gate rows first) split here. Written from the models' definitions
(transformers' Qwen2/Qwen3/Gemma3Text/Phi3 modeling, llama.cpp's GGUF conventions):

- qwen2: q/k/v projections with biases.
- qwen3: per-head RMSNorm of q and k (weights over head_dim) before RoPE.
- gemma3: embeddings times sqrt(dim); q/k norm; RMSNorm of the attention and FFN outputs before
  each residual add; GELU(tanh) gate; every 6th layer (i % 6 == 5) global with rope.freq_base,
  the others see the last ``sliding_window`` positions and rotate with base 10000. GGUF norms hold
  transformers' (1 + w) already (llama.cpp's converter adds the 1).
- phi3 (and llama with a window, Mistral): the window on every layer.
"""
from __future__ import annotations

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

NEOX = ("qwen2", "qwen3", "gemma3", "phi3")


def _meta(r: GGUFReader, key: str, default=None):
    f = r.fields.get(key)
    return default if f is None else f.contents()


def read(path) -> dict:
    """Hyper-parameters and float64 tensors (numpy order) of a GGUF file."""
    r = GGUFReader(str(path))
    arch = _meta(r, "general.architecture")
    g = lambda k, d=None: _meta(r, f"{arch}.{k}", d)  # noqa: E731
    dim, n_heads = int(g("embedding_length")), int(g("attention.head_count"))
    hp = dict(arch=arch, dim=dim, n_layers=int(g("block_count")), n_heads=n_heads,
              n_kv=int(g("attention.head_count_kv", n_heads)), hidden=int(g("feed_forward_length")),
              hd=int(g("attention.key_length", g("rope.dimension_count", dim // n_heads))),
              eps=float(g("attention.layer_norm_rms_epsilon")), theta=float(g("rope.freq_base", 10000.0)),
              theta_local=float(g("rope.freq_base_swa", 10000.0)), window=int(g("attention.sliding_window", 0)))
    t = {}
    for ten in r.tensors:
        shape = tuple(int(s) for s in reversed(ten.shape.tolist()))
        data = np.asarray(ten.data)
        if ten.tensor_type.name in ("F32", "F16"):
            w = data.astype(np.float64)
        else:
            w = dequantize(data, ten.tensor_type).astype(np.float64)
        t[ten.name] = w.reshape(shape)
    return {"hp": hp, "t": t}


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, pos, theta, neox: bool):
    """x: (T, heads, hd). Pairs (2i, 2i+1) or halves (i, i + hd/2) rotated by pos * theta^(-2i/hd)."""
    hd = x.shape[-1]
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = (x[..., :hd // 2], x[..., hd // 2:]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * c - b * s, a * s + b * c
    if neox:
        return np.concatenate([ra, rb], axis=-1)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = ra, rb
    return out


def silu(x):
    return x / (1 + np.exp(-x))


def gelu_tanh(x):
    with np.errstate(over="ignore"):  # 0.5 x (1 + tanh(u)) == x / (1 + exp(-2u))
        return x / (1 + np.exp(-2 * np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def layer_window(hp: dict, i: int) -> int:
    if hp["arch"] == "gemma3":
        return hp["window"] if i % 6 < 5 else 0
    return hp["window"] if hp["arch"] in ("llama", "phi3") else 0


def logits(model: dict, ids) -> np.ndarray:
    """(T, vocab) float64 logits of a sequence starting at position 0."""
    hp, t = model["hp"], model["t"]
    arch, T, hd, H, KV, eps = hp["arch"], len(ids), hp["hd"], hp["n_heads"], hp["n_kv"], hp["eps"]
    neox = arch in NEOX
    pos = np.arange(T, dtype=np.float64)
    x = t["token_embd.weight"][np.asarray(ids)]
    if arch == "gemma3":
        x = x * np.sqrt(hp["dim"])
    i_idx, j_idx = np.arange(T)[:, None], np.arange(T)[None, :]
    for l in range(hp["n_layers"]):
        b = f"blk.{l}."
        h = rmsnorm(x, t[b + "attn_norm.weight"], eps)
        if arch == "phi3":
            qkv = h @ t[b + "attn_qkv.weight"].T
            q, k, v = np.split(qkv, [H * hd, H * hd + KV * hd], axis=1)
        else:
            q, k, v = (h @ t[b + f"attn_{n}.weight"].T for n in "qkv")
        if arch == "qwen2":
            q, k, v = q + t[b + "attn_q.bias"], k + t[b + "attn_k.bias"], v + t[b + "attn_v.bias"]
        q, k, v = q.reshape(T, H, hd), k.reshape(T, KV, hd), v.reshape(T, KV, hd)
        if arch in ("qwen3", "gemma3"):
            q, k = rmsnorm(q, t[b + "attn_q_norm.weight"], eps), rmsnorm(k, t[b + "attn_k_norm.weight"], eps)
        window = layer_window(hp, l)
        theta = hp["theta_local"] if arch == "gemma3" and window else hp["theta"]
        q, k = rope(q, pos, theta, neox), rope(k, pos, theta, neox)
        k, v = np.repeat(k, H // KV, axis=1), np.repeat(v, H // KV, axis=1)
        allowed = j_idx <= i_idx
        if window:
            allowed &= (i_idx - j_idx) < window
        mask = np.where(allowed, 0.0, -np.inf)
        att = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, H * hd) @ t[b + "attn_output.weight"].T
        if arch == "gemma3":
            o = rmsnorm(o, t[b + "post_attention_norm.weight"], eps)
        x = x + o
        h = rmsnorm(x, t[b + "ffn_norm.weight"], eps)
        if arch == "phi3":
            gate, up = np.split(h @ t[b + "ffn_up.weight"].T, 2, axis=1)
        else:
            gate, up = h @ t[b + "ffn_gate.weight"].T, h @ t[b + "ffn_up.weight"].T
        f = ((gelu_tanh(gate) if arch == "gemma3" else silu(gate)) * up) @ t[b + "ffn_down.weight"].T
        if arch == "gemma3":
            f = rmsnorm(f, t[b + "post_ffw_norm.weight"], eps)
        x = x + f
    head = t.get("output.weight", t["token_embd.weight"])
    return rmsnorm(x, t["output_norm.weight"], eps) @ head.T
