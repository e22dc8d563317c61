"""A PEFT LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``), as
peft saves it: which weights it changes and the update of each, ``scale * (B @ A)`` with
``scale = lora_alpha / r`` (``/ sqrt(r)`` with ``use_rslora``; ``alpha_pattern`` per module);
embeddings take ``(B @ A)^T``; ``fan_in_fan_out`` transposes the update; tensors saved in
``modules_to_save`` replace the model's. Targets are named as the model's Hugging Face tensors
(``model.layers.0.self_attn.q_proj.weight``). https://github.com/huggingface/peft (LoRA:
https://arxiv.org/abs/2106.09685). The merge applies it while a tensor streams
(merge/weights.py), :func:`llamix.load` while it loads (loaders/lora.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .safetensors import SafetensorsCheckpoint


def as_f32(a: np.ndarray) -> np.ndarray:
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
        a, b = as_f32(np.asarray(self.tensors.get(a_key))), as_f32(np.asarray(self.tensors.get(b_key)))
        d = (b @ a) * np.float32(self.scale(target))
        if emb or self.fan_in_fan_out:
            d = d.T
        if tuple(d.shape) != tuple(shape):
            raise ValueError(f"LoRA {self.folder}: the update of {target} has shape {list(d.shape)}, the weight "
                             f"{list(shape)}")
        return np.ascontiguousarray(d, dtype=np.float32)
