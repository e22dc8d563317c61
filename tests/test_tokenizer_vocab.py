"""Vocabularies as llama.cpp reads them: llama.cpp's own tokenizer tests (vocabulary-only GGUF files
with test strings and the Hugging Face tokenizer's ids), BOS/EOS as the vocabulary says, special
tokens in the text, the end-of-generation set, tokenizer.json files, writing a BPE vocabulary back
to GGUF, and llama.cpp itself (child process) as the peer."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import llamix
from llamix import Tokenizer
from llamix.cli import main
from llamix.eval.perplexity import text_tokens, windows
from llamix.formats.gguf import GGUFReader
from llamix.formats.gguf_llama import MetadataEntry, TensorEntry, tokenizer_metadata, write_llama_gguf
from llamix.formats.gguf import ValueType as V
from llamix.loaders import byte_tokenizer, random_checkpoint
from llamix.tokenizer import decode_stream
import llama_cpp_peer

# assets/vocab: tokenizer.ggml.model and .pre of each (assets/README.md)
VOCABS = ["llama-spm", "phi-3", "llama-bpe", "qwen2", "gpt-2", "deepseek-coder", "falcon"]
SEP = "\n__ggml_vocab_test__\n"


def vocab_file(assets, name: str) -> Path:
    return assets / "vocab" / f"ggml-vocab-{name}.gguf"


def cases(path: Path) -> list[tuple[str, list[int]]]:
    """The test strings and the Hugging Face tokenizer's ids (add_special_tokens=False)."""
    texts = Path(str(path) + ".inp").read_text(encoding="utf-8").split(SEP)
    assert texts[-1] == "", "each string is followed by the separator"
    lines = Path(str(path) + ".out").read_text(encoding="utf-8").split("\n")
    texts = texts[:-1]
    assert len(lines) >= len(texts) and not any(lines[len(texts):])
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]


_cache: dict = {}


def tok_of(assets, name: str) -> Tokenizer:
    if name not in _cache:
        _cache[name] = Tokenizer.from_file(vocab_file(assets, name))
    return _cache[name]


def gguf_meta(assets, name: str) -> dict:
    return dict(GGUFReader(vocab_file(assets, name)).metadata)


# --- llama.cpp's vocabulary tests ---------------------------------------------------------------
@pytest.mark.parametrize("name", VOCABS)
def test_vocab_gives_the_reference_ids(assets, name):
    """Every test string gives exactly the reference ids (add_special=False, parse_special=False),
    and decodes back to itself: all seven vocabularies are lossless on their strings."""
    tok = tok_of(assets, name)
    got = {text: tok.encode(text, add_special=False, parse_special=False) for text, _ in cases(vocab_file(assets, name))}
    wrong = [(text, ids, want) for text, want in cases(vocab_file(assets, name)) if (ids := got[text]) != want]
    assert not wrong, f"{len(wrong)} strings differ, first: {wrong[0]}"
    lossy = [text for text, ids in got.items() if tok.decode(ids) != text]
    assert not lossy, lossy[:3]


def test_every_vocabulary_in_the_folder_is_tested(assets):
    found = sorted(p.name[len("ggml-vocab-"):-len(".gguf")] for p in (assets / "vocab").glob("ggml-vocab-*.gguf"))
    others = [n for n in found if n not in VOCABS]
    for name in others:  # a vocabulary added later: held to the same reference
        tok = tok_of(assets, name)
        for text, want in cases(vocab_file(assets, name)):
            assert tok.encode(text, add_special=False) == want, (name, text)
    assert set(VOCABS) <= set(found)


