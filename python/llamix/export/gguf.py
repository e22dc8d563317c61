"""Write a model as a GGUF file that llama.cpp loads alone, quantizing tensor by tensor.

Format: GGUF v3 (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), LLaMA keys and
tensor names as llama.cpp's ``convert_hf_to_gguf.py`` writes them. Tensor types follow
llama.cpp's ``llama_tensor_get_type`` (src/llama-quant.cpp) for the file types offered here, with
its per-tensor overrides: see :mod:`llamix.export.type_rules` (1-D tensors stay F32; the output
head takes Q6_K, or Q8_0 when its rows are not a multiple of the type's block; the _S/_M/_L
mixes give attn_v, ffn_down and attn_output more bits in chosen layers; rows a block does not
divide fall back: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, IQ4_XS -> IQ4_NL,
then F16). An importance matrix weights every quantizer that can use it.

``q4_0_mse`` writes Q4_0 blocks whose scales minimise the squared error (same bytes format).
The source is read through the memory map and converted one tensor at a time while the file is
written, so memory holds one converted tensor, never the model in float32.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ArgumentError
from ..formats.gguf_llama import (CHAT_TEMPLATE_KEY, FILE_TYPE_IDS, MetadataEntry, TensorEntry, chat_template_entry,
                                  tokenizer_metadata, write_llama_gguf)
from ..formats.names import file_shapes, file_tensor_names, fused_parts, pairs_to_file_rows
from ..loaders import Checkpoint, load_checkpoint
from ..quant import QuantizedTensor, quantize
from ..quant.qtypes import qtype_info
from ..tokenizer import Tokenizer
from .type_rules import FILE_TYPES, FTYPE_AS, TypeOverrides, fallback_type, use_more_bits  # noqa: F401 (re-exported)
from .type_rules import mix_layer_indices
from .type_rules import chosen_type as rules_chosen_type

Progress = Callable[[float, float, str], None]  # progress(done, total, note)

def check_file_type(name: str) -> str:
    """A file type name as llama-quantize spells it, any case (``Q4_K_M`` == ``q4_k_m``), checked."""
    t = str(name).lower()
    if t not in FILE_TYPES:
        raise ArgumentError(f"unknown type {name!r}; expected one of {', '.join(FILE_TYPES)}")
    return t


def file_type_id(name: str) -> int:
    """llama.cpp's ``general.file_type`` (enum llama_ftype) of a file type."""
    return FILE_TYPE_IDS[FTYPE_AS.get(name, name)]


GGUF_TYPE_NAME = {"q4_0_mse": "Q4_0"}  # quantizer variants -> the type written in the file


def chosen_type(name: str, shape: tuple[int, ...], file_type: str, n_layers: int, tied: bool,
                pure: bool = False, *, n_gqa: int = 1, overrides: TypeOverrides | None = None,
                stored: str = "f32", layer: int | None = None) -> str:
    """The type llama-quantize's rules pick for a tensor, before any fallback for its row length
    (see :mod:`llamix.export.type_rules`; ``layer``: llama.cpp's attn_v/ffn_down counter,
    :func:`~llamix.export.type_rules.mix_layer_indices`)."""
    ft = check_file_type(file_type)
    ov = overrides or TypeOverrides()
    if pure and not ov.pure:
        ov = replace(ov, pure=True)
    return rules_chosen_type(name, shape, ft, n_layers, tied, n_gqa=n_gqa, overrides=ov, stored=stored, layer=layer)


def tensor_type(name: str, shape: tuple[int, ...], file_type: str, n_layers: int, tied: bool,
                pure: bool = False, **kw) -> str:
    """The llamix qtype a tensor is written in, for a file of ``file_type`` (keywords as
    :func:`chosen_type`)."""
    t = chosen_type(name, shape, file_type, n_layers, tied, pure, **kw)
    return t if len(shape) < 2 else fallback_type(t, shape[-1])


