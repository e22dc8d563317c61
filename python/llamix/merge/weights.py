"""An input model's weights as the merge reads them: tensor names, shapes, dtypes, and per tensor
either a TensorRef (the kernels read it from the file chunk by chunk) or an array made for that
one tensor (a LoRA applied to it, a vocabulary realigned). Never the whole model in memory.

- ``ModelWeights``: a safetensors checkpoint as stored.
- ``LoraWeights``: a checkpoint with a PEFT LoRA adapter (``adapter_config.json`` and
  ``adapter_model.safetensors``) applied tensor by tensor while the merge streams:
  ``W + scale * (B @ A)`` (float32, peft's order: the product scaled, then added), rounded to
  ``W``'s dtype; ``scale = lora_alpha / r`` (``/ sqrt(r)`` with ``use_rslora``; ``alpha_pattern``
  per module); embeddings take ``(B @ A)^T``; ``fan_in_fan_out`` transposes the update; tensors in
  ``modules_to_save`` replace the model's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..formats.peft_lora import LoraAdapter, as_f32
from ..formats.safetensors import SafetensorsCheckpoint, TensorRef
from .config import ConfigError
from .kernels import scale as round_to

FLOAT_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}


class ModelWeights:
    """A checkpoint's tensors as stored."""

    def __init__(self, checkpoint: SafetensorsCheckpoint):
        self.checkpoint = checkpoint

    def keys(self) -> list[str]:
        return self.checkpoint.keys()

    def __contains__(self, name: str) -> bool:
        return name in self.checkpoint

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.checkpoint.shape(name))

    def dtype(self, name: str) -> str:
        return self.checkpoint.dtype(name)

    def nbytes(self, name: str) -> int:
        """Bytes read from the inputs for this tensor (for throughput and progress)."""
        return self.checkpoint.file_of(name).nbytes(name)

    def ref(self, name: str) -> Union[TensorRef, np.ndarray]:
        return self.checkpoint.ref(name)

    def get(self, name: str) -> np.ndarray:
        return self.checkpoint.get(name)

    def release(self, name: str) -> None:
        self.checkpoint.release(name)


class LoraWeights(ModelWeights):
    """A checkpoint with a LoRA adapter applied tensor by tensor (see the module docstring)."""

    def __init__(self, checkpoint: SafetensorsCheckpoint, adapter: LoraAdapter, where: str):
        super().__init__(checkpoint)
        self.adapter = adapter
        missing = [t for t in list(adapter.pairs) + list(adapter.full) if t not in checkpoint]
        if missing:
            raise ConfigError(f"{where}: the LoRA adapter {adapter.folder} changes {missing[0]!r}, which the model "
                              f"does not have ({len(missing)} such tensors); is it an adapter for another model?")
        for name, key in adapter.full.items():   # modules_to_save replace the model's tensor: same shape only
            saved, own = tuple(adapter.tensors.shape(key)), tuple(checkpoint.shape(name))
            if saved != own:
                raise ConfigError(f"{where}: the LoRA adapter {adapter.folder / 'adapter_model.safetensors'} saves "
                                  f"{name} with shape {list(saved)}, the model's is {list(own)} (a fine-tune with "
                                  "another vocabulary?): the merged model's config would not match it; merge the "
                                  "fine-tune itself instead")

    def _changed(self, name: str) -> bool:
        return name in self.adapter.pairs or name in self.adapter.full

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.adapter.full:
            return tuple(self.adapter.tensors.shape(self.adapter.full[name]))
        return super().shape(name)

    def dtype(self, name: str) -> str:
        if name in self.adapter.full:
            return self.adapter.tensors.dtype(self.adapter.full[name])
        return super().dtype(name)

    def nbytes(self, name: str) -> int:
        n = super().nbytes(name) if name not in self.adapter.full else 0
        if name in self.adapter.pairs:
            a, b, _ = self.adapter.pairs[name]
            n += self.adapter.tensors.file_of(a).nbytes(a) + self.adapter.tensors.file_of(b).nbytes(b)
        if name in self.adapter.full:
            key = self.adapter.full[name]
            n += self.adapter.tensors.file_of(key).nbytes(key)
        return n

    def get(self, name: str) -> np.ndarray:
        return self.ref(name) if self._changed(name) else super().get(name)

    def ref(self, name: str) -> Union[TensorRef, np.ndarray]:
        if name in self.adapter.full:
            return self.adapter.tensors.ref(self.adapter.full[name])
        if name not in self.adapter.pairs:
            return super().ref(name)
        w = as_f32(np.asarray(self.checkpoint.get(name)))
        merged = w + self.adapter.delta(name, w.shape)
        dtype = FLOAT_NAMES.get(self.checkpoint.dtype(name))
        if dtype is None:
            raise ValueError(f"LoRA: {name} has dtype {self.checkpoint.dtype(name)}; only float weights can take an update")
        return merged if dtype == "float32" else round_to(merged, out=dtype)

    def release(self, name: str) -> None:
        if name not in self.adapter.full:
            super().release(name)


def open_lora(checkpoint: SafetensorsCheckpoint, folder: Optional[Path], where: str) -> ModelWeights:
    if folder is None:
        return ModelWeights(checkpoint)
    return LoraWeights(checkpoint, LoraAdapter(folder, where), where)
