"""SentencePiece tokenizers: built from GGUF metadata they encode exactly as the original
.model file; streaming decode yields the same text as a full decode, UTF-8 intact."""
from __future__ import annotations

import pytest

from llamix.formats.gguf import GGUFReader
from llamix.formats.gguf_llama import tokenizer_metadata
from llamix.loaders import byte_tokenizer
from llamix.tokenizer import Tokenizer, decode_stream

TEXTS = ["Hello world", "Once upon a time, there was a little girl named Lily.",
         "  leading spaces, ünïcödé, 日本語 and an emoji 🎉", "new\nlines\n\n\tand tabs", "", "1234567 + 89 = ?"]


@pytest.fixture(scope="module")
def llama_tokenizers(assets):
    gguf = GGUFReader(assets / "llama_tokenizer" / "ggml-vocab-llama-spm.gguf")
    return Tokenizer.from_file(assets / "llama_tokenizer" / "tokenizer.model"), Tokenizer.from_gguf_metadata(gguf.metadata)


def test_gguf_vocab_encodes_like_the_model_file(llama_tokenizers):
    ref, tok = llama_tokenizers
    assert tok.vocab_size == ref.vocab_size == 32000 and (tok.bos_id, tok.eos_id) == (1, 2)
    for text in TEXTS:
        assert tok.encode(text) == ref.encode(text), text
        assert tok.decode(tok.encode(text, bos=False)) == ref.decode(ref.encode(text, bos=False))
    assert ref.encode("Hello world") == [1, 15043, 3186]  # the Llama-2 tokenizer's well-known ids


def test_metadata_round_trip_small_vocab(assets):
    ref = Tokenizer.from_file(assets / "stories260K" / "tok512.model")
    tok = Tokenizer.from_gguf_metadata({e.key: e.value for e in tokenizer_metadata(ref)})
    assert ref.encode("Once upon a time") == [1, 403, 407, 261, 378]
    # tok512 was trained with remove_extra_whitespaces, which GGUF cannot express (llama.cpp does
    # not collapse spaces either), so compare on texts without runs of whitespace
    for text in TEXTS:
        if "  " not in text and "\n\n" not in text and not text.startswith(" "):
            assert tok.encode(text) == ref.encode(text), text


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_decode_matches_full_decode(llama_tokenizers, text):
    _, tok = llama_tokenizers
    prompt = tok.encode("Say:")
    ids = tok.encode(" " + text, bos=False)
    pieces = list(decode_stream(tok, iter(ids), prompt))
    assert "".join(pieces) == tok.decode(prompt + ids)[len(tok.decode(prompt)):]
    assert all("\ufffd" not in p for p in pieces)  # byte-fallback sequences are never split


def test_multibyte_characters_wait_for_their_last_byte():
    tok = byte_tokenizer(400)
    ids = tok.encode("a🎉", bos=False)  # the emoji is 4 byte pieces
    assert len(ids) >= 5
    pieces = list(decode_stream(tok, iter(ids)))
    assert pieces == ["a", "🎉"]


def test_errors(tmp_path):
    bad = tmp_path / "x.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="x.model"):
        Tokenizer.from_file(bad)
    with pytest.raises(ValueError, match="tokenizer.ggml.model"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(ValueError, match="outside the vocabulary"):
        byte_tokenizer(400).decode([400])