@dataclass
class ExportReport:
    path: str
    file_type: str
    n_params: int = 0
    nbytes: int = 0                               # tensor bytes (the file adds metadata)
    types: dict = field(default_factory=dict)     # tensor name -> GGUF type written
    fallbacks: dict = field(default_factory=dict)  # tensor name -> (type chosen, type written) where they differ

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.nbytes / max(self.n_params, 1)

    def type_counts(self) -> dict:
        out: dict = {}
        for t in self.types.values():
            out[t] = out.get(t, 0) + 1
        return out

    def fallback_note(self) -> str | None:
        """``"5 of 47 matrices fell back ...: 3 x Q4_K -> Q5_0, 2 x Q6_K -> Q8_0"``, or None."""
        if not self.fallbacks:
            return None
        pairs: dict = {}
        for wanted, got in self.fallbacks.values():
            pairs[(wanted, got)] = pairs.get((wanted, got), 0) + 1
        n_matrices = sum(1 for t in self.types.values() if t != "F32") or len(self.types)
        detail = ", ".join(f"{n} x {w.upper()} -> {g.upper()}" for (w, g), n in sorted(pairs.items()))
        return (f"{len(self.fallbacks)} of {n_matrices} tensors fell back to another type (rows not a multiple of "
                f"the block size, as llama-quantize does): {detail}")


_PLAIN = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}


def convert_tensor(t, target: str, importance=None) -> np.ndarray:
    """One tensor (QuantizedTensor, or a float array) -> the bytes (or float array) of ``target``;
    ``importance`` (float32 (k,)) weights the quantizer's error where the type's quantizer uses it."""
    if not isinstance(t, QuantizedTensor):
        w = np.asarray(t)
        if w.ndim < 2:
            return np.ascontiguousarray(w, dtype=np.float32)
        return quantize(np.ascontiguousarray(w.reshape(-1, w.shape[-1])), target, imatrix=importance).data
    src = t.qtype
    if src == target:
        return t.data
    if src in _PLAIN:
        w = t.data.view(_PLAIN[src]).reshape(t.shape)
        return quantize(w, target, src="bf16" if src == "bf16" else None, imatrix=importance).data
    return quantize(t.dequantize(), target, imatrix=importance).data  # block -> block: one tensor in float32 at a time


def _source(model, tokenizer) -> Checkpoint:
    """A Checkpoint from a path llamix loads, a loaded Model, a Checkpoint, or anything with
    ``config``, ``tensors``, ``tokenizer`` and ``rope_freqs`` (a soup's lazy average)."""
    if isinstance(model, (str, os.PathLike)):
        return load_checkpoint(model, tokenizer=tokenizer)
    ck = getattr(model, "checkpoint", model)  # a Model runs a Checkpoint
    if tokenizer is not None:
        tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(tokenizer)
        return Checkpoint(ck.config, ck.tensors, tok, getattr(ck, "rope_freqs", None), getattr(ck, "source", "model"),
                          chat_template=getattr(ck, "chat_template", None))
    return ck


def _shape(tensors, name: str) -> tuple:
    # lazily computed tensors (a soup's averages) tell their shape without being computed
    return tuple(tensors.shape_of(name) if hasattr(tensors, "shape_of") else tensors[name].shape)


def _stored_type(t) -> str:
    return t.qtype if isinstance(t, QuantizedTensor) else "f32"


def _source_type(tensors, parts: list[str]) -> str:
    """The type the first part is stored in ("f32" for lazily computed tensors)."""
    if hasattr(tensors, "shape_of"):
        return "f32"
    return _stored_type(tensors[parts[0]])


def _block_types(tensors, parts: list[str]) -> set:
    """The block-quantized types ``parts`` are stored in (lazily computed tensors are floats: not
    computed here)."""
    if hasattr(tensors, "shape_of"):
        return set()
    return {_stored_type(tensors[p]) for p in parts} - {"f32", "f16", "bf16"}


