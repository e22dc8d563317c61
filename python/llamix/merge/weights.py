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

import json
import re
from pathlib import Path
from typing import Optional, Union

import numpy as np

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


def _as_f32(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint16:  # bfloat16 bit patterns
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


class LoraAdapter:
    """A PEFT LoRA adapter folder: which tensors it changes and how."""

    def __init__(self, folder: Path, where: str):
        self.folder = folder
        cfg_path = folder / "adapter_config.json"
        if not cfg_path.is_file():
            raise ConfigError(f"{where}: {folder} is not a PEFT adapter (no adapter_config.json)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: {cfg_path} is not valid JSON ({e})") from None
        if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
            raise ConfigError(f"{where}: {folder} is a {cfg.get('peft_type')} adapter; only LoRA adapters are supported")
        if cfg.get("use_dora"):
            raise ConfigError(f"{where}: {folder} is a DoRA adapter (use_dora); only plain LoRA is supported")
        weights = folder / "adapter_model.safetensors"
        if not weights.is_file():
            hint = " (adapter_model.bin is a pickle, which llamix never loads: save the adapter with " \
                   "safe_serialization=True)" if (folder / "adapter_model.bin").exists() else ""
            raise ConfigError(f"{where}: {folder} has no adapter_model.safetensors{hint}")
        self.tensors = SafetensorsCheckpoint(weights)
        self.alpha = float(cfg.get("lora_alpha", cfg.get("r", 8)))
        self.rslora = bool(cfg.get("use_rslora", False))
        self.fan_in_fan_out = bool(cfg.get("fan_in_fan_out", False))
        self.alpha_pattern = dict(cfg.get("alpha_pattern") or {})
        self.pairs: dict[str, tuple[str, str, bool]] = {}  # target weight -> (A, B, embedding)
        self.full: dict[str, str] = {}                     # target weight -> saved replacement
        unsupported = []
        for key in self.tensors.keys():
            name = re.sub(r"^base_model\.model\.", "", key)
            m = re.match(r"^(.*)\.lora_(embedding_)?A(\.[^.]+)?(\.weight)?$", name)
            if m:
                module, emb = m.group(1), bool(m.group(2))
                b_key = key.replace("lora_embedding_A" if emb else "lora_A", "lora_embedding_B" if emb else "lora_B")
                if b_key not in self.tensors:
                    raise ConfigError(f"{where}: {weights} has {key} but no {b_key}")
                self.pairs[f"{module}.weight"] = (key, b_key, emb)
            elif re.search(r"\.lora_(embedding_)?B(\.[^.]+)?(\.weight)?$", name):
                continue
            elif "lora_" in name or "magnitude" in name:
                unsupported.append(key)
            else:  # modules_to_save: a whole tensor saved with the adapter
                self.full[re.sub(r"\.modules_to_save(\.[^.]+)?", "", name)] = key
        if unsupported:
            raise ConfigError(f"{where}: {weights} holds tensors llamix does not apply ({', '.join(unsupported[:3])}); "
                              "supported: lora_A/lora_B weights, lora_embedding_A/B, modules_to_save")

    def scale(self, target: str) -> float:
        module = target[: -len(".weight")]
        a, _, _ = self.pairs[target]
        r = self.tensors.shape(a)[0]
        alpha = self.alpha
        for pattern, value in self.alpha_pattern.items():
            if re.fullmatch(rf"(.*\.)?{pattern}", module):
                alpha = float(value)
                break
        return alpha / (r ** 0.5 if self.rslora else r)

    def delta(self, target: str, shape: tuple[int, ...]) -> np.ndarray:
        """scale * (B @ A), shaped like the target weight (float32)."""
        a_key, b_key, emb = self.pairs[target]
        a, b = _as_f32(np.asarray(self.tensors.get(a_key))), _as_f32(np.asarray(self.tensors.get(b_key)))
        d = (b @ a) * np.float32(self.scale(target))
        if emb or self.fan_in_fan_out:
            d = d.T
        if tuple(d.shape) != tuple(shape):
            raise ValueError(f"LoRA {self.folder}: the update of {target} has shape {list(d.shape)}, the weight "
                             f"{list(shape)}")
        return np.ascontiguousarray(d, dtype=np.float32)


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
        w = _as_f32(np.asarray(self.checkpoint.get(name)))
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
