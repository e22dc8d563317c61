"""Loading a model's tensors from GGUF, a Hugging Face folder or a llama2.c checkpoint into one
canonical form: GGUF tensor names, q/k rows in the adjacent-pair RoPE order (GGUF / Meta), 2-D
weights as :class:`QuantizedTensor` (GGUF bytes, used in place from the mapping when no
conversion is needed), 1-D norms as float32 arrays.

Quantization at load (``quant``) goes tensor by tensor straight from the mapping; a weight whose
row length is not a multiple of the block size stays F16, as llama.cpp's quantizer does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..formats.gguf import GGUFReader
from ..formats.llama2c import Llama2cCheckpoint
from ..formats.safetensors import SafetensorsCheckpoint
from ..progress import Progress
from ..quant import QuantizedTensor, quantize
from ..quant.qtypes import qtype_info
from ..tokenizer import Tokenizer
from .config import ModelConfig

# Weight types the forward pass computes with. Other GGUF types are refused by name; a new
# block format (e.g. K-quants) slots in by adding it here and to the C++ forward's row lookup.
COMPUTE_TYPES = ("f32", "f16", "bf16", "q4_0", "q8_0",
                 "q4_k", "q5_k", "q6_k", "q5_0", "q5_1")  # issue 5: K-quant mixes and their fallbacks
LOAD_QUANTS = (None, "q4_0", "q8_0", "f16")
LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


@dataclass
class Checkpoint:
    config: ModelConfig
    tensors: dict            # GGUF name -> QuantizedTensor (2-D) or float32 array (1-D)
    tokenizer: Tokenizer | None
    rope_freqs: np.ndarray | None
    source: str
    keep_alive: object = None  # the mapped file(s) behind zero-copy tensors


def tensor_names(config: ModelConfig) -> list[str]:
    names = ["token_embd.weight"]
    for i in range(config.n_layers):
        names += [f"blk.{i}.{t}.weight" for t in LAYER_TENSORS]
    names.append("output_norm.weight")
    if not config.tie_embeddings:
        names.append("output.weight")
    return names


def load_checkpoint(path, tokenizer=None, quant: str | None = None) -> Checkpoint:
    if quant is not None:
        quant = str(quant).lower()
    if quant not in LOAD_QUANTS:
        raise ValueError(f"quant={quant!r} is not supported; expected one of {LOAD_QUANTS}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        ck = _load_hf(path, quant)
    else:
        with open(path, "rb") as f:
            magic = f.read(4)
        ck = _load_gguf(path, quant) if magic == b"GGUF" else _load_llama2c(path, quant)
    if tokenizer is not None:
        ck.tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(tokenizer)
    if ck.tokenizer is not None and ck.tokenizer.vocab_size > ck.config.vocab_size:
        raise ValueError(f"{ck.tokenizer.source}: tokenizer has {ck.tokenizer.vocab_size} pieces but the model's "
                         f"vocabulary is {ck.config.vocab_size}")
    return ck


# --- conversion of one tensor ---------------------------------------------------------------------
def _float_weight(name: str, w: np.ndarray, src: str, quant: str | None) -> QuantizedTensor:
    """A float (rows, k) matrix (f32 / f16 / bf16 as uint16) -> QuantizedTensor of the wanted type."""
    rows, k = w.shape
    target = src if quant is None else quant
    if target in ("q4_0", "q8_0") and k % qtype_info(target).block_size:
        target = "f16"  # llama.cpp's fallback for rows that are not whole blocks
    if target == src:
        w = np.ascontiguousarray(w)
        return QuantizedTensor(w.view(np.uint8).reshape(rows, -1), src, (rows, k))
    return quantize(w, target, src="bf16" if src == "bf16" else None)


def _norm(w: np.ndarray, src: str) -> np.ndarray:
    if src == "bf16":
        return (w.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(w, dtype=np.float32)


def _rotate_half_to_pairs(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF q/k rows (rotate-half RoPE) -> adjacent-pair order: within each head, row i of the first
    half goes to 2i and row i + hd/2 to 2i + 1."""
    rows, k = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, k).swapaxes(1, 2).reshape(rows, k)


def _check_shape(source: str, name: str, got, want) -> None:
    if tuple(got) != tuple(want):
        raise ValueError(f"{source}: tensor {name!r} has shape {tuple(got)}, expected {tuple(want)} from the config")