@pytest.mark.parametrize("name,model,pre,bos,add_bos,eos_ids", [
    ("llama-spm", "llama", None, 1, True, (2,)),
    ("phi-3", "llama", None, 1, True, (2, 32000, 32007)),          # </s>, <|endoftext|>, <|end|>
    ("llama-bpe", "gpt2", "llama-bpe", 128000, True, (128001, 128009)),   # <|end_of_text|>, <|eot_id|>
    ("qwen2", "gpt2", "qwen2", 151643, False, (128247, 151643, 151645)),  # </s>, <|endoftext|>, <|im_end|>
    ("gpt-2", "gpt2", "gpt-2", 50256, False, (50256,)),
    ("deepseek-coder", "gpt2", "deepseek-coder", 32013, True, (32014,)),
    ("falcon", "gpt2", "falcon", 11, False, (11,)),
])
def test_what_each_vocabulary_says(assets, name, model, pre, bos, add_bos, eos_ids):
    """BOS, whether it is added, and the end-of-generation set: llama.cpp's (llama_vocab_get_add_bos,
    llama_vocab_is_eog) for these files."""
    tok = tok_of(assets, name)
    assert (tok.model, tok.pre, tok.bos_id, tok.add_bos, tok.eos_ids) == (model, pre, bos, add_bos, eos_ids)
    assert tok.vocab_size == len(gguf_meta(assets, name)["tokenizer.ggml.tokens"])


# --- add_special / parse_special ----------------------------------------------------------------
def test_add_special_adds_what_the_vocabulary_asks_for(assets):
    spm, qwen, llama3 = tok_of(assets, "llama-spm"), tok_of(assets, "qwen2"), tok_of(assets, "llama-bpe")
    assert spm.encode("Hello world") == [1, 15043, 3186]
    assert spm.encode("Hello world", bos=False) == spm.encode("Hello world", add_special=False) == [15043, 3186]
    assert qwen.encode("Hello world") == qwen.encode("Hello world", add_special=False) == [9707, 1879]  # no BOS
    assert llama3.encode("Hello world")[0] == 128000
    meta = gguf_meta(assets, "llama-spm")
    no_bos = Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.add_bos_token": False})
    assert no_bos.encode("Hello world") == [15043, 3186] and not no_bos.add_bos
    with_eos = Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.add_eos_token": True})
    assert with_eos.encode("Hello world") == [1, 15043, 3186, 2]
    assert with_eos.encode("") == [1, 2] and spm.encode("") == [1] and spm.encode("", add_special=False) == []


def test_parse_special(assets):
    qwen = tok_of(assets, "qwen2")
    chat = "<|im_start|>user\nHi there<|im_end|>\n"
    ids = qwen.encode(chat, parse_special=True)
    assert ids[0] == 151644 and 151645 in ids and ids.count(151644) == 1
    plain = qwen.encode(chat)
    assert 151644 not in plain and 151645 not in plain and len(plain) > len(ids)
    assert qwen.decode(ids, special=True) == chat
    assert qwen.decode(ids) == "user\nHi there\n"  # control tokens are not rendered by default
    assert qwen.decode(plain) == chat
    # SentencePiece: each piece of text between special tokens gets its own leading space, as in llama.cpp
    spm = tok_of(assets, "llama-spm")
    assert spm.encode("<s>Hi</s>", add_special=False, parse_special=True) == [1] + spm.encode("Hi", False) + [2]
    assert 1 not in spm.encode("<s>Hi", add_special=False)
    # user-defined tokens match even without parse_special (deepseek-coder's bytes typed user-defined)
    ds = tok_of(assets, "deepseek-coder")
    assert ds.encode("a\u00f5b", add_special=False) == ds.encode("a", False) + [32000] + ds.encode("b", False)


def test_phi3_special_tokens_swallow_the_space_after_them(assets):
    """llama.cpp's rule for models named phi-3 (rstrip on special tokens, not on <s>, <unk>, <|endoftext|>)."""
    phi = tok_of(assets, "phi-3")
    a = phi.encode("<|user|> Hi<|end|>", add_special=False, parse_special=True)
    b = phi.encode("<|user|>Hi<|end|>", add_special=False, parse_special=True)
    assert a == b and a[0] == 32010 and a[-1] == 32007