def export_gguf(model, out, qtype: str | None = "f16", *, tokenizer=None, pure: bool = False, name: str | None = None,
                progress: Progress | None = None, allow_requantize: bool = False,
                overrides: TypeOverrides | None = None, imatrix=None,
                metadata: Sequence[MetadataEntry] = ()) -> ExportReport:
    """Write ``model`` as a GGUF file that llama.cpp loads alone, converting tensor by tensor.

    ``model``: a path llamix loads, a loaded :class:`llamix.Model`, or a Checkpoint. ``qtype``:
    the file type (any case: ``f32 f16 q8_0 q4_0 q4_0_mse q4_1 q2_k q3_k_s q3_k_m q3_k_l q4_k_s
    q4_k_m q5_k_s q5_k_m q6_k iq4_nl iq4_xs``, and llama-quantize's aliases ``q3_k q4_k q5_k``; per-tensor
    types as llama-quantize chooses them, see :func:`tensor_type`), or ``None`` to keep every
    tensor's stored type. ``tokenizer``: a tokenizer file or Tokenizer replacing the model's.
    ``pure``: one type for every matrix. ``progress(done_bytes, total_bytes, tensor_name)`` is
    called after each tensor. The file appears only when complete (temporary name, then rename).
    ``allow_requantize``: convert tensors that are block-quantized already to another type (each
    conversion adds error; llama-quantize refuses it unless told, so does this). Raises a
    LlamixError for an unknown type, a tensor that would be requantized, ``out`` naming the input,
    or a model without a tokenizer (llama.cpp needs one).
    ``overrides``: llama-quantize's per-tensor flags (:class:`~llamix.export.type_rules.TypeOverrides`).
    ``imatrix``: a mapping of tensor name -> float32 (row length,) importance (an
    :class:`~llamix.eval.imatrix.ImportanceMatrix`'s ``.values()`` or llama-imatrix's file read by
    it); each matrix it names is quantized minimising the error weighted by it. ``metadata``: more
    entries for the file (the quantize command's ``quantize.imatrix.*``). A GGUF source's
    ``general.*`` description and name are kept, as llama-quantize keeps them.
    """
    ft = None if qtype is None else check_file_type(qtype)
    ov = replace(overrides or TypeOverrides(), pure=pure or (overrides is not None and overrides.pure),
                 has_imatrix=imatrix is not None)
    progress = progress if callable(progress) else None
    if isinstance(model, (str, os.PathLike)) and Path(out).resolve() == Path(model).resolve():
        raise ArgumentError(f"{out}: the output would overwrite the model it is made from")
    ck = _source(model, tokenizer)
    config, tensors = ck.config, ck.tensors
    entries = list(getattr(ck, "tokenizer_entries", None) or [])
    if not entries and ck.tokenizer is not None:
        entries = tokenizer_metadata(ck.tokenizer, config.vocab_size)
    if not entries:
        what = "a tokenizer.model, tokenizer.json or GGUF file (llama.cpp needs it in the GGUF)"
        src = getattr(ck, "source", model)
        raise ArgumentError(f"{src}: the model has no tokenizer; pass tokenizer= {what}",
                            cli=f"{src}: the model has no tokenizer; give --tokenizer FILE, {what}")
    template = getattr(ck, "chat_template", None)
    if template and not any(e.key == CHAT_TEMPLATE_KEY for e in entries):
        entries.append(chat_template_entry(template))  # a Hugging Face folder's template
    out = Path(out)
    names = file_tensor_names(config)  # the file's tensors: phi3 fuses q/k/v and gate/up
    fshapes = file_shapes(config)
    report = ExportReport(str(out), ft or "as stored")
    layers = mix_layer_indices(names, ov)   # llama.cpp's counters: an overridden attn_v/ffn_down does not count
    plan = []
    for tname in names:
        parts = [p for p, _, _ in fused_parts(tname, config) or [(tname, 0, 0)]]
        shape = _shape(tensors, parts[0])
        if len(parts) > 1:
            shape = tuple(fshapes[tname])
        if ft is None:
            stored = {_stored_type(tensors[p]) for p in parts}
            if len(stored) > 1:
                raise ArgumentError(f"{tname}: its parts {parts} are stored as {sorted(stored)}; pass a file type to "
                                 "write them as one tensor")
            target = stored.pop()
        else:
            rule_kw = dict(n_gqa=max(1, config.n_heads // max(1, config.n_kv_heads)), overrides=ov,
                           stored=_source_type(tensors, parts), layer=layers.get(tname))
            target = tensor_type(tname, shape, ft, config.n_layers, config.tie_embeddings, **rule_kw)
            fallback = ""
            if len(shape) >= 2:
                wanted = chosen_type(tname, shape, ft, config.n_layers, config.tie_embeddings, **rule_kw)
                if wanted != target:
                    report.fallbacks[tname] = (GGUF_TYPE_NAME.get(wanted, wanted), target)
                    fallback = (f" (llama-quantize's fallback for {GGUF_TYPE_NAME.get(wanted, wanted)}: rows of "
                                f"{shape[-1]} are not a multiple of its block)")
            stored = _block_types(tensors, parts) - {target}
            if stored and not allow_requantize:
                why = (f"{getattr(ck, 'source', model)}: tensor {tname!r} is {stored.pop().upper()} already; "
                       f"requantizing it to {target.upper()}{fallback} adds a second rounding error")
                raise ArgumentError(f"{why} (pass allow_requantize=True to do it anyway)",
                                    cli=f"{why} (pass --allow-requantize to do it anyway)")
        gtype = GGUF_TYPE_NAME.get(target, target.upper())
        n = int(np.prod(shape))
        nbytes = qtype_info(target).row_bytes(shape[-1]) * (n // shape[-1])
        importance = None if imatrix is None or len(shape) < 2 else imatrix.get(tname)
        if importance is not None and np.shape(importance) != (shape[-1],):
            raise ArgumentError(f"imatrix: entry {tname!r} has {np.size(importance)} values but the tensor's rows "
                                f"have {shape[-1]} (an importance matrix of another model?)")
        plan.append((TensorEntry(tname, gtype, shape, _converter(tensors, parts, target, config, importance)), nbytes))
        report.types[tname] = gtype
        report.n_params += n
        report.nbytes += nbytes
    if ft is not None:
        ftype_id = file_type_id(ft)
    else:
        ftype_id = FILE_TYPE_IDS.get(_stored_type(tensors["blk.0.ffn_gate.weight"]))
    written = {"bytes": 0}
    sizes = {e.name: nbytes for e, nbytes in plan}

    def on_tensor(e: TensorEntry) -> None:
        written["bytes"] += sizes[e.name]
        if progress is not None:
            progress(written["bytes"], report.nbytes, e.name)

    write_llama_gguf(out, config, [e for e, _ in plan], tokenizer=entries,
                     name=name or getattr(ck, "name", None) or Path(str(getattr(ck, "source", "llamix"))).stem,
                     file_type_id=ftype_id, rope_freqs=getattr(ck, "rope_freqs", None), on_tensor=on_tensor,
                     extra=[*getattr(ck, "general_entries", ()), *metadata])
    return report


def _converter(tensors, parts: list[str], target: str, config, importance=None):
    """The file tensor made of ``parts`` (one, or phi3's fused rows), each converted to ``target``
    and put back in the file's row order (rows are independent in every block format)."""
    def produce():
        conv = (lambda t: convert_tensor(t, target)) if importance is None else \
            (lambda t: convert_tensor(t, target, importance))
        data = [pairs_to_file_rows(p, conv(tensors[p]), config) for p in parts]
        return data[0] if len(data) == 1 else np.concatenate(data, axis=0)
    return produce
