"""Write a model as a GGUF file that llama.cpp loads alone, quantizing tensor by tensor.

Format: GGUF v3 (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), LLaMA keys and
tensor names as llama.cpp's ``convert_hf_to_gguf.py`` writes them. Tensor types follow
llama.cpp's ``llama_tensor_get_type`` (src/llama-quant.cpp) for the file types offered here:

- 1-D tensors (norms) stay F32; for F32/F16 files every matrix takes that type.
- For quantized files the output head (or the token embedding when the head is tied to it) is
  Q6_K, or Q8_0 when its rows are not a multiple of 256 (``pure=True`` turns this off).
- ``q4_k_m`` / ``q5_k_m``: Q4_K / Q5_K, with Q6_K for ``attn_v`` and ``ffn_down`` of the layers
  ``use_more_bits`` picks (the first and last eighth, and every third layer between).
- A row length that is not a multiple of the chosen block size falls back as llama-quantize
  does: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and then (or for Q4_0/Q8_0) F16.

``q4_0_mse`` writes Q4_0 blocks whose scales minimise the squared error (same bytes format).
The source is read through the memory map and converted one tensor at a time while the file is
written, so memory holds one converted tensor, never the model in float32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..progress import Progress
from ..quant import QuantizedTensor, quantize
from ..quant.qtypes import qtype_info

# file type name -> (default tensor type, llama_ftype id written as general.file_type)
FILE_TYPES: dict[str, tuple[str, int]] = {
    "f32": ("f32", 0), "f16": ("f16", 1), "q4_0": ("q4_0", 2), "q8_0": ("q8_0", 7),
    "q4_0_mse": ("q4_0_mse", 2), "q4_k": ("q4_k", 15), "q4_k_m": ("q4_k", 15), "q5_k_m": ("q5_k", 17),
    "q6_k": ("q6_k", 18),
}
FALLBACK = {"q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
GGUF_TYPE_NAME = {"q4_0_mse": "Q4_0"}  # quantizer variants -> the type written in the file


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's choice of layers that get more bits in the _M mixes."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def fallback_type(qtype: str, k: int) -> str:
    """The type a row of ``k`` weights can take when ``qtype``'s block does not divide it."""
    while qtype not in ("f32", "f16", "bf16") and k % qtype_info(qtype).block_size:
        qtype = FALLBACK.get(qtype, "f16")
    return qtype


def tensor_type(name: str, shape: tuple[int, ...], file_type: str, n_layers: int, tied: bool,
                pure: bool = False) -> str:
    """The llamix qtype a tensor is written in, for a file of ``file_type``."""
    if file_type not in FILE_TYPES:
        raise ValueError(f"unknown type {file_type!r}; expected one of {', '.join(FILE_TYPES)}")
    if len(shape) < 2:
        return "f32"
    base = FILE_TYPES[file_type][0]
    if base in ("f32", "f16"):
        return base
    t = base
    is_head = name == "output.weight" or (tied and name == "token_embd.weight")
    if not pure:
        if is_head:
            t = "q8_0" if shape[-1] % 256 else (t if t == "q8_0" else "q6_k")
        elif file_type in ("q4_k_m", "q5_k_m") and (".attn_v." in name or ".ffn_down." in name):
            if use_more_bits(int(name.split(".")[1]), n_layers):
                t = "q6_k"
    return fallback_type(t, shape[-1])


@dataclass
class ExportReport:
    path: str
    file_type: str
    n_params: int = 0
    nbytes: int = 0                               # tensor bytes (the file adds metadata)
    types: dict = field(default_factory=dict)     # tensor name -> GGUF type written

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / max(self.n_params, 1)

    def type_counts(self) -> dict:
        out: dict = {}
        for t in self.types.values():
            out[t] = out.get(t, 0) + 1
        return out


_PLAIN = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}


