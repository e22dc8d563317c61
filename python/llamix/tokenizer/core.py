"""``llamix.Tokenizer``: text <-> token ids for SentencePiece and byte-level BPE vocabularies, read
from a GGUF file's metadata, a ``tokenizer.model`` or a Hugging Face ``tokenizer.json``.

Encoding follows llama.cpp's ``llama_tokenize`` (``src/llama-vocab.cpp``): special tokens written
in the text are cut out first (user-defined tokens always, control tokens only with
``parse_special``; longest first, ``tokenizer_st_partition``), each piece of text between them is
tokenized on its own (a SentencePiece vocabulary with ``add_space_prefix`` gives each one its
leading space), and ``add_special`` adds BOS / EOS as the vocabulary's ``add_bos_token`` /
``add_eos_token`` say. Decoding renders each token as llama.cpp's ``token_to_piece`` does: control
and unknown tokens only with ``special=True``, user-defined tokens as written, byte tokens as
their byte.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import ArgumentError, FormatError, describe
from ..formats.gguf import GGUFReader
from . import bpe, spm
from .vocab import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, Vocab, vocab_from_gguf_metadata

class Tokenizer:
    """Text <-> token ids.

    Build with :meth:`from_file` (a GGUF file, also vocabulary-only; a ``tokenizer.model``; a
    ``tokenizer.json``; or a folder holding one of them) or :meth:`from_gguf_metadata`;
    ``Tokenizer(processor)`` wraps a loaded ``sentencepiece.SentencePieceProcessor``.

    Attributes: ``vocab_size``, ``bos_id`` / ``eos_id`` (-1 when the vocabulary has none),
    ``eos_ids`` (every end-of-generation token, as llama.cpp's EOG set), ``add_bos`` /
    ``add_eos`` (what ``encode(add_special=True)`` adds), ``model`` (``"llama"`` for SentencePiece,
    ``"gpt2"`` for byte-level BPE), ``pre`` (the BPE pre-tokenizer), ``source``.
    """

    def __init__(self, processor, add_bos: bool = True, source: str = ""):
        vocab = spm.vocab_from_processor(processor, add_bos)
        self._setup(vocab, spm.SentencePieceBackend(processor), source)

    def _setup(self, vocab: Vocab, backend, source: str, hf=None) -> None:
        self.vocab = vocab
        self._backend = backend
        self._hf = hf                     # a tokenizer.json's own tokenizers.Tokenizer (decodes itself)
        self.source = source
        self._pieces: list[bytes] | None = None
        self._special_re: dict[bool, re.Pattern | None] = {}
        self._special_index: dict[str, int] | None = None   # special token text -> id

    @classmethod
    def _make(cls, vocab: Vocab, backend, source: str, hf=None) -> "Tokenizer":
        tok = cls.__new__(cls)
        tok._setup(vocab, backend, source, hf)
        return tok

    # --- construction ---
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        """A tokenizer from a GGUF file (its ``tokenizer.ggml.*`` metadata; a vocabulary-only file
        too), a SentencePiece ``.model``, a Hugging Face ``tokenizer.json``, or a folder holding
        ``tokenizer.model`` (preferred), ``tokenizer.json`` or a single ``.gguf``. Beside a
        ``.model`` or ``tokenizer.json``, ``tokenizer_config.json`` gives ``add_bos_token`` /
        ``add_eos_token`` (and, for tokenizer.json, the BOS/EOS tokens), and
        ``generation_config.json`` further end-of-generation ids. Raises FileNotFoundError or
        ValueError naming the file."""
        path = Path(path)
        if path.is_dir():
            found = [path / "tokenizer.model", path / "tokenizer.json"]
            ggufs = sorted(path.glob("*.gguf"))
            found += ggufs if len(ggufs) == 1 else []
            for f in found:
                if f.is_file():
                    return cls.from_file(f)
            raise FileNotFoundError(f"{path}: no tokenizer.model, tokenizer.json or single .gguf file in the folder")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer file")
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"GGUF":
            return cls.from_gguf_metadata(GGUFReader(path).metadata, source=str(path))
        if path.suffix == ".json" or head.lstrip()[:1] == b"{":
            return cls.from_tokenizer_json(path)
        return cls.from_sentencepiece(path)

    @classmethod
    def from_sentencepiece(cls, path: str | os.PathLike) -> "Tokenizer":
        """A SentencePiece ``.model`` file as it is (its normalizer included), with the tokens a
        Hugging Face folder adds to it beside it (``added_tokens.json``, ``tokenizer_config.json``'s
        ``added_tokens_decoder``) as llama.cpp's converter takes them."""
        import sentencepiece as spm_lib

        path = Path(path)
        sp = spm_lib.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - sentencepiece raises plain RuntimeError/OSError
            raise FormatError(f"{path}: not a SentencePiece model ({e})") from None
        settings = bpe.folder_settings(path.parent)
        vocab = spm.vocab_from_processor(sp, settings.get("add_bos_token", True), source=str(path))
        spm.add_tokens(vocab, spm.added_tokens(path.parent))
        vocab.add_eos = settings.get("add_eos_token", False) and vocab.eos_id >= 0
        vocab.extra_eos = tuple(i for i in settings.get("eos_ids", ()) if 0 <= i < vocab.size)
        vocab.finish()
        return cls._make(vocab, spm.SentencePieceBackend(sp), str(path))

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> "Tokenizer":
        """A Hugging Face ``tokenizer.json`` (any model the ``tokenizers`` library reads); BOS/EOS
        from ``tokenizer_config.json`` beside it, or from what its post-processor adds."""
        path = Path(path)
        hf = bpe.load_tokenizer_json(path)
        vocab = bpe.vocab_from_hf(hf, bpe.folder_settings(path.parent), str(path))
        return cls._make(vocab, bpe.HFBackend(hf), str(path), hf=hf)

    @classmethod
    def from_gguf_metadata(cls, meta: Mapping, source: str = "GGUF") -> "Tokenizer":
        """A tokenizer from ``tokenizer.ggml.*`` metadata (a dict, as a GGUF reader gives it):
        SentencePiece (model ``llama``) or byte-level BPE (model ``gpt2``, with the
        ``tokenizer.ggml.pre`` pre-tokenizers llama.cpp knows). Raises ValueError naming ``source``
        and the key for a missing, mistyped or out-of-range entry, or an unknown pre-tokenizer."""
        vocab = vocab_from_gguf_metadata(meta, source)
        if vocab.model == "llama":
            return cls._make(vocab, spm.SentencePieceBackend(spm.processor_from_vocab(vocab, source)), source)
        try:
            hf = bpe.tokenizer_from_vocab(vocab)
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception
            raise FormatError(f"{source}: the tokenizer metadata does not form a BPE tokenizer ({e})") from None
        return cls._make(vocab, bpe.HFBackend(hf, chunk=True), source)

    # --- what the vocabulary says ---
    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    @property
    def bos_id(self) -> int:
        return self.vocab.bos_id

    @property
    def eos_id(self) -> int:
        return self.vocab.eos_id

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Every token that ends generation: EOS, end-of-turn (``tokenizer.ggml.eot_token_id``),
        end-of-message, and the tokens llama.cpp recognises by their text (``<|im_end|>``,
        ``<|endoftext|>``, ``<end_of_turn>``, ``<|eot_id|>``, ``<|end|>`` ...)."""
        return self.vocab.eog

    @property
    def add_bos(self) -> bool:
        return self.vocab.add_bos

    @add_bos.setter
    def add_bos(self, value: bool) -> None:
        self.vocab.add_bos = bool(value) and self.vocab.bos_id >= 0

    @property
    def add_eos(self) -> bool:
        return self.vocab.add_eos

    @property
    def model(self) -> str:
        return self.vocab.model

    @property
    def pre(self) -> str | None:
        return self.vocab.pre

    @property
    def tokens(self) -> list[str]:
        """The token texts, as GGUF stores them."""
        return self.vocab.tokens

    @property
    def token_types(self) -> np.ndarray:
        """GGUF token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte)."""
        return self.vocab.types

    @property
    def sp(self):
        """The SentencePieceProcessor of a SentencePiece vocabulary (None for others)."""
        return getattr(self._backend, "sp", None)

    @property
    def hf(self):
        """The ``tokenizers.Tokenizer`` doing BPE (None for SentencePiece)."""
        return getattr(self._backend, "hf", None)

    def gguf_pre(self) -> str:
        """The ``tokenizer.ggml.pre`` name llama.cpp tokenizes this BPE vocabulary with: the
        GGUF's own, or for a tokenizer.json the one found to tokenize as it does (ValueError if
        none does)."""
        if self.vocab.pre is None and self._hf is not None and self.model == "gpt2":
            bpe.detect_pre(self._hf, self.vocab, self.source)
        if self.vocab.pre is None:
            raise FormatError(f"{self.source}: no BPE pre-tokenizer name for this vocabulary")
        return self.vocab.pre

    def is_eog(self, token: int) -> bool:
        return int(token) in self.vocab.eog

    def piece(self, i: int) -> str:
        """The text of token ``i`` as the vocabulary stores it."""
        return self.vocab.tokens[int(i)]

    def __repr__(self) -> str:
        kind = {"llama": "SentencePiece", "gpt2": f"BPE, pre {self.pre}"}.get(self.model, self.model)
        return f"Tokenizer({self.source!r}, {kind}, {self.vocab_size} tokens)"

    # --- encoding ---
    def encode(self, text: str, add_special: bool = True, parse_special: bool = False, *,
               bos: bool | None = None) -> list[int]:
        """Token ids of ``text`` as llama.cpp's ``llama_tokenize(text, add_special, parse_special)``.

        ``add_special``: add BOS / EOS where the vocabulary asks for them (``add_bos_token`` /
        ``add_eos_token``). ``parse_special``: control tokens written in the text
        (``<|im_start|>``, ``<start_of_turn>``) become their ids; otherwise they are tokenized as
        text (user-defined tokens always match). ``bos`` is an older name of ``add_special``.
        """
        if bos is not None:
            add_special = bool(bos)
        text = check_text(text)
        v = self.vocab
        out: list[int] = [v.bos_id] if add_special and v.add_bos and v.bos_id >= 0 else []
        if text:
            parts = self._partition(text, parse_special)
            fragments = [p for p in parts if isinstance(p, str)]
            encoded = iter(self._backend.encode(fragments) if fragments else [])
            for p in parts:
                if isinstance(p, str):
                    out.extend(next(encoded))
                else:
                    out.append(p)
        if add_special and v.add_eos and v.eos_id >= 0:
            out.append(v.eos_id)
        return out

    def _partition(self, text: str, parse_special: bool) -> list:
        """``text`` as a list of str fragments and int special-token ids (llama.cpp's
        tokenizer_st_partition). Longer special tokens are found first; where two overlap, the
        leftmost longest wins (llama.cpp takes the longer one wherever it is, which differs only
        for special tokens that overlap one another)."""
        pattern = self._special_pattern(parse_special)
        if pattern is None:
            return [text]
        parts: list = []
        pos = 0
        strip_next = False
        index = self._special_index
        for m in pattern.finditer(text):
            start, end = m.span()
            tid = index[m.group()]
            left = text[pos:start]
            if strip_next:
                left = left.lstrip(_SPACE)
            if tid in self.vocab.lstrip:
                left = left.rstrip(_SPACE)
            if left:
                parts.append(left)
            parts.append(tid)
            strip_next = tid in self.vocab.rstrip
            pos = end
        rest = text[pos:]
        if strip_next:
            rest = rest.lstrip(_SPACE)
        if rest:
            parts.append(rest)
        return parts

    def _special_pattern(self, parse_special: bool) -> re.Pattern | None:
        if parse_special not in self._special_re:
            ids = self.vocab.special_ids(parse_special)
            texts = [self.vocab.tokens[i] for i in ids]
            if self._special_index is None:
                self._special_index = {self.vocab.tokens[i]: i for i in self.vocab.special_ids(True).tolist()}
            self._special_re[parse_special] = re.compile(trie_pattern(texts)) if texts else None
        return self._special_re[parse_special]

    # --- decoding ---
    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        """The text of ``ids``. Control and unknown tokens show only with ``special=True``; a
        SentencePiece vocabulary's space prefix is removed from the first piece. Bytes that do
        not form UTF-8 (an incomplete character at the end) show as U+FFFD."""
        ids = check_token_ids(ids, self.vocab_size)
        if self._hf is not None:
            return self._hf.decode(ids, skip_special_tokens=not special)
        pieces, attrs = self._piece_bytes(), self.vocab.attrs
        chunks = [pieces[i] for i in ids]
        if special:
            for k, i in enumerate(ids):
                if not chunks[k] and attrs[i] in (CONTROL, UNKNOWN):
                    chunks[k] = self.vocab.tokens[i].encode("utf-8")
        if self.vocab.model == "llama" and self.vocab.add_space_prefix:
            # the space SentencePiece put before the text (add_dummy_prefix) comes off the first piece
            k = next((k for k, b in enumerate(chunks) if b), None)
            if k is not None and attrs[ids[k]] == NORMAL and chunks[k][:1] == b" ":
                chunks[k] = chunks[k][1:]
        return b"".join(chunks).decode("utf-8", errors="replace")

    def pieces(self, ids: Sequence[int]) -> list[bytes]:
        """Each of ``ids``' bytes as llama.cpp's ``token_to_piece(special=True)`` renders it: control
        and unknown tokens as their text, no space prefix removed (llama-server's ``/tokenize``
        pieces and ``/detokenize``)."""
        ids = check_token_ids(ids, self.vocab_size)
        pieces, attrs = self._piece_bytes(), self.vocab.attrs
        return [pieces[i] or (self.vocab.tokens[i].encode("utf-8") if attrs[i] in (CONTROL, UNKNOWN) else b"")
                for i in ids]

    def token_bytes(self) -> list[bytes]:
        """Every token's bytes as llama.cpp's ``token_to_piece(special=False)`` renders them (control,
        unknown and unused tokens: empty), indexed by id; e.g. for a grammar engine's token table."""
        return list(self._piece_bytes())

    def _piece_bytes(self) -> list[bytes]:
        """Each token's bytes as llama.cpp's token_to_piece renders it with special=False (made on
        first use: a large vocabulary takes a moment)."""
        if self._pieces is None:
            v = self.vocab
            attrs = v.attrs.tolist()
            spm_kind = v.model == "llama"
            out = []
            for t, a in zip(v.tokens, attrs):
                if a == NORMAL:
                    out.append(t.replace("\u2581", " ").encode("utf-8") if spm_kind else bpe.token_bytes(t))
                elif a == USER_DEFINED:
                    out.append(t.encode("utf-8"))
                elif a == BYTE and len(t) == 6 and t.startswith("<0x"):
                    out.append(bytes([int(t[3:5], 16)]))
                elif a == BYTE:
                    out.append(bpe.token_bytes(t))
                else:  # control, unknown, unused, undefined: nothing unless asked for
                    out.append(b"")
            self._pieces = out
        return self._pieces