def expected_shapes(c: ModelConfig) -> dict[str, tuple[int, ...]]:
    q, kv = c.n_heads * c.head_dim, c.kv_dim
    per_layer = {"attn_norm": (c.dim,), "attn_q": (q, c.dim), "attn_k": (kv, c.dim), "attn_v": (kv, c.dim),
                 "attn_output": (c.dim, q), "ffn_norm": (c.dim,), "ffn_gate": (c.hidden_dim, c.dim),
                 "ffn_up": (c.hidden_dim, c.dim), "ffn_down": (c.dim, c.hidden_dim)}
    out = {"token_embd.weight": (c.vocab_size, c.dim), "output_norm.weight": (c.dim,), "output.weight": (c.vocab_size, c.dim)}
    for i in range(c.n_layers):
        for t, s in per_layer.items():
            out[f"blk.{i}.{t}.weight"] = s
    return out


# --- GGUF -------------------------------------------------------------------------------------------
def _load_gguf(path: Path, quant: str | None) -> Checkpoint:
    r = GGUFReader(path)
    config = ModelConfig.from_gguf(r)
    shapes = expected_shapes(config)
    tensors = {}
    names = tensor_names(config)
    with Progress(len(names), f"loading {path.name}") as bar:
        for name in names:
            t = r.tensor(name)
            _check_shape(str(path), name, t.shape, shapes[name])
            qt = t.type.name.lower()
            if qt not in COMPUTE_TYPES:
                raise ValueError(f"{path}: tensor {name!r} has type {t.type.name}, which llamix cannot compute with yet "
                                 f"(supported: {', '.join(x.upper() for x in COMPUTE_TYPES)})")
            if len(t.shape) == 1:
                tensors[name] = _norm(t.array(), qt)
            elif qt in ("f32", "f16", "bf16"):
                tensors[name] = _float_weight(name, t.array(), qt, quant)
            else:  # block-quantized: used in place, whatever quant asks for
                tensors[name] = QuantizedTensor(t.raw(), qt, t.shape)
            bar.update(1)
    rope_freqs = r.tensors["rope_freqs.weight"].array().astype(np.float32) if "rope_freqs.weight" in r.tensors else None
    tok = Tokenizer.from_gguf_metadata(r.metadata, source=str(path)) if "tokenizer.ggml.model" in r.metadata else None
    return Checkpoint(config, tensors, tok, rope_freqs, str(path), keep_alive=r)


# --- Hugging Face -------------------------------------------------------------------------------
_HF_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, i, t, _ = gguf_name.split(".")
    hf = {v: k for k, v in _HF_NAMES.items()}[t]
    return f"model.layers.{i}.{hf}.weight"


def _load_hf(folder: Path, quant: str | None) -> Checkpoint:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON ({e})") from None
    config = ModelConfig.from_hf(raw, str(cfg_path))
    st = SafetensorsCheckpoint(folder)
    if config.tie_embeddings is False and "lm_head.weight" not in st:
        config.tie_embeddings = True  # some exports omit the head when it equals the embedding
    shapes = expected_shapes(config)
    tensors = {}
    names = tensor_names(config)
    with Progress(len(names), f"loading {folder.name}") as bar:
        for name in names:
            src_name = hf_name(name)
            if src_name not in st:
                raise ValueError(f"{folder}: tensor {src_name!r} is missing")
            w, src = st.get(src_name), st.dtype(src_name)
            if src not in ("f32", "f16", "bf16"):
                raise ValueError(f"{folder}: tensor {src_name!r} has dtype {src}, expected F32, F16 or BF16")
            _check_shape(str(folder), src_name, w.shape, shapes[name])
            if w.ndim == 1:
                tensors[name] = _norm(w, src)
            else:
                if name.endswith("attn_q.weight"):
                    w = _rotate_half_to_pairs(w, config.n_heads)
                elif name.endswith("attn_k.weight"):
                    w = _rotate_half_to_pairs(w, config.n_kv_heads)
                tensors[name] = _float_weight(name, w, src, quant)
            bar.update(1)
    tok_path = folder / "tokenizer.model"
    tok = Tokenizer.from_file(tok_path) if tok_path.is_file() else None
    return Checkpoint(config, tensors, tok, None, str(folder), keep_alive=st)


# --- llama2.c ---------------------------------------------------------------------------------------
def _load_llama2c(path: Path, quant: str | None) -> Checkpoint:
    ck = Llama2cCheckpoint(path)
    config = ModelConfig.from_llama2c(ck.config)
    tensors = {}
    names = tensor_names(config)
    with Progress(len(names), f"loading {path.name}") as bar:
        for name in names:
            w = ck.tensors[name]
            tensors[name] = _norm(w, "f32") if w.ndim == 1 else _float_weight(name, w, "f32", quant)
            bar.update(1)
    tok = None
    candidates = [path.with_suffix(".model"), path.parent / "tokenizer.model"]
    others = sorted(path.parent.glob("*.model"))
    if len(others) == 1:
        candidates.append(others[0])
    for c in candidates:
        if c.is_file():
            tok = Tokenizer.from_file(c)
            break
    return Checkpoint(config, tensors, tok, None, str(path), keep_alive=ck)