def convert_tensor(t, target: str) -> np.ndarray:
    """One tensor (QuantizedTensor, or a float array) -> the bytes (or float array) of ``target``."""
    if not isinstance(t, QuantizedTensor):
        w = np.asarray(t)
        if w.ndim < 2:
            return np.ascontiguousarray(w, dtype=np.float32)
        return quantize(np.ascontiguousarray(w.reshape(-1, w.shape[-1])), target).data
    src = t.qtype
    if src == target:
        return t.data
    if src in _PLAIN:
        w = t.data.view(_PLAIN[src]).reshape(t.shape)
        return quantize(w, target, src="bf16" if src == "bf16" else None).data
    return quantize(t.dequantize(), target).data  # block -> block: one tensor in float32 at a time


def llama_metadata(config, tokenizer=None, name: str = "llamix", file_type_id: int = 0, source_meta=None) -> list:
    """(key, value, gguf value type[, element type]) entries for a LLaMA model, as llama.cpp reads them."""
    from ..formats.gguf import ValueType as V

    c = config
    kv = [
        ("general.architecture", "llama", V.STRING),
        ("general.name", name, V.STRING),
        ("general.file_type", file_type_id, V.UINT32),
        ("general.quantization_version", 2, V.UINT32),
        ("llama.vocab_size", c.vocab_size, V.UINT32),
        ("llama.context_length", c.context_length, V.UINT32),
        ("llama.embedding_length", c.dim, V.UINT32),
        ("llama.block_count", c.n_layers, V.UINT32),
        ("llama.feed_forward_length", c.hidden_dim, V.UINT32),
        ("llama.rope.dimension_count", c.head_dim, V.UINT32),
        ("llama.attention.head_count", c.n_heads, V.UINT32),
        ("llama.attention.head_count_kv", c.n_kv_heads, V.UINT32),
        ("llama.attention.layer_norm_rms_epsilon", float(c.rms_eps), V.FLOAT32),
        ("llama.rope.freq_base", float(c.rope_theta), V.FLOAT32),
    ]
    if c.head_dim * c.n_heads != c.dim:
        kv += [("llama.attention.key_length", c.head_dim, V.UINT32), ("llama.attention.value_length", c.head_dim, V.UINT32)]
    if c.rope_scaling and c.rope_scaling.get("rope_type") == "linear":
        kv += [("llama.rope.scaling.type", "linear", V.STRING),
               ("llama.rope.scaling.factor", float(c.rope_scaling["factor"]), V.FLOAT32)]
    if source_meta and "tokenizer.ggml.tokens" in source_meta:  # a GGUF source: keep its tokenizer as is
        kv += [(k, v, None) for k, v in source_meta.items() if k.startswith("tokenizer.")]
    elif tokenizer is not None:
        kv += tokenizer_metadata(tokenizer)
    return kv


