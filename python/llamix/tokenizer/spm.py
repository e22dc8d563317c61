"""SentencePiece vocabularies (https://github.com/google/sentencepiece): a ``.model`` file as it
is, or a ``ModelProto`` rebuilt from GGUF metadata.

LLaMA-family SentencePiece models are BPE models whose merges follow the piece scores, with byte
fallback, so a ``ModelProto`` made of the GGUF tokens, scores and types tokenizes as the original
``tokenizer.model`` (and as llama.cpp's SPM tokenizer in ``llama-vocab.cpp``). SentencePiece wants
exactly one piece of type UNKNOWN and the byte pieces named ``<0xXX>``; GGUF files do not always
agree (Phi-3 and Gemma-3 type ``<unk>`` as control, Phi-3 has 53 ``[PAD]`` pieces typed unknown),
so the proto gives the unknown id that type and every other unknown piece the control type: such
pieces never come out of text, in SentencePiece as in llama.cpp. User-defined pieces are cut out
of the text before SentencePiece sees it (as llama.cpp does), so its own matching of them never
comes into play.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import FormatError, parse_json
from .vocab import BYTE, CONTROL, NORMAL, UNDEFINED, UNKNOWN, UNUSED, USER_DEFINED, Vocab

# sentencepiece_model.proto field numbers (ModelProto, SentencePiece, TrainerSpec, NormalizerSpec)
_PIECES, _TRAINER, _NORMALIZER = 1, 2, 3
_SP_PIECE, _SP_SCORE, _SP_TYPE = 1, 2, 3
_TS_MODEL_TYPE, _TS_VOCAB_SIZE, _TS_BYTE_FALLBACK = 3, 4, 35
_TS_UNK, _TS_BOS, _TS_EOS, _TS_PAD = 40, 41, 42, 43
_NS_NAME, _NS_ADD_DUMMY_PREFIX, _NS_REMOVE_EXTRA_WS, _NS_ESCAPE_WS = 1, 3, 4, 5
_BPE = 2


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values are sign-extended to 10 bytes, as protobuf does
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _field_varint(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def _field_bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def model_proto(vocab: Vocab, source: str = "GGUF") -> bytes:
    """A serialized SentencePiece ``ModelProto`` (BPE, identity normalizer) for ``vocab``.

    Written directly in protobuf's wire format: a Gemma-3 vocabulary has 262144 pieces, and one
    message object per piece would cost about a second.
    """
    n = vocab.size
    unk = vocab.unk_id
    if unk < 0:
        found = np.flatnonzero(vocab.types == UNKNOWN)
        unk = int(found[0]) if found.size else 0
    # the types llama.cpp acts on: a user-defined token it counts as end of generation (Gemma-3's
    # </s>) is a control token there, never matched in text unless special tokens are parsed
    sp_types = vocab.attrs.copy()
    sp_types[sp_types == UNKNOWN] = CONTROL
    sp_types[sp_types == UNDEFINED] = NORMAL
    sp_types[unk] = UNKNOWN
    byte_ids = np.flatnonzero(sp_types == BYTE)
    names = {f"<0x{b:02X}>" for b in range(256)}
    for i in byte_ids:
        if vocab.tokens[i] not in names:
            raise FormatError(f"{source}: tokenizer.ggml.token_type[{i}] says byte, but token {i} is "
                             f"{vocab.tokens[i]!r}, not <0xXX>")
    byte_fallback = len({vocab.tokens[i] for i in byte_ids}) == 256
    scores = vocab.scores if vocab.scores is not None else np.zeros(n, np.float32)
    score_bytes = [struct.pack("<f", s) for s in scores.astype(np.float32).tolist()]
    tail_of_type = {t: _field_varint(_SP_TYPE, t) for t in range(1, 7)}
    score_key, piece_key = _key(_SP_SCORE, 5), _key(_SP_PIECE, 2)
    parts = []
    for piece, score, t in zip(vocab.tokens, score_bytes, sp_types.tolist()):
        raw = piece.encode("utf-8")
        body = piece_key + _varint(len(raw)) + raw + score_key + score + tail_of_type[t]
        parts.append(_field_bytes(_PIECES, body))
    trainer = b"".join([
        _field_varint(_TS_MODEL_TYPE, _BPE), _field_varint(_TS_VOCAB_SIZE, n),
        _field_varint(_TS_BYTE_FALLBACK, byte_fallback), _field_varint(_TS_UNK, unk),
        # BOS/EOS are added by the Tokenizer, from the metadata; SentencePiece must not check them
        _field_varint(_TS_BOS, -1), _field_varint(_TS_EOS, -1), _field_varint(_TS_PAD, -1),
    ])
    normalizer = b"".join([
        _field_bytes(_NS_NAME, b"identity"), _field_varint(_NS_ADD_DUMMY_PREFIX, vocab.add_space_prefix),
        _field_varint(_NS_REMOVE_EXTRA_WS, False), _field_varint(_NS_ESCAPE_WS, True),
    ])
    parts.append(_field_bytes(_TRAINER, trainer))
    parts.append(_field_bytes(_NORMALIZER, normalizer))
    return b"".join(parts)


def processor_from_vocab(vocab: Vocab, source: str = "GGUF"):
    """A SentencePieceProcessor for ``vocab`` (ValueError naming ``source`` if SentencePiece refuses it)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(model_proto(vocab, source))
    except (RuntimeError, OSError) as e:
        raise FormatError(f"{source}: the tokenizer metadata does not form a valid SentencePiece model ({e})") from None
    return sp


