"""Tokenization: SentencePiece and byte-level BPE vocabularies from GGUF metadata, ``tokenizer.model``
or ``tokenizer.json`` files (:class:`Tokenizer`), and UTF-8-correct streaming decoding.

A base module: it imports nothing of llamix above it. Reading a GGUF file's metadata belongs to
``llamix.loaders``, which registers its reader here (:func:`register_metadata_reader`).
"""
from __future__ import annotations

from .core import Tokenizer, check_text, check_token_ids, register_metadata_reader
from .pretokenizers import PRE_TOKENIZERS
from .stream import StreamDecoder, decode_stream
from .vocab import BYTE, CONTROL, NORMAL, UNDEFINED, UNKNOWN, UNUSED, USER_DEFINED, Vocab, vocab_from_gguf_metadata

__all__ = ["BYTE", "CONTROL", "NORMAL", "PRE_TOKENIZERS", "StreamDecoder", "Tokenizer", "UNDEFINED", "UNKNOWN",
           "check_text", "check_token_ids",
           "UNUSED", "USER_DEFINED", "Vocab", "decode_stream", "register_metadata_reader",
           "vocab_from_gguf_metadata"]
