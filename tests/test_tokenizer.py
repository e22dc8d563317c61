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


def spm_folder_with_added_tokens(folder, assets):
    """tok512.model plus the tokens a Hugging Face fine-tune adds: <|im_start|> (special) and
    <|im_end|> in tokenizer_config.json's added_tokens_decoder, "newb" (not special) in
    added_tokens.json, id 515 left as a gap."""
    import json
    import shutil
    folder.mkdir()
    shutil.copy(assets / "stories260K" / "tok512.model", folder / "tokenizer.model")
    entry = {"lstrip": False, "rstrip": False, "single_word": False, "normalized": False, "special": True}
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {
        "512": {**entry, "content": "<|im_start|>"}, "513": {**entry, "content": "<|im_end|>"}}}))
    (folder / "added_tokens.json").write_text(json.dumps({"newb": 514, "later": 516}))
    return folder


def test_sentencepiece_folder_reads_its_added_tokens(tmp_path, assets):
    """A tokenizer.model folder's added tokens are part of the vocabulary, as llama.cpp's converter
    takes them: special ones control tokens, others user-defined, gaps unused."""
    from llamix.tokenizer.vocab import CONTROL, UNUSED, USER_DEFINED
    tok = Tokenizer.from_file(spm_folder_with_added_tokens(tmp_path / "m", assets))
    plain = Tokenizer.from_file(assets / "stories260K" / "tok512.model")
    assert tok.tokens[:512] == plain.tokens
    assert tok.tokens[512:] == ["<|im_start|>", "<|im_end|>", "newb", "[PAD515]", "later"]
    assert list(tok.token_types[512:]) == [CONTROL, CONTROL, USER_DEFINED, UNUSED, USER_DEFINED]
    body = plain.encode("user", add_special=False)
    assert tok.encode("<|im_start|>user<|im_end|>", parse_special=True) == [1, 512, *body, 513]
    assert 512 not in tok.encode("<|im_start|>user", parse_special=False)   # control: only when parsed
    assert tok.encode("newb", add_special=False) == [514]                    # user-defined: always
    assert 513 in tok.eos_ids                                                # <|im_end|> ends a turn
    assert tok.decode([512, *body, 513], special=True).replace(" ", "") == "<|im_start|>user<|im_end|>"


@pytest.mark.peers
def test_sentencepiece_folder_added_tokens_match_transformers(tmp_path, assets):
    from conftest import require_peer
    require_peer("transformers")
    from transformers import AutoTokenizer
    folder = spm_folder_with_added_tokens(tmp_path / "m", assets)
    (folder / "added_tokens.json").unlink()  # transformers reads it only without added_tokens_decoder
    ref = AutoTokenizer.from_pretrained(folder).get_vocab()
    tok = Tokenizer.from_file(folder)
    assert {t: i for i, t in enumerate(tok.tokens)} == ref


def test_malformed_added_tokens_are_named(tmp_path, assets):
    folder = spm_folder_with_added_tokens(tmp_path / "m", assets)
    (folder / "added_tokens.json").write_text('{"newb": "x"}')
    with pytest.raises(ValueError, match=r"added_tokens.json.*'newb'"):
        Tokenizer.from_file(folder)
    (folder / "added_tokens.json").unlink()
    (folder / "tokenizer_config.json").write_text('{"added_tokens_decoder": {"512": {"special": true}}}')
    with pytest.raises(ValueError, match=r"tokenizer_config.json.*added_tokens_decoder\['512'\]"):
        Tokenizer.from_file(folder)