def test_model_tokenize_and_generation_stop_on_every_eog(assets, monkeypatch):
    from llamix.model.sampling import Sampler

    meta = {**gguf_meta(assets, "llama-spm"), "tokenizer.ggml.eot_token_id": 5, "tokenizer.ggml.add_bos_token": False}
    tok = Tokenizer.from_gguf_metadata(meta)
    assert tok.eos_ids == (2, 5)
    m = llamix.Model(random_checkpoint("tiny", "q8_0", tokenizer=tok), n_ctx=64)
    assert m.tokenize("Hello world") == [15043, 3186]  # the vocabulary adds no BOS
    assert m.tokenize("Hello world", add_bos=True) == m.tokenize("Hello world", bos=True) == [15043, 3186]
    assert m.tokenize("<s>Hi", special=True, add_bos=False)[0] == 1
    assert m.tokenize("<s>Hi", parse_special=True)[0] == 1
    assert m.tokenize(b"Hello world") == [15043, 3186]
    for stop in (5, 2):
        picks = iter([100, 101, stop, 102])
        monkeypatch.setattr(Sampler, "sample", lambda self, logits, history=(): next(picks))
        assert m.generate_tokens([15043], 10) == [100, 101]
    # a text prompt: no BOS (the vocabulary adds none), control tokens written in it as their ids
    picks = iter([2])
    monkeypatch.setattr(Sampler, "sample", lambda self, logits, history=(): next(picks))
    assert m.generate_tokens("<s>Hi", 4) == []
    assert m._cached == [1] + tok.encode("Hi", add_special=False)


def test_perplexity_adds_bos_only_where_the_vocabulary_says(assets):
    assert text_tokens(tok_of(assets, "qwen2"), "Hello world") == [9707, 1879]
    assert text_tokens(tok_of(assets, "llama-spm"), "Hello world") == [1, 15043, 3186]
    toks = list(range(10, 30))
    assert [w.tolist() for w in windows(toks, 8, None)] == [toks[:8], toks[8:16]]
    assert [w[0] for w in windows(toks, 8, 1)] == [1, 1]


# --- streaming ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["qwen2", "llama-bpe", "gpt-2"])
def test_streaming_decode_of_byte_level_bpe(assets, name):
    """Byte-level BPE splits characters over tokens (an emoji is 4 bytes): pieces come out whole."""
    tok = tok_of(assets, name)
    text = " \U0001f999\U0001f389 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8, \u00fcn\u00efc\u00f6d\u00e9 \u0928\u092e\u0938\u094d\u0924\u0947"
    prompt = tok.encode("Say:")
    ids = tok.encode(text, add_special=False)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some token is part of a character
    pieces = list(decode_stream(tok, iter(ids), prompt))
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


# --- files --------------------------------------------------------------------------------------
def qwen_style_tokenizer_json(assets, folder: Path, ignore_merges: bool = False) -> Path:
    """A tokenizer.json laid out as Qwen2's (the original case-insensitive split expression,
    ByteLevel, special added tokens), with tokenizer_config.json and generation_config.json."""
    import tokenizers

    meta = gguf_meta(assets, "qwen2")
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    vocab = {t: i for i, t in enumerate(tokens) if types[i] == 1}
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges, ignore_merges=ignore_merges))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
        tokenizers.pre_tokenizers.Split(tokenizers.Regex(
            r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
            r"|\s+(?!\S)|\s+"), behavior="isolated"),
        tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = tokenizers.decoders.ByteLevel()
    hf.add_special_tokens([tokenizers.AddedToken(tokens[i], special=True, normalized=False)
                           for i in (151643, 151644, 151645)])
    folder.mkdir(parents=True, exist_ok=True)
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    return folder / "tokenizer.json"


@pytest.fixture(scope="module")
def qwen_json(assets, tmp_path_factory) -> Path:
    return qwen_style_tokenizer_json(assets, tmp_path_factory.mktemp("qwen-json"))


