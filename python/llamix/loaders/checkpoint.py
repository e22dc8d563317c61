"""A checkpoint in llamix's canonical form, whatever file it came from: GGUF tensor names, q/k rows
in the adjacent-pair RoPE order (GGUF / Meta), 2-D weights as :class:`QuantizedTensor` (GGUF
bytes, used in place from the mapping when no conversion is needed), 1-D norms as float32.

Conversion at load (``qtype``) goes tensor by tensor straight from the mapping; a weight whose
row length is not a multiple of the block size stays F16, as llama.cpp's quantizer does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import ModelConfig
from ..errors import ArgumentError, FormatError
from ..quant import QuantizedTensor, quantize
from ..quant.qtypes import qtype_info
from ..tokenizer import Tokenizer

# Weight types the forward pass computes with. Other GGUF types are refused by name; a new
# block format slots in by adding it here and to the C++ forward's row lookup.
COMPUTE_TYPES = ("f32", "f16", "bf16", "q4_0", "q8_0", "q4_k", "q5_k", "q6_k", "q5_0", "q5_1",
                 "q4_1", "q2_k", "q3_k", "iq4_nl", "iq4_xs")
# Types float weights can be converted to while loading.
LOAD_QTYPES = ("q4_0", "q8_0", "f16")

Progress = Callable[[float, float, str], None]  # progress(done, total, note)
MAX_LAYERS = 100_000  # a layer count beyond this is a corrupt header, not a model


@dataclass
class Checkpoint:
    """A model's hyper-parameters, tensors and tokenizer: what :class:`llamix.Model` runs and
    :func:`llamix.export_gguf` writes."""
    config: ModelConfig
    tensors: dict            # GGUF name -> QuantizedTensor (2-D) or float32 array (1-D)
    tokenizer: Tokenizer | None
    rope_freqs: np.ndarray | None
    source: str
    keep_alive: object = None  # the mapped file(s) behind zero-copy tensors
    # a GGUF source's tokenizer.* metadata, as stored (copied verbatim when it is written again)
    tokenizer_entries: list = field(default_factory=list)
    # a GGUF source's descriptive general.* metadata (basename, finetune, size_label, ...) and its
    # general.name, carried into the files written from it as llama-quantize carries them
    general_entries: list = field(default_factory=list)
    name: str | None = None
    # the block-quantized matrices a load asked to convert (qtype=) kept as stored: name -> type
    kept_quantized: dict = field(default_factory=dict)
    # the model's Jinja chat template (GGUF tokenizer.chat_template; a Hugging Face folder's
    # chat_template.jinja or tokenizer_config.json), None when the checkpoint has none
    chat_template: str | None = None
    # where chat_template was read, for messages: "m/tokenizer_config.json: chat_template"
    chat_template_source: str | None = None
    # the LoRA adapters folded into the weights as they loaded: [(path as given, scale)]
    lora_adapters: list = field(default_factory=list)

    def release_pages(self) -> None:
        """Drop the mapped source file's pages from the process's resident memory, where the
        source can (a GGUF file); tensors read in place fault back in when used."""
        release = getattr(self.keep_alive, "release_pages", None)
        if release is not None:
            release()


def check_qtype(qtype: str | None) -> str | None:
    if qtype is None:
        return None
    q = str(qtype).lower()
    if q not in LOAD_QTYPES:
        raise ArgumentError(f"qtype={qtype!r}: weights can be quantized while loading to {', '.join(LOAD_QTYPES)} only")
    return q


def float_weight(w: np.ndarray, src: str, qtype: str | None) -> QuantizedTensor:
    """A float (rows, k) matrix (f32 / f16 / bf16 as uint16) -> QuantizedTensor of ``qtype``
    (``None``: kept as stored)."""
    rows, k = w.shape
    target = src if qtype is None else qtype
    if target in ("q4_0", "q8_0") and k % qtype_info(target).block_size:
        target = "f16"  # llama.cpp's fallback for rows that are not whole blocks
    if target == src:
        w = np.ascontiguousarray(w)
        return QuantizedTensor(w.view(np.uint8).reshape(rows, -1), src, (rows, k))
    return quantize(w, target, src="bf16" if src == "bf16" else None)


def norm_weight(w: np.ndarray, src: str) -> np.ndarray:
    """A 1-D norm weight as float32 (bf16 given as uint16)."""
    if src == "bf16":
        return (w.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(w, dtype=np.float32)


def check_shape(source: str, name: str, got, want) -> None:
    if tuple(got) != tuple(want):
        raise FormatError(f"{source}: tensor {name!r} has shape {tuple(got)}, expected {tuple(want)} from the config")


def check_layer_count(config_source, key: str, n_layers: int, present: set, tensors_source: str) -> None:
    """The layer count a config claims, against the layers whose tensors the file holds: checked
    before anything is built per layer, so a corrupt count costs nothing."""
    if n_layers != len(present) or (present and max(present) != n_layers - 1):
        held = f"layers 0..{max(present)}" if present and len(present) == max(present) + 1 else \
            f"{len(present)} layers" if present else "no layers"
        raise FormatError(f"{config_source}: {key} = {n_layers}, but {tensors_source} holds tensors of {held}")
