"""A LoRA adapter applied to a loaded checkpoint: ``llamix.load(path, lora=ADAPTER,
lora_scale=1.0)`` (llama.cpp's ``--lora`` / ``--lora-scaled``), ADAPTER a PEFT adapter folder or a
GGUF adapter file as llama.cpp's convert_lora_to_gguf writes it.

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
from ..formats.gguf import GGUF_MAGIC, GGUFReader
from ..formats.names import file_rows_to_pairs, fused_parts, gguf_name, hf_norm_offset, hf_rows_to_gguf
from ..formats.peft_lora import LoraAdapter, as_f32
from ..quant import QuantizedTensor, quantize
from .checkpoint import COMPUTE_TYPES, Checkpoint, check_qtype, float_weight


def apply_lora(ck: Checkpoint, adapter_path: str | os.PathLike, lora_scale: float = 1.0) -> None:
    """Fold the LoRA adapter ``adapter_path`` (a PEFT folder or a GGUF file) into ``ck``'s weights,
    in place.

    Raises FileNotFoundError for a missing folder, ConfigError naming the adapter file and tensor
    for an adapter that does not fit the model (a module it lacks, another shape), ArgumentError
    for a ``lora_scale`` that is not a finite number."""
    if isinstance(lora_scale, bool) or not isinstance(lora_scale, (int, float, np.floating, np.integer)) \
            or not np.isfinite(lora_scale):
        raise ArgumentError(f"lora_scale must be a finite number, got {lora_scale!r}")
    folder = Path(adapter_path)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such LoRA adapter file or folder")
    if folder.is_file():
        with open(folder, "rb") as f:
            if f.read(4) == GGUF_MAGIC:
                _apply_gguf_adapter(ck, folder, float(lora_scale))
                ck.lora_adapters.append((str(adapter_path), float(lora_scale)))
                return
        raise ConfigError(f"lora={folder}: not a GGUF LoRA adapter; give a GGUF adapter file or a PEFT adapter "
                          "folder (adapter_config.json + adapter_model.safetensors)")
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
        for name, a, b in _canonical_parts(target, config, where, whole=True):
            w = ck.tensors.get(name)
            if isinstance(w, np.ndarray) and w.ndim == 1 and saved.shape == w.shape:
                # a norm or bias (extract-lora's and mergekit-extract-lora's changed ones), read as
                # the Hugging Face loader reads it: Gemma's norms as 1 + w, q/k-norm rows permuted
                value = saved + np.float32(hf_norm_offset(config.architecture) if name.endswith("norm.weight") else 0)
                ck.tensors[name] = hf_rows_to_gguf(name, value, config)
                continue
            if not isinstance(w, QuantizedTensor) or tuple(saved[a:b].shape) != tuple(w.shape):
                raise ConfigError(f"{where}: {folder / 'adapter_model.safetensors'} saves {target} with shape "
                                  f"{list(saved.shape)}, which does not replace the model's {name}")
            ck.tensors[name] = _stored_like(name, w, hf_rows_to_gguf(name, saved[a:b], config))
    ck.lora_adapters.append((str(adapter_path), float(lora_scale)))


def apply_lora_then_convert(ck: Checkpoint, adapter_path, lora_scale: float = 1.0, qtype: str | None = None) -> None:
    """Fold the adapter into ``ck`` (loaded with no ``qtype``: its float weights as stored), then
    convert the float weights to ``qtype`` as the load converts them: one rounding of the adapted
    weights (folded into weights already converted, the update would be rounded a second time,
    and one smaller than ``qtype``'s step would mostly be lost). Block-quantized weights stay as
    they are, listed in ``ck.kept_quantized`` as the load lists them."""
    qtype = check_qtype(qtype)
    apply_lora(ck, adapter_path, lora_scale)
    if qtype is None:
        return
    for name, t in list(ck.tensors.items()):
        if not isinstance(t, QuantizedTensor) or len(t.shape) != 2:
            continue
        if t.qtype in _FLOAT_VIEWS:
            ck.tensors[name] = float_weight(t.data.view(_FLOAT_VIEWS[t.qtype]).reshape(t.shape), t.qtype, qtype)
        elif t.qtype != qtype:   # block-quantized in the file: run as stored, as the load leaves it
            ck.kept_quantized[name] = t.qtype


_FLOAT_VIEWS = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}   # float_weight's inputs


def _apply_gguf_adapter(ck: Checkpoint, path: Path, lora_scale: float) -> None:
    """A LoRA adapter as llama.cpp's convert_lora_to_gguf writes it: ``general.type = adapter``,
    ``adapter.type = lora``, ``adapter.lora.alpha``, and per weight ``NAME.lora_a`` (r, in) and
    ``NAME.lora_b`` (out, r) under the model's GGUF names, rows in the model file's order. The
    update is ``lora_scale * alpha / r * (B @ A)`` (``lora_scale * (B @ A)`` when alpha is 0), as
    llama.cpp scales it. ``token_embd.weight`` has A and B flipped, as llama.cpp reads them:
    ``.lora_a`` (vocab, r), ``.lora_b`` (embd, r), update ``A @ B^T``. Whole ``*_norm.weight``
    tensors (mergekit-extract-lora's changed norms) replace the model's."""
    reader = GGUFReader(path)
    try:
        _fold_gguf_adapter(ck, reader, f"lora={path}", lora_scale)
    finally:
        reader.close()


def _fold_gguf_adapter(ck: Checkpoint, reader: GGUFReader, where: str, lora_scale: float) -> None:
    kind = (reader.get("general.type"), reader.get("adapter.type"))
    if kind != ("adapter", "lora"):
        raise ConfigError(f"{where}: general.type / adapter.type are {kind[0]!r} / {kind[1]!r}, not a LoRA adapter "
                          "('adapter' / 'lora')")
    arch = reader.get("general.architecture")
    if arch is not None and arch != ck.config.architecture:
        raise ConfigError(f"{where}: general.architecture is {arch!r}, the model's is {ck.config.architecture!r}")
    alpha = float(reader.get("adapter.lora.alpha", 0.0))
    for a_name, a_tensor in reader.tensors.items():
        if not a_name.endswith(".lora_a"):
            if a_name.endswith("_norm.weight"):
                _replace_norm(ck, reader.tensors[a_name], where)   # mergekit-extract-lora's changed norms
                continue
            if not a_name.endswith(".lora_b"):
                raise ConfigError(f"{where}: tensor {a_name!r} is neither a .lora_a nor a .lora_b")
            continue
        name = a_name[: -len(".lora_a")]
        if name + ".lora_b" not in reader.tensors:
            raise ConfigError(f"{where}: {a_name} has no {name}.lora_b")
        a, b = (_plain_f32(reader.tensors[n], where) for n in (a_name, name + ".lora_b"))
        embd = name == "token_embd.weight"   # A and B flipped (llama.cpp's llm_build_inp_embd): (vocab, r), (embd, r)
        if a.ndim != 2 or b.ndim != 2 or (a.shape[1] if embd else a.shape[0]) != b.shape[1]:
            raise ConfigError(f"{where}: {name}.lora_a {list(a.shape)} and .lora_b {list(b.shape)} are not "
                              + ("(vocab, r) and (embd, r)" if embd else "(r, in) and (out, r)"))
        scale = np.float32(lora_scale * (alpha / b.shape[1] if alpha else 1.0))   # r: lora_b's, as llama.cpp
        delta = ((a @ b.T) if embd else (b @ a)) * scale
        for part, first, end in fused_parts(name, ck.config) or [(name, 0, None)]:
            w = ck.tensors.get(part)
            rows = delta[first:end]
            if w is None or not isinstance(w, QuantizedTensor) or tuple(w.shape) != rows.shape:
                have = "no such tensor" if w is None else f"shape {list(getattr(w, 'shape', ()))}"
                raise ConfigError(f"{where}: the update of {name} has shape {list(delta.shape)}; the model's {part}: "
                                  f"{have} (an adapter for another model?)")
            ck.tensors[part] = _stored_like(part, w, w.dequantize() + file_rows_to_pairs(part, rows, ck.config))


def _replace_norm(ck: Checkpoint, t, where: str) -> None:
    """A norm weight a GGUF adapter carries whole (mergekit-extract-lora saves the norms a
    fine-tune changed; convert_lora_to_gguf keeps them): it replaces the model's, read as the GGUF
    loader reads norms. llama.cpp skips them for now; the PEFT folder they came from replaces them,
    and so does this."""
    w = ck.tensors.get(t.name)
    value = _plain_f32(t, where).reshape(-1) if t.type.name in ("F32", "F16", "BF16") else None
    if w is None or isinstance(w, QuantizedTensor) or value is None or value.shape != np.shape(w):
        have = "no such tensor" if w is None else f"shape {list(np.shape(w))}"
        raise ConfigError(f"{where}: {t.name} {list(int(n) for n in t.shape)} ({t.type.name}) does not replace the "
                          f"model's {t.name}: {have}")
    ck.tensors[t.name] = file_rows_to_pairs(t.name, value, ck.config)


def _plain_f32(t, where: str) -> np.ndarray:
    """A lora_a / lora_b tensor in float32: F32, F16, BF16, or a block type llamix computes with
    (convert_lora_to_gguf --outtype q8_0 writes Q8_0 ones)."""
    if t.type.name in ("F32", "F16", "BF16"):
        return as_f32(np.asarray(t.array()))
    qt = t.type.name.lower()
    if qt not in COMPUTE_TYPES or len(t.shape) != 2:
        raise ConfigError(f"{where}: tensor {t.name!r} is {t.type.name}; LoRA adapters are read in F32, F16, BF16 "
                          f"or {', '.join(x.upper() for x in COMPUTE_TYPES if x not in ('f32', 'f16', 'bf16'))}")
    rows, k = (int(n) for n in t.shape)
    return QuantizedTensor(np.ascontiguousarray(t.raw()), qt, (rows, k)).dequantize()


def _canonical_parts(target: str, config, where: str, whole: bool = False) -> list[tuple[str, int, int]]:
    """The checkpoint's tensors a Hugging Face weight name covers: [(name, first row, end row)]
    (``whole``: a tensor saved whole, which may be a bias too)."""
    try:
        file_name = gguf_name(target, config.architecture)
    except FormatError:
        file_name = None
    if file_name is None or not (file_name.endswith(".weight") or (whole and file_name.endswith(".bias"))):
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
