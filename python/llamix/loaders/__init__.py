"""Loaders: a checkpoint file or folder -> config + tensor lookup + tokenizer (:class:`Checkpoint`).
The only layer that knows file formats; everything above sees a Checkpoint."""
from __future__ import annotations

import os
from pathlib import Path

from ..tokenizer import Tokenizer
from .checkpoint import COMPUTE_TYPES, LOAD_QTYPES, Checkpoint, Progress, check_qtype
from .gguf import config_from_gguf, load_gguf
from .hf import config_from_hf, load_hf, read_hf_config
from .llama2c import config_from_llama2c, load_llama2c
from .random import SHAPES, byte_tokenizer, random_checkpoint, random_config

__all__ = ["COMPUTE_TYPES", "Checkpoint", "LOAD_QTYPES", "SHAPES", "byte_tokenizer", "config_from_gguf",
           "config_from_hf", "config_from_llama2c", "load_checkpoint", "random_checkpoint", "random_config",
           "read_hf_config"]


def load_checkpoint(path: str | os.PathLike, tokenizer: str | os.PathLike | Tokenizer | bool | None = None,
                    qtype: str | None = None, progress: Progress | None = None) -> Checkpoint:
    """Read a GGUF file, a Hugging Face folder or a llama2.c ``.bin`` (told apart by the file's
    magic) into a :class:`Checkpoint`.

    ``tokenizer``: a SentencePiece ``.model`` file or Tokenizer overriding the model's own;
    ``False`` skips the vocabulary (the checkpoint runs token ids; its ``tokenizer`` is None).
    ``qtype``: ``q4_0``, ``q8_0`` or ``f16`` to convert float weights while loading.
    ``progress(done, total, name)`` is called after each tensor. Raises FileNotFoundError for a
    missing path and ValueError (naming the file and the field or tensor) for anything malformed.
    """
    qtype = check_qtype(qtype)
    progress = progress if callable(progress) else None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if tokenizer is True:
        tokenizer = None
    if path.is_dir():
        ck = load_hf(path, qtype, progress)
    else:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            ck = load_gguf(path, qtype, progress, tokenizer=tokenizer is not False)
        else:
            ck = load_llama2c(path, qtype, progress)
    if tokenizer is False:
        ck.tokenizer = None
    elif tokenizer is not None:
        ck.tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(tokenizer)
        ck.tokenizer_entries = []
    if ck.tokenizer is not None and ck.tokenizer.vocab_size > ck.config.vocab_size:
        raise ValueError(f"{ck.tokenizer.source}: tokenizer has {ck.tokenizer.vocab_size} pieces but the model's "
                         f"vocabulary is {ck.config.vocab_size}")
    return ck