_SPACE = " \t\n\v\f\r"  # C's isspace, which llama.cpp strips around special tokens


def check_text(text, what: str = "text") -> str:
    """``text`` checked for tokenizing: a str of valid Unicode (no lone surrogates, which cannot be
    encoded as UTF-8), or UTF-8 bytes (decoded); ArgumentError naming ``what`` otherwise."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ArgumentError(f"{what}: not valid UTF-8 (byte {raw[e.start]:#04x} at {e.start})") from None
    if not isinstance(text, str):
        raise ArgumentError(f"{what} must be a str (or UTF-8 bytes), got {describe(text)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ArgumentError(f"{what}: not valid Unicode: a lone surrogate U+{ord(text[e.start]):04X} at position "
                            f"{e.start} (bytes that were not UTF-8, read with errors='surrogateescape'?)") from None
    return text


def check_token_ids(ids, vocab_size: int, what: str = "ids") -> list[int]:
    """``ids`` as a list of Python ints, each a token id in [0, vocab_size): a sequence (or a 1-D
    integer numpy array) of integers; floats, strings, booleans and nested lists are refused with
    an ArgumentError naming ``what``, never truncated or split into characters."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ArgumentError(f"{what} must be a 1-D array of integer token ids, got {ids.dtype} of shape {ids.shape}")
        out = ids.tolist()
    else:
        if isinstance(ids, (str, bytes, bytearray, dict)) or not hasattr(ids, "__iter__"):
            raise ArgumentError(f"{what} must be a sequence of integer token ids, got {describe(ids)}")
        out = []
        for k, i in enumerate(ids):
            if type(i) is not int:
                if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
                    raise ArgumentError(f"{what}[{k}] must be an integer token id, got {describe(i)}")
                i = int(i)
            out.append(i)
    if out and (min(out) < 0 or max(out) >= vocab_size):
        k, bad = next((k, i) for k, i in enumerate(out) if not 0 <= i < vocab_size)
        raise ArgumentError(f"{what}[{k}]: token id {bad} is outside the vocabulary (0..{vocab_size - 1})")
    return out


def trie_pattern(words: list[str]) -> str:
    """A regular expression matching any of ``words``, longest first, written as their prefix
    tree: a plain alternation of Gemma-3's 6414 special tokens is tried one by one at every ``<``
    and newline (seconds per megabyte), the tree follows one branch per character."""
    root: dict = {}
    for w in words:
        node = root
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}  # a word ends here

    def emit(node: dict) -> str:
        branches = []
        for ch in sorted(k for k in node if k):
            child, lit = node[ch], re.escape(ch)
            while len(child) == 1 and "" not in child:  # a chain of single children: one literal
                (c, child), = child.items()
                lit += re.escape(c)
            branches.append(lit + emit(child))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # greedy: the longer words through this node are tried before the one ending here
        return f"(?:{body})?" if "" in node else body

    return emit(root)
