"""Loaders: a checkpoint file or folder -> config + tensor lookup + tokenizer (:class:`Checkpoint`).
The only layer that knows file formats; everything above sees a Checkpoint."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import FormatError
from ..formats.gguf import GGUF_MAGIC, read_header
from ..tokenizer import Tokenizer
from .checkpoint import COMPUTE_TYPES, LOAD_QTYPES, Checkpoint, Progress, check_qtype
from .gguf import config_from_gguf, load_gguf, vocabulary_only
from .hf import config_from_hf, load_hf, read_hf_config
from .llama2c import config_from_llama2c, load_llama2c
from .lora import apply_lora_then_convert
from .random import SHAPES, byte_tokenizer, random_checkpoint, random_config

__all__ = ["COMPUTE_TYPES", "Checkpoint", "LOAD_QTYPES", "SHAPES", "byte_tokenizer", "config_from_gguf",
           "config_from_hf", "config_from_llama2c", "load_checkpoint", "random_checkpoint", "random_config",
           "read_hf_config", "vocabulary_only"]


# Files a user may point at instead of their Hugging Face folder (read as llama2.c they would give
# a meaningless "implausible header").
_PARTS_OF_FOLDERS = {".safetensors", ".json", ".model", ".txt", ".md", ".py", ".yml", ".yaml"}


def load_checkpoint(path: str | os.PathLike, tokenizer: str | os.PathLike | Tokenizer | bool | None = None,
                    qtype: str | None = None, progress: Progress | None = None,
                    lora: str | os.PathLike | None = None, lora_scale: float = 1.0) -> Checkpoint:
    """Read a GGUF file, a Hugging Face folder or a llama2.c ``.bin`` (told apart by the file's
    magic) into a :class:`Checkpoint`.

    ``tokenizer``: a Tokenizer, or a file :meth:`Tokenizer.from_file` reads (``tokenizer.model``,
    ``tokenizer.json``, a GGUF file), used instead of the model's own vocabulary: it is read
    first, and the model's own is then not read at all (a broken one does not stop the load).
    ``False``: no tokenizer at all (token ids only); ``None`` or ``True``: the model's own.
    ``qtype``: ``q4_0``, ``q8_0`` or ``f16`` to convert float weights while loading.
    ``progress(done, total, name)`` is called after each tensor. ``lora``: a LoRA adapter (GGUF
    file or PEFT folder) folded into the weights as stored, before ``qtype`` converts them
    (:mod:`llamix.loaders.lora`). Raises FileNotFoundError for a
    missing path and a :class:`llamix.LlamixError` (naming the file and the field or tensor) for
    anything malformed.
    """
    qtype = check_qtype(qtype)
    if lora is not None:   # one rounding of the adapted weights: fold into them as stored, then convert
        ck = load_checkpoint(path, tokenizer=tokenizer, progress=progress)
        apply_lora_then_convert(ck, lora, lora_scale, qtype)
        return ck
    progress = progress if callable(progress) else None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    override: Tokenizer | bool | None = None if tokenizer is True else tokenizer
    if override is not None and override is not False and not isinstance(override, Tokenizer):
        override = Tokenizer.from_file(override)
    header = read_header(path) if path.is_file() else None
    if header is not None and header[1] == 0:
        what = f"{path}: a vocabulary-only GGUF file (no tensors): it holds a tokenizer but no weights"
        raise FormatError(f"{what}; load it with llamix.Tokenizer.from_file, or pass it as tokenizer=",
                          cli=f"{what}; give it as --tokenizer {path}")
    if path.is_dir():
        ck = load_hf(path, qtype, progress, tokenizer=override)
    else:
        with open(path, "rb") as f:
            magic = f.read(4)
        if len(magic) < 4 and path.suffix.lower() == ".gguf":   # as the GGUF reader says of 4..23 bytes
            raise FormatError(f"{path}: file too short ({len(magic)} bytes) to be GGUF"
                              + (": the file is empty" if not magic else ""))
        if magic != GGUF_MAGIC and path.suffix.lower() == ".gguf":
            raise FormatError(f"{path}: not a GGUF file: bad magic {magic!r} (expected {GGUF_MAGIC!r})")
        if magic != GGUF_MAGIC and path.suffix.lower() in _PARTS_OF_FOLDERS:
            # point to the folder when the file is a Hugging Face part or lies in one; a stray .txt or
            # a llama2.c folder's tokenizer.model is no part of one
            in_folder = path.suffix.lower() in (".safetensors", ".json") or (path.parent / "config.json").is_file()
            hint = (f"this {path.suffix} file is part of a folder: pass the folder holding config.json ({path.parent})"
                    if in_folder else f"this {path.suffix} file is not a model (a tokenizer file goes to {{}})")
            what = f"{path}: a model is a GGUF file, a llama2.c .bin or a Hugging Face folder; {hint}"
            raise FormatError(what.format("tokenizer="), cli=what.format("--tokenizer"))
        load = load_gguf if magic == GGUF_MAGIC else load_llama2c
        ck = load(path, qtype, progress, tokenizer=override)
    if ck.tokenizer is not None and ck.tokenizer.vocab_size > ck.config.vocab_size:
        raise FormatError(f"{ck.tokenizer.source}: tokenizer has {ck.tokenizer.vocab_size} pieces but the model's "
                          f"vocabulary is {ck.config.vocab_size} ({ck.source})")
    return ck