def vocab_from_processor(sp, add_bos: bool = True, source: str = "SentencePiece model") -> Vocab:
    """The vocabulary of a loaded SentencePieceProcessor (piece types are GGUF's token types);
    FormatError naming ``source`` for a piece that is not valid UTF-8 (protobuf hands those over
    as bytes; SentencePiece itself would fail on them only when the piece is decoded)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto.FromString(sp.serialized_model_proto())
    pieces = [p.piece for p in proto.pieces]
    for i, p in enumerate(pieces):
        if not isinstance(p, str):
            raise FormatError(f"{source}: piece {i} ({p[:16]!r}) is not valid UTF-8 (corrupt SentencePiece model)")
    v = Vocab("llama", pieces, np.array([p.type for p in proto.pieces], np.int32),
              scores=np.array([p.score for p in proto.pieces], np.float32),
              bos_id=int(sp.bos_id()), eos_id=int(sp.eos_id()), unk_id=int(sp.unk_id()), pad_id=int(sp.pad_id()),
              add_bos=add_bos, add_space_prefix=bool(proto.normalizer_spec.add_dummy_prefix))
    return v


class SentencePieceBackend:
    """Encodes text fragments with a SentencePieceProcessor (special tokens are cut out before)."""

    def __init__(self, processor):
        self.sp = processor

    def encode(self, fragments: list[str]) -> list[list[int]]:
        return self.sp.encode(fragments)


def added_tokens(folder: Path) -> dict[int, tuple[str, bool]]:
    """The tokens a Hugging Face folder adds to its ``tokenizer.model``: id -> (text, special),
    from ``added_tokens.json`` ({text: id}, not special) and ``tokenizer_config.json``'s
    ``added_tokens_decoder`` ({"id": {"content", "special", ...}}), which wins where both name an
    id. FormatError naming the file and the entry for a malformed one."""
    out: dict[int, tuple[str, bool]] = {}
    path = folder / "added_tokens.json"
    if path.is_file():
        for text, i in parse_json(path.read_bytes(), str(path)).items():
            if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                raise FormatError(f"{path}: token {text!r} has id {i!r}, expected an integer >= 0")
            out[i] = (text, False)
    path = folder / "tokenizer_config.json"
    if path.is_file():
        decoder = parse_json(path.read_bytes(), str(path)).get("added_tokens_decoder") or {}
        if not isinstance(decoder, dict):
            raise FormatError(f"{path}: added_tokens_decoder is {type(decoder).__name__}, expected an object")
        for key, entry in decoder.items():
            text = entry.get("content") if isinstance(entry, dict) else None
            if not (isinstance(key, str) and key.isdigit() and isinstance(text, str)):
                raise FormatError(f"{path}: added_tokens_decoder[{key!r}] is not an id with a \"content\" text")
            out[int(key)] = (text, bool(entry.get("special", False)))
    return out


def add_tokens(vocab: Vocab, added: dict[int, tuple[str, bool]]) -> None:
    """Put a folder's added tokens (:func:`added_tokens`) into a SentencePiece ``vocab`` as
    llama.cpp's convert_hf_to_gguf.py does: special ones as control tokens, others user-defined
    (cut out of the text whole), ids past the pieces appended (gaps as unused ``[PAD<id>]``).
    A piece the model already marks control, unknown or user-defined with the same text stays."""
    if not added:
        return
    n = max(vocab.size, max(added) + 1)
    tokens = list(vocab.tokens) + [f"[PAD{i}]" for i in range(vocab.size, n)]
    types = np.concatenate([vocab.types, np.full(n - vocab.size, UNUSED, np.int32)])
    scores = None if vocab.scores is None else np.concatenate(
        [vocab.scores, np.full(n - vocab.size, -1000.0, np.float32)])
    for i, (text, special) in sorted(added.items()):
        if i < vocab.size and tokens[i] == text and types[i] in (CONTROL, UNKNOWN, USER_DEFINED):
            continue
        tokens[i], types[i] = text, CONTROL if special else USER_DEFINED
    vocab.tokens, vocab.types, vocab.scores = tokens, types, scores