def test_tokenizer_json(assets, qwen_json):
    path = qwen_json
    for source in (path, path.parent):
        tok = Tokenizer.from_file(source)
        assert tok.model == "gpt2" and tok.vocab_size == 151646
        assert (tok.bos_id, tok.eos_id, tok.add_bos) == (-1, 151645, False)
        assert {151643, 151645} <= set(tok.eos_ids)
    for text, want in cases(vocab_file(assets, "qwen2")):
        assert tok.encode(text, add_special=False) == want, text
        assert tok.decode(want) == text
    chat = "<|im_start|>user\nHi<|im_end|>"
    assert tok.encode(chat, parse_special=True) == tok_of(assets, "qwen2").encode(chat, parse_special=True)
    assert tok.encode(chat) == tok_of(assets, "qwen2").encode(chat)
    assert tok.gguf_pre() == "qwen2"


def test_plain_byte_level_tokenizer_json_is_gpt2s(tmp_path):
    r"""A tokenizer.json whose only pre-tokenizer is ByteLevel (GPT-2's expression, which tokenizers
    ends with |\s+ and llama.cpp writes without) is llama.cpp's "gpt-2": it was taken for the first
    pre-tokenizer that split a small vocabulary's probe alike (minicpm5)."""
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(["The quick brown fox jumps over the lazy dog. It's 2026!\n\n  spaces\tand tabs."] * 20,
                           trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    assert Tokenizer.from_file(tmp_path / "tokenizer.json").gguf_pre() == "gpt-2"


def test_bpe_vocabulary_written_as_gguf_reads_back(assets, qwen_json):
    """tokenizer_metadata writes a BPE vocabulary as llama.cpp reads it (gpt2, tokens, types, merges,
    pre, ids, add_bos), padded to the model's rows; from a GGUF and from a tokenizer.json."""
    json_tok = Tokenizer.from_file(qwen_json)
    for tok in (tok_of(assets, "qwen2"), json_tok):
        entries = {e.key: e for e in tokenizer_metadata(tok, vocab_size=151936)}
        assert entries["tokenizer.ggml.model"].value == "gpt2" and entries["tokenizer.ggml.pre"].value == "qwen2"
        assert len(entries["tokenizer.ggml.tokens"].value) == 151936
        assert entries["tokenizer.ggml.add_bos_token"].value is False
        back = Tokenizer.from_gguf_metadata({k: e.value for k, e in entries.items()}, source="written")
        assert back.vocab_size == 151936
        assert back.token_types[-1] == (5 if tok is json_tok else 4)  # padding unused; the file's as stored
        for text, want in cases(vocab_file(assets, "qwen2"))[:20]:
            assert back.encode(text, add_special=False) == want
        assert {151643, 151645} <= set(back.eos_ids)
    with pytest.raises(ValueError, match="SentencePiece"):
        spm_json = Tokenizer.from_file(assets / "llama_tokenizer" / "tokenizer.model")
        spm_json.vocab.scores = None
        tokenizer_metadata(spm_json)


def test_gguf_file_with_a_bpe_vocabulary_loads_runs_and_writes(qwen_json, tmp_path):
    """A whole model with a byte-level BPE vocabulary: GGUF -> llamix -> GGUF keeps the vocabulary."""
    tok = Tokenizer.from_file(qwen_json)
    ck = random_checkpoint("tiny", "q8_0", tokenizer=tok, vocab_size=151936)
    out = tmp_path / "qwen-vocab.gguf"
    llamix.export_gguf(ck, out, "q8_0")
    m = llamix.load(out)
    assert m.tokenizer.model == "gpt2" and m.tokenizer.pre == "qwen2" and m.tokenizer.vocab_size == 151936
    assert m.tokenize("Hello world") == [9707, 1879]
    assert len(m.generate_tokens("Hello", 3, temperature=0)) <= 3


def test_hf_folder_with_tokenizer_json(assets, tmp_path):
    """A Hugging Face folder without tokenizer.model loads its tokenizer.json."""
    import tokenizers

    folder = tmp_path / "hf"
    shutil.copytree(assets / "stories260K_hf", folder)
    (folder / "tokenizer.model").unlink()
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + [chr(c) for c in range(33, 127)] + ["\u0120"])}
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, []))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    hf.add_special_tokens(["<s>", "</s>"])
    hf.save(str(folder / "tokenizer.json"))
    m = llamix.load(folder)
    assert m.tokenizer.source.endswith("tokenizer.json")
    assert (m.tokenizer.bos_id, m.tokenizer.eos_id, m.tokenizer.add_bos) == (1, 2, True)  # tokenizer_config.json
    assert m.tokenize("ab c") == [1, vocab["a"], vocab["b"], vocab["\u0120"], vocab["c"]]
    assert m.detokenize(m.tokenize("ab c")) == "ab c"


