"""Tensor names of the llama family: GGUF's (llama.cpp's names, llamix's canonical form), Hugging
Face's (transformers' ``LlamaForCausalLM``), the map between them, the shapes a config implies,
and the RoPE row permutation between the two layouts.

GGUF ``llama`` files (and Meta's original checkpoints) rotate adjacent pairs (2i, 2i+1) of each
head; Hugging Face checkpoints, and GGUF files of the architectures llama.cpp runs with NEOX RoPE
(qwen2, qwen3, gemma3, phi3), rotate i with i + head_dim/2 ("rotate half"), so their q/k rows
(and q/k biases and q/k-norm weights) are permuted. llamix's canonical form is adjacent pairs,
with phi3's fused ``attn_qkv`` and ``ffn_up`` (gate then up) split into llama's tensors:
:func:`file_tensor_names` / :func:`file_shapes` are a GGUF file's tensors, :func:`tensor_names` /
:func:`expected_shapes` the canonical ones; :func:`fused_parts` splits.

Hugging Face checkpoints name tensors per architecture (:data:`HF_LAYER_NAMES_BY_ARCH`: qwen2's
q/k/v biases, qwen3's and gemma3's q/k norms, gemma3's four norms per layer, phi3's fused
``qkv_proj`` and ``gate_up_proj``, which hold the rows of GGUF's ``attn_qkv`` / ``ffn_up`` in the
same order); their q/k rows are in rotate-half order whatever the architecture, and Gemma's norms
hold w where the model computes x * (1 + w) (GGUF files hold 1 + w, as llama.cpp's converter
writes them: :func:`hf_norm_offset`). ``config`` arguments are any object with llamix's
ModelConfig fields.
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


# Hugging Face tensor names inside a decoder layer -> the GGUF file's per-layer names, per
# architecture (llama.cpp's names for each; phi3's fused tensors are the file's, split as a GGUF
# file's are: fused_parts)
_HF_LLAMA = {f"{k}.weight": f"{v}.weight" for k, v in HF_LAYER_NAMES.items()}
_HF_QK_NORM = {"self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight"}
HF_LAYER_NAMES_BY_ARCH: dict[str, dict[str, str]] = {
    "llama": _HF_LLAMA,
    "qwen2": {**_HF_LLAMA, "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
              "self_attn.v_proj.bias": "attn_v.bias"},
    "qwen3": {**_HF_LLAMA, **_HF_QK_NORM},
    # Gemma: post_attention_layernorm normalises the attention output; pre_feedforward_layernorm
    # is llama's ffn_norm
    "gemma3": {**{k: v for k, v in _HF_LLAMA.items() if v != "ffn_norm.weight"}, **_HF_QK_NORM,
               "post_attention_layernorm.weight": "post_attention_norm.weight",
               "pre_feedforward_layernorm.weight": "ffn_norm.weight",
               "post_feedforward_layernorm.weight": "post_ffw_norm.weight"},
    "phi3": {"input_layernorm.weight": "attn_norm.weight", "self_attn.qkv_proj.weight": "attn_qkv.weight",
             "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
             "mlp.gate_up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"},
}
_GGUF_TO_HF_BY_ARCH = {a: {v: k for k, v in t.items()} for a, t in HF_LAYER_NAMES_BY_ARCH.items()}

# where a Hugging Face folder keeps its text model: (prefix of embed_tokens / layers / norm, head name):
# a causal LM; an image-text Gemma-3 under the module paths transformers' Gemma3ForConditionalGeneration
# has in memory; as published (and as transformers saves it)
HF_TEXT_LAYOUTS = (("model.", "lm_head.weight"), ("model.language_model.", "lm_head.weight"),
                   ("language_model.model.", "language_model.lm_head.weight"))


def _layer_table(architecture: str, table: dict) -> dict:
    if architecture not in table:
        raise ValueError(f"architecture {architecture!r} has no Hugging Face tensor names "
                         f"(known: {', '.join(HF_LAYER_NAMES_BY_ARCH)})")
    return table[architecture]


def hf_name(gguf_name: str, architecture: str = "llama", prefix: str = "model.", head: str = "lm_head.weight") -> str:
    """A GGUF file's tensor name -> the Hugging Face name (``blk.3.attn_k.weight`` ->
    ``model.layers.3.self_attn.k_proj.weight``; phi3's ``blk.3.attn_qkv.weight`` ->
    ``model.layers.3.self_attn.qkv_proj.weight``). ``prefix`` / ``head``: one of
    :data:`HF_TEXT_LAYOUTS`. ValueError for a name the architecture does not have."""
    names = _layer_table(architecture, _GGUF_TO_HF_BY_ARCH)
    if gguf_name == "output.weight":
        return head
    if gguf_name in _GLOBAL:
        return prefix + _GLOBAL[gguf_name][len("model."):]
    parts = gguf_name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in names:
        return f"{prefix}layers.{parts[1]}.{names[parts[2]]}"
    raise FormatError(f"tensor {gguf_name!r} is not a {architecture}-architecture GGUF tensor name")


def gguf_name(hf: str, architecture: str = "llama") -> str:
    """A Hugging Face tensor name (``model.`` layout) -> its GGUF file name (ValueError for
    anything else)."""
    names = _layer_table(architecture, HF_LAYER_NAMES_BY_ARCH)
    if hf in _GLOBAL_HF:
        return _GLOBAL_HF[hf]
    parts = hf.split(".", 3)
    if len(parts) == 4 and parts[0] == "model" and parts[1] == "layers" and parts[2].isdigit() and parts[3] in names:
        return f"blk.{parts[2]}.{names[parts[3]]}"
    raise FormatError(f"tensor {hf!r} has no GGUF name (not part of a {architecture}-architecture model)")


def hf_norm_offset(architecture: str) -> float:
    """What a Hugging Face checkpoint's RMSNorm weights lack of GGUF's: Gemma computes
    x * (1 + w), so its GGUF norms (every ``*norm.weight``, q/k norms included) hold 1 + w."""
    return 1.0 if architecture == "gemma3" else 0.0


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


def hf_to_file_layout(file_name: str, w: np.ndarray, config) -> np.ndarray:
    """A tensor in Hugging Face layout, named as the GGUF file names it (phi3: fused) -> the
    file's layout: a llama file's q/k rows in adjacent-pair order, the NEOX architectures' in
    Hugging Face's own rotate-half order; Gemma's norms plus 1."""
    offset = hf_norm_offset(getattr(config, "architecture", "llama"))
    if offset and file_name.endswith("norm.weight"):
        return (np.asarray(w, np.float32) + np.float32(offset)).astype(np.float32)
    return w if getattr(config, "rope_neox", False) else hf_rows_to_gguf(file_name, w, config)


def hf_rows_to_gguf(gguf_name: str, w: np.ndarray, config) -> np.ndarray:
    """A canonical-named tensor read from a Hugging Face checkpoint in adjacent-pair RoPE order
    (any architecture: Hugging Face keeps rotate-half order): q (n_heads) and k (n_kv_heads)
    weight rows and biases, q/k-norm weights (1 head) permuted, every other tensor unchanged."""
    heads = rope_heads(gguf_name, config)
    return w if heads is None else rotate_half_to_pairs(w, heads)
