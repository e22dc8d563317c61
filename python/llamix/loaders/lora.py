"""A PEFT LoRA adapter applied to a loaded checkpoint: ``llamix.load(path, lora=ADAPTER,
lora_scale=1.0)`` (llama.cpp's ``--lora`` / ``--lora-scaled``).

Each weight the adapter changes becomes ``W + lora_scale * scale * (B @ A)`` (formats/peft_lora.py
for ``scale`` and the update's shape), computed in float32 from the stored weight and stored again
in the weight's own type: float types rounded as the loader rounds them, block types quantized again
(llama.cpp instead adds the low-rank product at run time; folding it in once keeps decoding as fast
as without an adapter). The update is in Hugging Face's layout, so q/k rows are permuted to the
checkpoint's adjacent-pair order and phi3's fused tensors are split, as the loaders do with the
weights. One weight at a time: no second copy of the model.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, ConfigError, FormatError
from ..formats.gguf import GGUF_MAGIC
from ..formats.names import fused_parts, gguf_name, hf_rows_to_gguf
from ..formats.peft_lora import LoraAdapter, as_f32
from ..quant import QuantizedTensor, quantize
from .checkpoint import Checkpoint


def apply_lora(ck: Checkpoint, adapter_path: str | os.PathLike, lora_scale: float = 1.0) -> None:
    """Fold the PEFT LoRA adapter folder ``adapter_path`` into ``ck``'s weights, in place.

    Raises FileNotFoundError for a missing folder, ConfigError naming the adapter file and tensor
    for an adapter that does not fit the model (a module it lacks, another shape), ArgumentError
    for a ``lora_scale`` that is not a finite number."""
    if isinstance(lora_scale, bool) or not isinstance(lora_scale, (int, float, np.floating, np.integer)) \
            or not np.isfinite(lora_scale):
        raise ArgumentError(f"lora_scale must be a finite number, got {lora_scale!r}")
    folder = Path(adapter_path)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such LoRA adapter folder")
    if folder.is_file():
        with open(folder, "rb") as f:
            gguf = f.read(4) == GGUF_MAGIC
        what = "a GGUF LoRA adapter (convert_lora_to_gguf's), which llamix does not read" if gguf else "a file"
        raise ConfigError(f"lora={folder}: {what}; give the PEFT adapter folder (adapter_config.json + "
                          "adapter_model.safetensors)")
    where = f"lora={folder}"
    adapter = LoraAdapter(folder, where)
    config = ck.config
    for target in adapter.pairs:
        full = np.asarray(adapter.delta(target, _hf_shape(ck, target, where)), np.float32)
        for name, a, b in _canonical_parts(target, config, where):
            w = ck.tensors[name]
            update = hf_rows_to_gguf(name, full[a:b], config) * np.float32(lora_scale)
            ck.tensors[name] = _stored_like(name, w, w.dequantize() + update)
    for target, key in adapter.full.items():    # modules_to_save: the adapter's tensor replaces the model's
        saved = as_f32(np.asarray(adapter.tensors.get(key)))
        for name, a, b in _canonical_parts(target, config, where):
            w = ck.tensors[name]
            if not isinstance(w, QuantizedTensor) or tuple(saved[a:b].shape) != tuple(w.shape):
                raise ConfigError(f"{where}: {folder / 'adapter_model.safetensors'} saves {target} with shape "
                                  f"{list(saved.shape)}, which does not replace the model's {name}")
            ck.tensors[name] = _stored_like(name, w, hf_rows_to_gguf(name, saved[a:b], config))


def _canonical_parts(target: str, config, where: str) -> list[tuple[str, int, int]]:
    """The checkpoint's tensors a Hugging Face weight name covers: [(name, first row, end row)]."""
    try:
        file_name = gguf_name(target, config.architecture)
    except FormatError:
        file_name = None
    if file_name is None or not file_name.endswith(".weight"):
        raise ConfigError(f"{where}: the adapter changes {target!r}, which is not a weight of this "
                          f"{config.architecture} model (is it an adapter for another model?)")
    parts = fused_parts(file_name, config)
    if parts is None:
        return [(file_name, 0, None)]
    return parts


def _hf_shape(ck: Checkpoint, target: str, where: str) -> tuple[int, int]:
    parts = _canonical_parts(target, ck.config, where)
    missing = [n for n, _, _ in parts if n not in ck.tensors]
    if missing:
        raise ConfigError(f"{where}: the adapter changes {target!r}, but the model has no {missing[0]} "
                          "(a tied output head?)")
    shapes = [ck.tensors[n].shape for n, _, _ in parts]
    return (sum(s[0] for s in shapes), shapes[0][1])


def _stored_like(name: str, w, value: np.ndarray) -> QuantizedTensor:
    """``value`` stored in ``w``'s type (float types rounded, block types quantized again)."""
    if not isinstance(w, QuantizedTensor):
        raise ConfigError(f"a LoRA update reaches {name}, which is not a weight matrix")
    return quantize(np.ascontiguousarray(value, dtype=np.float32), w.qtype)