def test_from_file_kinds_and_errors(assets, tmp_path):
    spm_file = assets / "llama_tokenizer" / "tokenizer.model"
    assert Tokenizer.from_file(spm_file).encode("Hello world") == [1, 15043, 3186]
    assert Tokenizer.from_file(assets / "stories260K_hf").encode("Once upon a time") == [1, 403, 407, 261, 378]
    single = tmp_path / "one"
    single.mkdir()
    shutil.copy(vocab_file(assets, "gpt-2"), single / "v.gguf")
    assert Tokenizer.from_file(single).encode("Hello world") == [15496, 995]
    with pytest.raises(FileNotFoundError, match="no such tokenizer file"):
        Tokenizer.from_file(tmp_path / "missing.model")
    with pytest.raises(FileNotFoundError, match="no tokenizer.model, tokenizer.json"):
        Tokenizer.from_file(tmp_path)
    bad_json = tmp_path / "tokenizer.json"
    bad_json.write_text('{"not": "a tokenizer"}')
    with pytest.raises(ValueError, match="tokenizer.json"):
        Tokenizer.from_file(bad_json)


@pytest.mark.parametrize("change,match", [
    ({"tokenizer.ggml.pre": "no-such-pre"}, r"qwen\.gguf: tokenizer\.ggml\.pre = 'no-such-pre'"),
    ({"tokenizer.ggml.model": "t5"}, r"qwen\.gguf: tokenizer\.ggml\.model = 't5' is not supported"),
    ({"tokenizer.ggml.eos_token_id": 999999}, r"qwen\.gguf: tokenizer\.ggml\.eos_token_id = 999999 is outside"),
    ({"tokenizer.ggml.token_type": np.zeros(3, np.int32)}, r"tokenizer\.ggml\.token_type has 3 entries"),
    ({"tokenizer.ggml.token_type": ["a"]}, r"tokenizer\.ggml\.token_type should be an array of integers"),
    ({"tokenizer.ggml.tokens": [1, 2]}, r"tokenizer\.ggml\.tokens should be an array of strings"),
    ({"tokenizer.ggml.merges": None}, r"tokenizer\.ggml\.merges is missing"),
    ({"tokenizer.ggml.add_bos_token": 1}, r"tokenizer\.ggml\.add_bos_token should be a boolean"),
    ({"tokenizer.ggml.bos_token_id": "1"}, r"tokenizer\.ggml\.bos_token_id should be an integer"),
    ({"tokenizer.ggml.pre": "chatglm-bpe", "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": None},
     r"add_bos_token is true, but tokenizer\.ggml\.bos_token_id is not set"),  # GLM-4: no default BOS
])
def test_malformed_vocabularies_name_file_and_key(assets, change, match):
    meta = {**gguf_meta(assets, "qwen2"), **change}
    meta = {k: v for k, v in meta.items() if v is not None}  # None: the key is left out
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_gguf_metadata(meta, source="/x/qwen.gguf")


def test_spm_type_fixes_and_duplicates(assets):
    """<unk> typed control (phi-3, gemma-3) and unknown-typed padding pieces are accepted; a token
    written twice is refused with both ids."""
    meta = gguf_meta(assets, "phi-3")
    assert meta["tokenizer.ggml.token_type"][0] == 3  # <unk> typed control
    tokens = list(meta["tokenizer.ggml.tokens"])
    tokens[7] = tokens[8]
    with pytest.raises(ValueError, match=r"holds '.*' twice \(ids 7 and 8\)"):
        Tokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.tokens": tokens})


