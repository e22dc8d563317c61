"""Tokenization: SentencePiece and byte-level BPE vocabularies from GGUF metadata, ``tokenizer.model``
or ``tokenizer.json`` files (:class:`Tokenizer`), and UTF-8-correct streaming decoding.

It sits just above ``llamix.formats`` (it reads a GGUF file's metadata with the GGUF reader) and
below the loaders, which build a model's tokenizer with it.
"""
from __future__ import annotations

from .._lazy import lazy_names

# Each name and its module, imported on first use (PEP 562, as in llamix/__init__.py): the merge
# holds this package for the one case that reads a tokenizer.model (tokenizer_source), and a merge
# without it should not import the readers (with the GGUF reader: ~20 ms of every merge process).
_LAZY = {"Tokenizer": ".core", "check_text": ".core", "check_token_ids": ".core", "PRE_TOKENIZERS": ".pretokenizers",
         "StreamDecoder": ".stream", "decode_stream": ".stream", "added_tokens": ".spm",
         **{name: ".vocab" for name in ("BYTE", "CONTROL", "NORMAL", "UNDEFINED", "UNKNOWN", "UNUSED", "USER_DEFINED",
                                        "Vocab", "vocab_from_gguf_metadata")}}

__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = ["BYTE", "CONTROL", "NORMAL", "PRE_TOKENIZERS", "StreamDecoder", "Tokenizer", "UNDEFINED", "UNKNOWN",
           "check_text", "check_token_ids",
           "UNUSED", "USER_DEFINED", "Vocab", "decode_stream",
           "vocab_from_gguf_metadata"]
