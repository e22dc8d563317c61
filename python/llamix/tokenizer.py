"""SentencePiece tokenization (https://github.com/google/sentencepiece), from a ``.model`` file or
built from GGUF metadata, and UTF-8-correct streaming detokenization.

A GGUF file carries the vocabulary as ``tokenizer.ggml.tokens`` (pieces, U+2581 for a space),
``.scores`` and ``.token_type`` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
6 byte: the same numbering as SentencePiece's piece types). LLaMA's SentencePiece model is a BPE
model whose merges follow the piece scores, with byte fallback, so a ``ModelProto`` rebuilt from
those three arrays tokenizes exactly as the original ``tokenizer.model``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np


class Tokenizer:
    """Text <-> token ids. ``bos_id``/``eos_id`` are -1 when the vocabulary has none."""

    def __init__(self, processor, add_bos: bool = True, source: str = ""):
        self.sp = processor
        self.add_bos = add_bos
        self.source = source
        self.vocab_size = int(processor.get_piece_size())
        self.bos_id = int(processor.bos_id())
        self.eos_id = int(processor.eos_id())

    # --- construction ---
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        import sentencepiece as spm

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such tokenizer file")
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - sentencepiece raises plain RuntimeError/OSError
            raise ValueError(f"{path}: not a SentencePiece model ({e})") from None
        return cls(sp, source=str(path))

    @classmethod
    def from_gguf_metadata(cls, meta: dict, source: str = "GGUF") -> "Tokenizer":
        """Build a SentencePiece processor from ``tokenizer.ggml.*`` metadata (model ``llama``)."""
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2 as pb

        model = meta.get("tokenizer.ggml.model")
        if model is None:
            raise ValueError(f"{source}: no tokenizer in the metadata (tokenizer.ggml.model missing); "
                             "pass tokenizer= a SentencePiece .model file")
        if model != "llama":
            raise ValueError(f"{source}: tokenizer.ggml.model = {model!r} is not supported "
                             "(only 'llama', SentencePiece)")
        tokens = meta.get("tokenizer.ggml.tokens")
        if not tokens:
            raise ValueError(f"{source}: tokenizer.ggml.tokens is missing or empty")
        n = len(tokens)
        scores = np.asarray(meta.get("tokenizer.ggml.scores", np.zeros(n)), dtype=np.float32)
        types = np.asarray(meta.get("tokenizer.ggml.token_type", np.ones(n)), dtype=np.int64)
        if scores.shape != (n,) or types.shape != (n,):
            raise ValueError(f"{source}: tokenizer.ggml.scores/token_type have {scores.size}/{types.size} entries, "
                             f"tokens has {n}")
        if types.size and (types.min() < 1 or types.max() > 6):
            raise ValueError(f"{source}: tokenizer.ggml.token_type holds values outside 1..6")
        proto = pb.ModelProto()
        for piece, score, t in zip(tokens, scores.tolist(), types.tolist()):
            proto.pieces.add(piece=piece, score=score, type=t)
        ts = proto.trainer_spec
        ts.model_type = pb.TrainerSpec.BPE
        ts.vocab_size = n
        ts.byte_fallback = bool((types == 6).any())
        unk = np.flatnonzero(types == 2)
        ts.unk_id = int(meta.get("tokenizer.ggml.unknown_token_id", unk[0] if unk.size else 0))
        ts.bos_id = int(meta.get("tokenizer.ggml.bos_token_id", -1))
        ts.eos_id = int(meta.get("tokenizer.ggml.eos_token_id", -1))
        ts.pad_id = int(meta.get("tokenizer.ggml.padding_token_id", -1))
        for key, idx in (("unknown", ts.unk_id), ("bos", ts.bos_id), ("eos", ts.eos_id), ("padding", ts.pad_id)):
            if idx >= n:
                raise ValueError(f"{source}: tokenizer.ggml.{key}_token_id = {idx} is outside the vocabulary of {n}")
        # SentencePiece insists on its special pieces having the matching types.
        if proto.pieces[ts.unk_id].type != pb.ModelProto.SentencePiece.UNKNOWN:
            raise ValueError(f"{source}: token {ts.unk_id} ({tokens[ts.unk_id]!r}) should be the unknown token")
        ns = proto.normalizer_spec
        ns.name = "identity"
        ns.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        ns.remove_extra_whitespaces = False
        ns.escape_whitespaces = True
        sp = spm.SentencePieceProcessor()
        try:
            sp.LoadFromSerializedProto(proto.SerializeToString())
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{source}: the tokenizer metadata does not form a valid SentencePiece model ({e})") from None
        return cls(sp, add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", True)), source=source)

    # --- use ---
    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = self.sp.encode(text)
        return ([self.bos_id] if bos and self.bos_id >= 0 else []) + list(ids)

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.sp.decode(ids)

    def piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))


class StreamDecoder:
    """Turns generated ids into text pieces as they arrive.

    The text of the new ids is obtained by decoding them together with a few ids of context (so a
    piece's leading space survives) and taking the difference; a piece ending in an incomplete
    UTF-8 sequence (byte-fallback tokens) shows as U+FFFD and is held back until it completes.
    """

    def __init__(self, tokenizer: Tokenizer, context: Iterable[int] = ()):
        self.tok = tokenizer
        ctx = [i for i in context if i != tokenizer.bos_id][-4:]
        self.ids = ctx
        self.offset = len(tokenizer.decode(ctx)) if ctx else 0
        self.start = len(ctx)

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece = text[self.offset:]
        # keep the window short: restart it at the current token once text has been emitted
        self.ids = self.ids[-1:]
        self.offset = len(self.tok.decode(self.ids))
        return piece

    def flush(self) -> str:
        text = self.tok.decode(self.ids)
        piece = text[self.offset:]
        self.ids, self.offset = [], 0
        return piece


def decode_stream(tokenizer: Tokenizer, ids: Iterator[int], context: Iterable[int] = ()) -> Iterator[str]:
    dec = StreamDecoder(tokenizer, context)
    for i in ids:
        piece = dec.push(i)
        if piece:
            yield piece
    tail = dec.flush()
    if tail:
        yield tail