def tokenizer_metadata(tokenizer) -> list:
    """``tokenizer.ggml.*`` entries from a SentencePiece tokenizer (piece types equal GGUF token types)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    from ..formats.gguf import ValueType as V

    proto = pb.ModelProto()
    proto.ParseFromString(tokenizer.sp.serialized_model_proto())
    tokens = [p.piece for p in proto.pieces]
    scores = np.array([p.score for p in proto.pieces], dtype=np.float32)
    types = np.array([p.type for p in proto.pieces], dtype=np.int32)
    ts = proto.trainer_spec
    kv = [("tokenizer.ggml.model", "llama", V.STRING),
          ("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
          ("tokenizer.ggml.scores", scores, V.ARRAY),
          ("tokenizer.ggml.token_type", types, V.ARRAY)]
    for key, idx in (("bos", ts.bos_id), ("eos", ts.eos_id), ("unknown", ts.unk_id), ("padding", ts.pad_id)):
        if 0 <= idx < len(tokens):
            kv.append((f"tokenizer.ggml.{key}_token_id", int(idx), V.UINT32))
    kv += [("tokenizer.ggml.add_bos_token", bool(getattr(tokenizer, "add_bos", True)), V.BOOL),
           ("tokenizer.ggml.add_eos_token", False, V.BOOL),
           ("tokenizer.ggml.add_space_prefix", bool(proto.normalizer_spec.add_dummy_prefix), V.BOOL)]
    return kv


def _llama3_rope_factors(config) -> np.ndarray | None:
    """Llama-3 rope scaling as llama.cpp stores it: a ``rope_freqs`` tensor dividing the frequencies."""
    if not config.rope_scaling or config.rope_scaling.get("rope_type") != "llama3":
        return None
    from dataclasses import replace

    plain = replace(config, rope_scaling=None).rope_inv_freq()
    return (plain / config.rope_inv_freq()).astype(np.float32)


def _source(model, tokenizer):
    """(config, tensors, tokenizer, rope_freqs, source GGUFReader or None, keep-alive) from a path or a Model."""
    from ..formats.gguf import GGUFReader

    if isinstance(model, (str, os.PathLike)):
        from ..model.weights import load_checkpoint

        ck = load_checkpoint(model, tokenizer=tokenizer)
        reader = ck.keep_alive if isinstance(ck.keep_alive, GGUFReader) else None
        return ck.config, ck.tensors, ck.tokenizer, ck.rope_freqs, reader, ck
    reader = getattr(model, "_keep_alive", None)
    reader = reader if isinstance(reader, GGUFReader) else None
    tok = model.tokenizer
    if tokenizer is not None:
        from ..tokenizer import Tokenizer

        tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(tokenizer)
    return model.config, model.tensors, tok, model.rope_freqs, reader, model


def export_gguf(model, out, qtype: str = "f16", *, tokenizer=None, pure: bool = False, name: str | None = None,
                progress: bool | None = None) -> ExportReport:
    """Write ``model`` (a path llamix loads, or a loaded :class:`llamix.Model`) as a GGUF file of
    ``qtype`` (``f32 f16 q8_0 q4_0 q4_0_mse q4_k q4_k_m q5_k_m q6_k``), atomically."""
    from ..formats.gguf import GGUFWriter
    from ..model.weights import tensor_names

    qtype = str(qtype).lower()
    if qtype not in FILE_TYPES:
        raise ValueError(f"unknown type {qtype!r}; expected one of {', '.join(FILE_TYPES)}")
    config, tensors, tok, rope_freqs, reader, keep = _source(model, tokenizer)
    meta = reader.metadata if reader is not None else None
    if tok is None and not (meta and "tokenizer.ggml.tokens" in meta):
        raise ValueError(f"{getattr(keep, 'source', model)}: the model has no tokenizer; pass tokenizer= a "
                         "SentencePiece .model file (llama.cpp needs it in the GGUF)")
    out = Path(out)
    report = ExportReport(str(out), qtype)
    w = GGUFWriter(out)
    for key, value, vtype, *elem in llama_metadata(config, tok, name or Path(str(getattr(keep, "source", "llamix"))).stem,
                                                   FILE_TYPES[qtype][1], meta):
        if vtype is None:  # copied from the source GGUF: keep the type it had there
            vtype = reader.value_types.get(key)
        w.add(key, value, vtype, *elem)
    names = tensor_names(config)
    factors = rope_freqs if rope_freqs is not None else _llama3_rope_factors(config)
    if factors is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(factors, dtype=np.float32), "F32")
    bar = Progress(len(names), f"quantize {out.name}", quiet=None if progress is None else not progress)

    def lazy(tname, target):
        def produce():
            data = convert_tensor(tensors[tname], target)
            bar.update(1, tname)
            return data
        return produce

    for tname in names:
        t = tensors[tname]
        shape = tuple(t.shape)
        target = tensor_type(tname, shape, qtype, config.n_layers, config.tie_embeddings, pure)
        gtype = GGUF_TYPE_NAME.get(target, target.upper())
        w.add_tensor(tname, lazy(tname, target), gtype, shape)
        report.types[tname] = gtype
        n = int(np.prod(shape))
        report.n_params += n
        report.nbytes += qtype_info(target).row_bytes(shape[-1]) * (n // shape[-1])
    try:
        w.write()
    finally:
        bar.close()
    return report
