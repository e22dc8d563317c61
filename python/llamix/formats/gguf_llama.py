"""The one writer of llama-family GGUF files: metadata keys as llama.cpp's ``convert_hf_to_gguf.py``
writes them for ``general.architecture = llama``, the tokenizer as ``tokenizer.ggml.*`` entries,
and the tensors streamed in file order (see gguf.py for the container, names.py for the names).

``config`` is any object with llamix's ModelConfig fields; q/k rows are expected in GGUF's
adjacent-pair RoPE order already.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, NamedTuple

import numpy as np

from .gguf import GGUFReader, GGUFWriter, ValueType as V

# llama.cpp's general.file_type (enum llama_ftype) of the file types llamix writes
FILE_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17,
                 "q6_k": 18, "bf16": 32}
QUANTIZATION_VERSION = 2  # ggml's GGML_QNT_VERSION: the block layouts written here


class MetadataEntry(NamedTuple):
    key: str
    value: object
    vtype: int | None            # GGUF value type (None: inferred from the value)
    element_type: int | None = None


class TensorEntry(NamedTuple):
    name: str                    # GGUF name
    gguf_type: str               # "Q4_K", "F32", ...
    shape: tuple                 # numpy order (rows, columns)
    data: object                 # array (block types: uint8 bytes) or a callable producing it when written


def llama_metadata(config, name: str = "llamix", file_type_id: int | None = None) -> list[MetadataEntry]:
    """``general.*`` and ``llama.*`` entries for a model of ``config``."""
    c = config
    kv = [MetadataEntry("general.architecture", "llama", V.STRING), MetadataEntry("general.name", name, V.STRING)]
    if file_type_id is not None:
        kv += [MetadataEntry("general.file_type", int(file_type_id), V.UINT32),
               MetadataEntry("general.quantization_version", QUANTIZATION_VERSION, V.UINT32)]
    kv += [
        MetadataEntry("llama.vocab_size", c.vocab_size, V.UINT32),
        MetadataEntry("llama.context_length", c.context_length, V.UINT32),
        MetadataEntry("llama.embedding_length", c.dim, V.UINT32),
        MetadataEntry("llama.block_count", c.n_layers, V.UINT32),
        MetadataEntry("llama.feed_forward_length", c.hidden_dim, V.UINT32),
        MetadataEntry("llama.rope.dimension_count", c.head_dim, V.UINT32),
        MetadataEntry("llama.attention.head_count", c.n_heads, V.UINT32),
        MetadataEntry("llama.attention.head_count_kv", c.n_kv_heads, V.UINT32),
        MetadataEntry("llama.attention.layer_norm_rms_epsilon", float(c.rms_eps), V.FLOAT32),
        MetadataEntry("llama.rope.freq_base", float(c.rope_theta), V.FLOAT32),
    ]
    if c.head_dim * c.n_heads != c.dim:
        kv += [MetadataEntry("llama.attention.key_length", c.head_dim, V.UINT32),
               MetadataEntry("llama.attention.value_length", c.head_dim, V.UINT32)]
    if c.rope_scaling and c.rope_scaling.get("rope_type") == "linear":
        kv += [MetadataEntry("llama.rope.scaling.type", "linear", V.STRING),
               MetadataEntry("llama.rope.scaling.factor", float(c.rope_scaling["factor"]), V.FLOAT32)]
    return kv


def tokenizer_metadata(tokenizer) -> list[MetadataEntry]:
    """``tokenizer.ggml.*`` entries of a SentencePiece :class:`llamix.Tokenizer` (model ``llama``;
    SentencePiece piece types equal GGUF token types)."""
    from sentencepiece import sentencepiece_model_pb2 as pb  # protobuf: only when writing a vocabulary

    proto = pb.ModelProto()
    proto.ParseFromString(tokenizer.sp.serialized_model_proto())
    tokens = [p.piece for p in proto.pieces]
    ts = proto.trainer_spec
    kv = [MetadataEntry("tokenizer.ggml.model", "llama", V.STRING),
          MetadataEntry("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
          MetadataEntry("tokenizer.ggml.scores", np.array([p.score for p in proto.pieces], dtype=np.float32), V.ARRAY),
          MetadataEntry("tokenizer.ggml.token_type", np.array([p.type for p in proto.pieces], dtype=np.int32), V.ARRAY)]
    for key, idx in (("bos", ts.bos_id), ("eos", ts.eos_id), ("unknown", ts.unk_id), ("padding", ts.pad_id)):
        if 0 <= idx < len(tokens):
            kv.append(MetadataEntry(f"tokenizer.ggml.{key}_token_id", int(idx), V.UINT32))
    kv += [MetadataEntry("tokenizer.ggml.add_bos_token", bool(getattr(tokenizer, "add_bos", True)), V.BOOL),
           MetadataEntry("tokenizer.ggml.add_eos_token", False, V.BOOL),
           MetadataEntry("tokenizer.ggml.add_space_prefix", bool(proto.normalizer_spec.add_dummy_prefix), V.BOOL)]
    return kv


def tokenizer_entries_of(reader: GGUFReader) -> list[MetadataEntry]:
    """A GGUF file's ``tokenizer.*`` entries as stored (value types kept), to copy into another file."""
    return [MetadataEntry(k, v, reader.value_types.get(k)) for k, v in reader.metadata.items()
            if k.startswith("tokenizer.")]


def write_llama_gguf(path: str | os.PathLike, config, tensors: Iterable[TensorEntry], *,
                     tokenizer: list[MetadataEntry] | None, name: str = "llamix", file_type_id: int | None = None,
                     rope_freqs: np.ndarray | None = None, on_tensor: Callable[[TensorEntry], None] | None = None) -> None:
    """Write a llama GGUF file atomically (a temporary name beside ``path``, renamed when complete).

    ``tensors`` are written in the order given; a callable ``data`` is called when its turn
    comes, so one converted tensor is in memory at a time. ``tokenizer``: entries from
    :func:`tokenizer_metadata` or :func:`tokenizer_entries_of`. ``rope_freqs``: Llama-3 frequency
    divisors (default: derived from ``config.rope_scaling``). ``on_tensor`` is called after each
    tensor's bytes are produced (progress). Raises ValueError for a tensor whose row length is not
    a multiple of its type's block.
    """
    w = GGUFWriter(path)
    for e in llama_metadata(config, name, file_type_id) + list(tokenizer or []):
        w.add(e.key, e.value, e.vtype, e.element_type)
    if rope_freqs is None:
        rope_freqs = config.llama3_rope_factors()
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32), "F32")
    for t in tensors:
        w.add_tensor(t.name, _produce(t, on_tensor), t.gguf_type, t.shape)
    w.write()


def _produce(t: TensorEntry, on_tensor):
    def produce():
        data = t.data() if callable(t.data) else t.data
        if on_tensor is not None:
            on_tensor(t)
        return data
    return produce
