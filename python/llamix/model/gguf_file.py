"""Writing a model (config, canonical tensors, tokenizer) as a llama.cpp-compatible GGUF file.

Keys and tensor names follow llama.cpp's ``llama`` architecture (see formats/gguf.py for the
container); q/k rows are already in GGUF's adjacent-pair RoPE order in llamix's canonical form.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..formats.gguf import GGUFWriter, ValueType
from ..quant import QuantizedTensor
from ..tokenizer import Tokenizer
from .config import ModelConfig
from .weights import tensor_names

# llama.cpp's general.file_type (LLAMA_FTYPE_*) for a file whose big tensors are of one type
_FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}


def tokenizer_metadata(tok: Tokenizer) -> dict:
    """``tokenizer.ggml.*`` metadata for a SentencePiece tokenizer (model ``llama``)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(tok.sp.serialized_model_proto())
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": [p.piece for p in proto.pieces],
        "tokenizer.ggml.scores": np.array([p.score for p in proto.pieces], dtype=np.float32),
        "tokenizer.ggml.token_type": np.array([p.type for p in proto.pieces], dtype=np.int32),
        "tokenizer.ggml.unknown_token_id": max(int(tok.sp.unk_id()), 0),
        "tokenizer.ggml.add_bos_token": True,
        "tokenizer.ggml.add_eos_token": False,
    }
    if tok.bos_id >= 0:
        meta["tokenizer.ggml.bos_token_id"] = tok.bos_id
    if tok.eos_id >= 0:
        meta["tokenizer.ggml.eos_token_id"] = tok.eos_id
    return meta


def _int_types(meta: dict) -> dict:
    u32 = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
           "tokenizer.ggml.padding_token_id"}
    return {k: ValueType.UINT32 for k in meta if k in u32}


def save_gguf(path: str | os.PathLike, config: ModelConfig, tensors: dict, tokenizer: Tokenizer | dict | None,
              name: str = "llamix", rope_freqs: np.ndarray | None = None) -> None:
    """Write ``tensors`` (GGUF name -> QuantizedTensor, float32 array or LazyTensor) as a GGUF
    file, atomically."""
    c = config
    w = GGUFWriter(path)
    u32 = ValueType.UINT32
    w.add("general.architecture", "llama")
    w.add("general.name", name)
    w.add("llama.context_length", c.context_length, u32)
    w.add("llama.embedding_length", c.dim, u32)
    w.add("llama.block_count", c.n_layers, u32)
    w.add("llama.feed_forward_length", c.hidden_dim, u32)
    w.add("llama.attention.head_count", c.n_heads, u32)
    w.add("llama.attention.head_count_kv", c.n_kv_heads, u32)
    w.add("llama.rope.dimension_count", c.head_dim, u32)
    w.add("llama.rope.freq_base", float(c.rope_theta))
    w.add("llama.attention.layer_norm_rms_epsilon", float(c.rms_eps))
    w.add("llama.vocab_size", c.vocab_size, u32)
    if c.head_dim != c.dim // c.n_heads:
        w.add("llama.attention.key_length", c.head_dim, u32)
        w.add("llama.attention.value_length", c.head_dim, u32)
    if c.rope_scaling is not None and c.rope_scaling["rope_type"] == "linear":
        w.add("llama.rope.scaling.type", "linear")
        w.add("llama.rope.scaling.factor", float(c.rope_scaling["factor"]))
    elif c.rope_scaling is not None and rope_freqs is None:
        # llama.cpp's form of Llama-3 scaling: per-frequency divisors
        base = ModelConfig(**{**c.to_dict(), "rope_scaling": None}).rope_inv_freq()
        rope_freqs = base / c.rope_inv_freq()
    ftype = _FILE_TYPES.get(getattr(tensors.get("blk.0.ffn_gate.weight"), "qtype", "f32"))
    if ftype is not None:
        w.add("general.file_type", ftype, u32)
    if tokenizer is not None:
        meta = tokenizer if isinstance(tokenizer, dict) else tokenizer_metadata(tokenizer)
        types = _int_types(meta)
        for k, v in meta.items():
            w.add(k, v, types.get(k))
    for name in tensor_names(c):
        t = tensors[name]
        _add_tensor(w, name, t)
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32), "F32")
    w.write()


@dataclass
class LazyTensor:
    """A tensor made only when the writer reaches it (streaming a large model to disk)."""
    qtype: str                                 # "q4_0", "f32", ...
    shape: tuple
    make: Callable[[], "QuantizedTensor | np.ndarray"]


def _add_tensor(w: GGUFWriter, name: str, t) -> None:
    if isinstance(t, LazyTensor):
        w.add_tensor(name, lambda: _bytes(t.make()), t.qtype.upper(), t.shape)
    elif isinstance(t, QuantizedTensor):
        w.add_tensor(name, t.data, t.qtype.upper(), t.shape)
    else:
        arr = np.asarray(t, dtype=np.float32)
        w.add_tensor(name, arr, "F32", arr.shape)


def _bytes(t):
    return t.data if isinstance(t, QuantizedTensor) else np.asarray(t, dtype=np.float32)
