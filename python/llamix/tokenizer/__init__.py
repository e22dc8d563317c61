"""Tokenization: SentencePiece and byte-level BPE vocabularies from GGUF metadata, ``tokenizer.model``
or ``tokenizer.json`` files (:class:`Tokenizer`), and UTF-8-correct streaming decoding.

It sits just above ``llamix.formats`` (it reads a GGUF file's metadata with the GGUF reader) and
below the loaders, which build a model's tokenizer with it.
"""
from __future__ import annotations

from .core import Tokenizer, check_text, check_token_ids
from .pretokenizers import PRE_TOKENIZERS
from .stream import StreamDecoder, decode_stream
from .vocab import BYTE, CONTROL, NORMAL, UNDEFINED, UNKNOWN, UNUSED, USER_DEFINED, Vocab, vocab_from_gguf_metadata

__all__ = ["BYTE", "CONTROL", "NORMAL", "PRE_TOKENIZERS", "StreamDecoder", "Tokenizer", "UNDEFINED", "UNKNOWN",
           "check_text", "check_token_ids",
           "UNUSED", "USER_DEFINED", "Vocab", "decode_stream",
           "vocab_from_gguf_metadata"]