def test_gemma_sized_sentencepiece_vocabulary_builds():
    """A 262144-token SentencePiece vocabulary (Gemma-3's size) with user-defined whitespace runs."""
    n = 262144
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += ["\n" * k for k in range(1, 32)] + ["\u2581" * k for k in range(1, 32)]
    tokens += [f"\u2581w{i}" for i in range(n - len(tokens))]
    types = np.ones(n, np.int32)
    types[:4] = 3
    types[4:260] = 6
    types[260:291] = 4
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": -np.arange(n, dtype=np.float32), "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1, "tokenizer.ggml.unknown_token_id": 3,
            "tokenizer.ggml.add_space_prefix": False}
    tok = Tokenizer.from_gguf_metadata(meta)
    assert tok.encode("a\n\n\nb", add_special=False) == [4 + 97, 262, 4 + 98]
    assert tok.eos_ids == (1,) and tok.encode("x")[0] == 2


# --- loading with an override, llamix info --------------------------------------------------------
def _gguf_with_tokenizer(path: Path, entries: list) -> Path:
    ck = random_checkpoint("tiny", lazy=True)
    tensors = [TensorEntry(n, "F32", ck.tensors.shapes[n], (lambda n=n: ck.tensors[n])) for n in ck.tensors.shapes]
    write_llama_gguf(path, ck.config, tensors, tokenizer=entries)
    return path


def test_override_is_read_before_the_files_vocabulary(tmp_path):
    good = tokenizer_metadata(byte_tokenizer(354))
    broken = [e if e.key != "tokenizer.ggml.bos_token_id" else MetadataEntry(e.key, 9999, V.UINT32) for e in good]
    path = _gguf_with_tokenizer(tmp_path / "broken.gguf", broken)
    with pytest.raises(ValueError, match=r"broken\.gguf: tokenizer\.ggml\.bos_token_id = 9999"):
        llamix.load(path)
    m = llamix.load(path, tokenizer=byte_tokenizer(354))
    assert m.tokenize("hi")[0] == 1
    ck = llamix.load_checkpoint(path, tokenizer=byte_tokenizer(354))
    assert ck.tokenizer_entries == []  # the override is what an export writes
    bare = llamix.load(path, tokenizer=False)  # no vocabulary at all: token ids only
    assert bare.tokenizer is None and bare.logits([1, 2]).shape == (2, 354)


