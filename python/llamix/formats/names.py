"""Tensor names of the llama family: GGUF's (llama.cpp's ``LLM_ARCH_LLAMA`` names, llamix's
canonical form), Hugging Face's (transformers' ``LlamaForCausalLM``), the map between them, the
shapes a config implies, and the RoPE row permutation between the two layouts.

GGUF (and Meta's original checkpoints) rotate adjacent pairs (2i, 2i+1) of each head; Hugging
Face checkpoints rotate i with i + head_dim/2 ("rotate half"), so their q/k rows are permuted.
``config`` arguments are any object with llamix's ModelConfig fields.
"""
from __future__ import annotations

import numpy as np

# per-layer tensors, in the order the forward pass takes them
LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")

# Hugging Face module path inside a decoder layer -> GGUF per-layer name
HF_LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}
_GGUF_LAYER_TO_HF = {v: k for k, v in HF_LAYER_NAMES.items()}
# whole-model tensors: GGUF name -> Hugging Face name
_GLOBAL = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
           "output.weight": "lm_head.weight"}
_GLOBAL_HF = {v: k for k, v in _GLOBAL.items()}


def tensor_names(config) -> list[str]:
    """The GGUF names of a model's tensors, in file order (no ``output.weight`` when tied)."""
    names = ["token_embd.weight"]
    for i in range(config.n_layers):
        names += [f"blk.{i}.{t}.weight" for t in LAYER_TENSORS]
    names.append("output_norm.weight")
    if not config.tie_embeddings:
        names.append("output.weight")
    return names


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """GGUF name -> (rows, columns) of each weight, (n,) of each norm (numpy order, not ggml's)."""
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    per_layer = {"attn_norm": (c.dim,), "attn_q": (q, c.dim), "attn_k": (kv, c.dim), "attn_v": (kv, c.dim),
                 "attn_output": (c.dim, q), "ffn_norm": (c.dim,), "ffn_gate": (c.hidden_dim, c.dim),
                 "ffn_up": (c.hidden_dim, c.dim), "ffn_down": (c.dim, c.hidden_dim)}
    out = {"token_embd.weight": (c.vocab_size, c.dim), "output_norm.weight": (c.dim,),
           "output.weight": (c.vocab_size, c.dim)}
    for i in range(c.n_layers):
        for t, s in per_layer.items():
            out[f"blk.{i}.{t}.weight"] = s
    return out


def hf_name(gguf_name: str) -> str:
    """``blk.3.attn_k.weight`` -> ``model.layers.3.self_attn.k_proj.weight`` (ValueError otherwise)."""
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_LAYER_TO_HF and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{_GGUF_LAYER_TO_HF[parts[2]]}.weight"
    raise ValueError(f"tensor {gguf_name!r} is not a llama-architecture GGUF tensor name")


def gguf_name(hf: str) -> str:
    """A Hugging Face llama tensor name -> its GGUF name (ValueError for anything else)."""
    if hf in _GLOBAL_HF:
        return _GLOBAL_HF[hf]
    parts = hf.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers" and parts[-1] == "weight":
        kind = ".".join(parts[3:-1])
        if kind in HF_LAYER_NAMES:
            return f"blk.{parts[2]}.{HF_LAYER_NAMES[kind]}.weight"
    raise ValueError(f"tensor {hf!r} has no GGUF name (only llama-architecture models can be written as GGUF)")


def rotate_half_to_pairs(w: np.ndarray, n_heads: int) -> np.ndarray:
    """(rows, k) q or k weight in Hugging Face's rotate-half order -> GGUF's adjacent-pair order:
    within each head, row i of the first half goes to 2i and row i + head_dim/2 to 2i + 1."""
    rows, k = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, k).swapaxes(1, 2).reshape(rows, k)


def hf_rows_to_gguf(gguf_name: str, w: np.ndarray, config) -> np.ndarray:
    """A weight read from a Hugging Face checkpoint in GGUF's row order: q (n_heads) and k
    (n_kv_heads) rows permuted for adjacent-pair RoPE, every other tensor unchanged."""
    if gguf_name.endswith(".attn_q.weight"):
        return rotate_half_to_pairs(w, config.n_heads)
    if gguf_name.endswith(".attn_k.weight"):
        return rotate_half_to_pairs(w, config.n_kv_heads)
    return w
