"""Tensor names of the llama family: GGUF's (llama.cpp's names, llamix's canonical form), Hugging
Face's (transformers' ``LlamaForCausalLM``), the map between them, the shapes a config implies,
and the RoPE row permutation between the two layouts.

GGUF ``llama`` files (and Meta's original checkpoints) rotate adjacent pairs (2i, 2i+1) of each
head; Hugging Face checkpoints, and GGUF files of the architectures llama.cpp runs with NEOX RoPE
(qwen2, qwen3, gemma3, phi3), rotate i with i + head_dim/2 ("rotate half"), so their q/k rows
(and q/k biases and q/k-norm weights) are permuted. llamix's canonical form is adjacent pairs,
with phi3's fused ``attn_qkv`` and ``ffn_up`` (gate then up) split into llama's tensors:
:func:`file_tensor_names` / :func:`file_shapes` are a GGUF file's tensors, :func:`tensor_names` /
:func:`expected_shapes` the canonical ones; :func:`split_fused` and :func:`fuse` convert.
``config`` arguments are any object with llamix's ModelConfig fields.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError

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


# optional per-layer tensors (GGUF suffixes after ``blk.N.``) and the config flag that brings them
OPTIONAL_LAYER_TENSORS = {
    "attn_bias": ("attn_q.bias", "attn_k.bias", "attn_v.bias"),
    "qk_norm": ("attn_q_norm.weight", "attn_k_norm.weight"),
    "post_norms": ("post_attention_norm.weight", "post_ffw_norm.weight"),
}
# phi3's files fuse q/k/v into attn_qkv and gate/up into ffn_up (gate rows first)
FUSED_ARCHITECTURES = ("phi3",)


def layer_tensor_names(config) -> list[str]:
    """The per-layer tensor suffixes (``attn_q.weight``, ``attn_q.bias``, ...) of the canonical form."""
    names = [f"{t}.weight" for t in LAYER_TENSORS]
    for flag, extra in OPTIONAL_LAYER_TENSORS.items():
        if getattr(config, flag, False):
            names += extra
    return names


def tensor_names(config) -> list[str]:
    """The canonical GGUF names of a model's tensors, in file order (no ``output.weight`` when tied)."""
    names = ["token_embd.weight"]
    per_layer = layer_tensor_names(config)
    for i in range(config.n_layers):
        names += [f"blk.{i}.{t}" for t in per_layer]
    names.append("output_norm.weight")
    if not config.tie_embeddings:
        names.append("output.weight")
    return names


def expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Canonical GGUF name -> (rows, columns) of each weight, (n,) of each norm or bias (numpy
    order, not ggml's), for every tensor the architecture may have."""
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    per_layer = {"attn_norm.weight": (c.dim,), "attn_q.weight": (q, c.dim), "attn_k.weight": (kv, c.dim),
                 "attn_v.weight": (kv, c.dim), "attn_output.weight": (c.dim, q), "ffn_norm.weight": (c.dim,),
                 "ffn_gate.weight": (c.hidden_dim, c.dim), "ffn_up.weight": (c.hidden_dim, c.dim),
                 "ffn_down.weight": (c.dim, c.hidden_dim),
                 "attn_q.bias": (q,), "attn_k.bias": (kv,), "attn_v.bias": (kv,),
                 "attn_q_norm.weight": (c.head_dim,), "attn_k_norm.weight": (c.head_dim,),
                 "post_attention_norm.weight": (c.dim,), "post_ffw_norm.weight": (c.dim,)}
    out = {"token_embd.weight": (c.vocab_size, c.dim), "output_norm.weight": (c.dim,),
           "output.weight": (c.vocab_size, c.dim)}
    for i in range(c.n_layers):
        for t, s in per_layer.items():
            out[f"blk.{i}.{t}"] = s
    return out


def is_fused(config) -> bool:
    return getattr(config, "architecture", "llama") in FUSED_ARCHITECTURES


def file_tensor_names(config) -> list[str]:
    """The tensor names a GGUF file of ``config``'s architecture holds (phi3: ``attn_qkv`` in place
    of q/k/v, ``ffn_up`` holding gate and up), in the order llamix writes them."""
    names = tensor_names(config)
    if not is_fused(config):
        return names
    out = []
    for n in names:
        if n.endswith((".attn_k.weight", ".attn_v.weight", ".ffn_gate.weight")):
            continue
        out.append(n.replace(".attn_q.weight", ".attn_qkv.weight"))
    return out


def file_shapes(config) -> dict[str, tuple[int, ...]]:
    """GGUF name -> shape (numpy order) of every tensor :func:`file_tensor_names` lists."""
    shapes = expected_shapes(config)
    if not is_fused(config):
        return shapes
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    for i in range(c.n_layers):
        shapes[f"blk.{i}.attn_qkv.weight"] = (q + 2 * kv, c.dim)
        shapes[f"blk.{i}.ffn_up.weight"] = (2 * c.hidden_dim, c.dim)
    return shapes


def fused_parts(name: str, config) -> list[tuple[str, int, int]] | None:
    """For a fused file tensor: [(canonical name, first row, end row), ...] in row order; else None."""
    if not is_fused(config):
        return None
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    if name.endswith(".attn_qkv.weight"):
        b = name[:-len("attn_qkv.weight")]
        return [(b + "attn_q.weight", 0, q), (b + "attn_k.weight", q, q + kv), (b + "attn_v.weight", q + kv, q + 2 * kv)]
    if name.endswith(".ffn_up.weight"):
        b = name[:-len("ffn_up.weight")]
        return [(b + "ffn_gate.weight", 0, c.hidden_dim), (b + "ffn_up.weight", c.hidden_dim, 2 * c.hidden_dim)]
    return None


def hf_name(gguf_name: str) -> str:
    """``blk.3.attn_k.weight`` -> ``model.layers.3.self_attn.k_proj.weight`` (ValueError otherwise)."""
    if gguf_name in _GLOBAL:
        return _GLOBAL[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_LAYER_TO_HF and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{_GGUF_LAYER_TO_HF[parts[2]]}.weight"
    raise FormatError(f"tensor {gguf_name!r} is not a llama-architecture GGUF tensor name")


def gguf_name(hf: str) -> str:
    """A Hugging Face llama tensor name -> its GGUF name (ValueError for anything else)."""
    if hf in _GLOBAL_HF:
        return _GLOBAL_HF[hf]
    parts = hf.split(".")
    if len(parts) >= 5 and parts[0] == "model" and parts[1] == "layers" and parts[-1] == "weight":
        kind = ".".join(parts[3:-1])
        if kind in HF_LAYER_NAMES:
            return f"blk.{parts[2]}.{HF_LAYER_NAMES[kind]}.weight"
    raise FormatError(f"tensor {hf!r} has no GGUF name (only llama-architecture models can be written as GGUF)")


def rotate_half_to_pairs(w: np.ndarray, n_heads: int) -> np.ndarray:
    """(rows, k) q or k weight in Hugging Face's rotate-half order -> GGUF's adjacent-pair order:
    within each head, row i of the first half goes to 2i and row i + head_dim/2 to 2i + 1.
    A 1-D array (a bias, or a q/k-norm weight with ``n_heads=1``) is permuted the same way; so are
    the byte rows of a block-quantized weight (rows are independent)."""
    rows = w.shape[0]
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def pairs_to_rotate_half(w: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of :func:`rotate_half_to_pairs`: rows 2i and 2i + 1 of each head go to i and
    i + head_dim/2."""
    rows = w.shape[0]
    hd = rows // n_heads
    return w.reshape(n_heads, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_heads(name: str, config) -> int | None:
    """How many RoPE heads a tensor's rows hold, for the tensors whose order RoPE fixes (q/k weights
    and biases: n_heads / n_kv_heads; q/k-norm weights: 1 head); None for every other tensor."""
    if name.endswith((".attn_q.weight", ".attn_q.bias")):
        return config.n_heads
    if name.endswith((".attn_k.weight", ".attn_k.bias")):
        return config.n_kv_heads
    if name.endswith((".attn_q_norm.weight", ".attn_k_norm.weight")):
        return 1
    return None


def file_rows_to_pairs(name: str, w: np.ndarray, config) -> np.ndarray:
    """A canonical-named tensor read from a GGUF file, in adjacent-pair order: permuted for the
    NEOX architectures (see :func:`rope_heads`), unchanged otherwise."""
    heads = rope_heads(name, config) if getattr(config, "rope_neox", False) else None
    return w if heads is None else rotate_half_to_pairs(w, heads)


def pairs_to_file_rows(name: str, w: np.ndarray, config) -> np.ndarray:
    """The inverse of :func:`file_rows_to_pairs`, for writing a GGUF file."""
    heads = rope_heads(name, config) if getattr(config, "rope_neox", False) else None
    return w if heads is None else pairs_to_rotate_half(w, heads)


def hf_rows_to_gguf(gguf_name: str, w: np.ndarray, config) -> np.ndarray:
    """A weight read from a Hugging Face checkpoint in GGUF's row order: q (n_heads) and k
    (n_kv_heads) rows permuted for adjacent-pair RoPE, every other tensor unchanged."""
    if gguf_name.endswith(".attn_q.weight"):
        return rotate_half_to_pairs(w, config.n_heads)
    if gguf_name.endswith(".attn_k.weight"):
        return rotate_half_to_pairs(w, config.n_kv_heads)
    return w