def test_info_on_a_vocabulary_only_file(assets, capsys):
    path = vocab_file(assets, "qwen2")
    assert main(["info", str(path), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["model"]
    assert m["weights"] is None and m["architecture"] == "qwen2"
    t = m["tokenizer"]
    assert (t["model"], t["pre"], t["vocab_size"], t["add_bos"]) == ("gpt2", "qwen2", 151936, False)
    assert main(["info", str(vocab_file(assets, "llama-spm"))]) == 0
    out = capsys.readouterr().out
    assert "vocabulary-only GGUF file (no tensors)" in out and "SentencePiece, 32000 tokens" in out
    with pytest.raises(ValueError, match="vocabulary-only GGUF"):
        llamix.load(path)


# --- llama.cpp as the peer ----------------------------------------------------------------------
SPECIAL_TEXTS = ["Hello world", " leading space", "<|im_start|>user\nHi<|im_end|>\n", "<s>text</s> <unk>",
                 "<|endoftext|><|eot_id|><|begin_of_text|>x", "<start_of_turn>user\nq<end_of_turn>\n",
                 "new\nlines\n\n\tand tabs\t\t  ", "\u00f5\u00f7\u00c1 user-defined bytes", "1234567 + 89 = ?",
                 "emoji \U0001f999 and \u65e5\u672c\u8a9e", ""]

LLAMA_CPP_CHILD = r"""
import json, sys, llama_cpp
kw = {"use_extra_bufts": False} if "use_extra_bufts" in llama_cpp.Llama.__init__.__code__.co_varnames else {}
llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False, **kw)
vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
out = {"eog": [i for i in range(llama_cpp.llama_vocab_n_tokens(vocab)) if llama_cpp.llama_vocab_is_eog(vocab, i)],
       "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)), "ids": []}
for t in json.loads(sys.stdin.read()):
    out["ids"].append({f"{a:d}{s:d}": llm.tokenize(t.encode(), add_bos=a, special=s)
                       for a in (False, True) for s in (False, True)})
print(json.dumps(out))
"""


def llama_cpp_tokenize(path: Path, texts: list[str]) -> dict:
    """llama.cpp's tokenization of ``texts`` (all four add_special/parse_special settings), its
    EOG set and add_bos, from a child process (a llama.cpp crash fails the test, not the run)."""
    r = subprocess.run([sys.executable, "-c", LLAMA_CPP_CHILD, str(path)], input=json.dumps(texts),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _agrees_with_llama_cpp(tok: Tokenizer, path: Path, texts: list[str]) -> None:
    theirs = llama_cpp_tokenize(path, texts)
    assert list(tok.eos_ids) == theirs["eog"] and tok.add_bos == theirs["add_bos"]
    for text, row in zip(texts, theirs["ids"]):
        for key, want in row.items():
            got = tok.encode(text, add_special=key[0] == "1", parse_special=key[1] == "1")
            assert got == want, (key, text)


@pytest.mark.peers
@pytest.mark.parametrize("name", VOCABS)
def test_same_as_llama_cpp(assets, name):
    llama_cpp_peer.require()
    _agrees_with_llama_cpp(tok_of(assets, name), vocab_file(assets, name), SPECIAL_TEXTS)


REAL_MODELS = Path.home() / ".cache" / "llamix-real-models"


@pytest.mark.peers
@pytest.mark.parametrize("file", ["qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "gemma-3-270m-q4_k_m.gguf"])
def test_real_published_files_agree_with_llama_cpp(file):
    """The files fetch_real_models.py fetches (Qwen2.5-Coder: BPE, ChatML; Gemma-3: SentencePiece,
    262144 tokens): skipped where they have not been fetched."""
    import os

    path = Path(os.environ.get("LLAMIX_REAL_MODELS", REAL_MODELS)) / file
    if not path.is_file():
        pytest.skip(f"{path} not fetched (python fetch_real_models.py in the shared assets)")
    llama_cpp_peer.require()
    tok = Tokenizer.from_file(path)
    _agrees_with_llama_cpp(tok, path, SPECIAL_TEXTS)


def test_special_token_matcher_is_leftmost_longest():
    """The prefix-tree expression special tokens are found with matches as a longest-first alternation."""
    import random
    import re

    from llamix.tokenizer.core import trie_pattern

    rng = random.Random(0)
    for _ in range(300):
        words = sorted({"".join(rng.choice("ab<>") for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 12))})
        plain = re.compile("|".join(map(re.escape, sorted(words, key=lambda w: (-len(w), w)))))
        text = "".join(rng.choice("ab<> ") for _ in range(60))
        assert [m.span() for m in re.finditer(trie_pattern(words), text)] == [m.span() for m in plain.finditer(text)]


@pytest.mark.peers
def test_llama_cpp_reads_the_vocabularies_llamix_writes(assets, qwen_json, tmp_path):
    """Exported GGUF files: SentencePiece (stories260K) and byte-level BPE (a tokenizer.json
    vocabulary), read back by llama.cpp with the same tokens, EOG set and add_bos."""
    llama_cpp_peer.require()
    llamix.export_gguf(assets / "stories260K" / "stories260K.bin", tmp_path / "spm.gguf", "q8_0")
    tok = Tokenizer.from_file(qwen_json)
    llamix.export_gguf(random_checkpoint("tiny", "q8_0", tokenizer=tok, vocab_size=151936), tmp_path / "bpe.gguf", "q8_0")
    for name in ("spm.gguf", "bpe.gguf"):
        _agrees_with_llama_cpp(Tokenizer.from_file(tmp_path / name), tmp_path / name, SPECIAL_TEXTS)
