"""Config features around the inputs and the output's tokenizer: vocabularies aligned across models
(tokenizer_source: union, tokenizer: with per-token sources and padding), chat templates, LoRA
references applied while the weights stream, Hugging Face repo ids from a cache laid out as
huggingface_hub lays it out (no network), zero-length slices, and pickled checkpoints refused.
Peer tests (marked) compare with mergekit 0.1.5 and peft on the same tiny models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import llamix
from llamix.merge import ConfigError

from conftest import require_peer
from helpers import hub_cache, perturbed, read_model, tiny_tensors, write_model

HIDDEN = 16


def make_tokenizer(folder: Path, n_base: int, plain=(), added=()) -> int:
    """A word-level tokenizer.json: <unk>, <s>, </s>, w3..w{n_base-1}, then `plain` tokens in the
    model's vocabulary and `added` ones ((text, special)) as added tokens. Returns its size."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, n_base)}}
    for t in plain:
        vocab[t] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken("<s>", special=True), AddedToken("</s>", special=True)])
    for t, special in added:
        (tok.add_special_tokens if special else tok.add_tokens)([AddedToken(t, special=special)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "model_max_length": 64}))
    return tok.get_vocab_size(with_added_tokens=True)


def vocab_model(root: Path, name: str, tensors: dict, plain=(), added=(), seed=0) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    n = make_tokenizer(folder, 40, plain, added)
    rng = np.random.default_rng(seed)
    t = dict(tensors)
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        extra = n - t[k].shape[0]
        if extra > 0:
            t[k] = np.concatenate([t[k], rng.standard_normal((extra, HIDDEN)).astype(np.float32)])
    write_model(folder, t, vocab=n)
    make_tokenizer(folder, 40, plain, added)  # write_model wrote its own tokenizer_config.json
    return str(folder)


@pytest.fixture(scope="module")
def vocab_models(tmp_path_factory):
    """base (40 tokens); ft0 adds plain tokens newa, newb; ft1 adds <tool> (special) and newb."""
    root = tmp_path_factory.mktemp("vocab_models")
    base = tiny_tensors(10)
    return {"base": vocab_model(root, "base", base),
            "ft0": vocab_model(root, "ft0", perturbed(base, 1, 0.05), plain=["newa", "newb"], seed=1),
            "ft1": vocab_model(root, "ft1", perturbed(base, 2, 0.05), added=[("<tool>", True), ("newb", False)], seed=2)}


def weighted(p, *items):
    return [{"model": p[k], "parameters": {"weight": w}} for k, w in items]


def vocab_of(folder: Path) -> dict:
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)


def test_union_vocabulary_and_rows(tmp_path, vocab_models):
    """union: base's 40 tokens, then newa (ft0's plain token), then the added tokens <tool>, newb
    (ft1's); each output row is that token's row (the base's where it has one, the only model's
    otherwise, the mean where several non-base models share it), merged by the method."""
    p = vocab_models
    cfg = {"merge_method": "linear", "dtype": "float32", "tokenizer_source": "union",
           "models": weighted(p, ("base", 0.5), ("ft0", 0.3), ("ft1", 0.2))}
    out = tmp_path / "out"
    llamix.merge(cfg, out, progress=False)
    v = vocab_of(out)
    assert [t for t, _ in sorted(v.items(), key=lambda kv: kv[1])[40:]] == ["newa", "<tool>", "newb"]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 43
    got = read_model(out)["model.embed_tokens.weight"]
    rows = {k: read_model(Path(p[k]))["model.embed_tokens.weight"] for k in p}
    vocabs = {k: vocab_of(Path(p[k])) for k in p}
    # newa: only ft0 has it, so every model's row is ft0's; newb: ft0 and ft1 have it, the base
    # does not, so the models lacking it take the mean of those two
    for tok in ("newa", "newb", "w7"):
        have = [k for k in p if tok in vocabs[k]]
        if len(have) == len(p):
            aligned = {k: rows[k][vocabs[k][tok]] for k in p}
        else:
            donor = (rows[have[0]][vocabs[have[0]][tok]] if len(have) == 1 else
                     np.mean([rows[k][vocabs[k][tok]] for k in have], axis=0))
            aligned = {k: rows[k][vocabs[k][tok]] if tok in vocabs[k] else donor for k in p}
        want = 0.5 * aligned["base"] + 0.3 * aligned["ft0"] + 0.2 * aligned["ft1"]
        np.testing.assert_allclose(got[v[tok]], want, rtol=1e-6, atol=1e-6)


def test_tokenizer_section_sources_force_and_padding(tmp_path, vocab_models):
    p = vocab_models
    cfg = {"merge_method": "linear", "dtype": "float32",
           "tokenizer": {"source": "base", "pad_to_multiple_of": 16, "tokens": {
               "<extra>": {"source": {"kind": "model_token", "model": p["ft1"], "token": "<tool>"}},
               "w5": {"source": {"kind": "zero"}, "force": True}}},
           "models": weighted(p, ("base", 0.5), ("ft1", 0.5))}
    out = tmp_path / "out"
    llamix.merge(cfg, out, progress=False)
    v = vocab_of(out)
    assert len(v) == 41 and v["<extra>"] == 40 and "<tool>" not in v
    got = read_model(out)["lm_head.weight"]
    assert got.shape == (48, HIDDEN) and json.loads((out / "config.json").read_text())["vocab_size"] == 48
    np.testing.assert_array_equal(got[v["w5"]], 0)
    ft1 = read_model(Path(p["ft1"]))["lm_head.weight"]
    tool = ft1[vocab_of(Path(p["ft1"]))["<tool>"]]
    np.testing.assert_allclose(got[40], tool, rtol=1e-6)  # both models take ft1's <tool> row
    np.testing.assert_allclose(got[41:], np.broadcast_to(got[:41].mean(0), (7, HIDDEN)), rtol=1e-5, atol=1e-6)


def test_token_sources_that_cannot_give_the_row_are_refused_before_merging(tmp_path, vocab_models, monkeypatch):
    """A tokens: source naming a model without that token (or a token not in it) is a ConfigError
    naming the config file and the field before any tensor is merged (it was raised when the
    embeddings were aligned, without the config's name); a source that is never used (every model
    has the token, no force) is still accepted, as before."""
    from llamix.merge.vocab import OutputVocab
    p = vocab_models
    (tmp_path / "m.yml").write_text("")
    monkeypatch.setattr(OutputVocab, "align", lambda self, *a: pytest.fail("a tensor was merged first"))
    for source, said in ((p["base"], f"{p['base']} does not have this token"),
                         ({"kind": "model_token", "model": p["ft1"], "token": "<nope>"},
                          f"token '<nope>' is not in {p['ft1']}")):
        cfg = {"merge_method": "linear", "dtype": "float32",
               "tokenizer": {"source": "base", "tokens": {"<extra>": {"source": source}}},
               "models": weighted(p, ("base", 0.5), ("ft1", 0.5))}
        import yaml
        (tmp_path / "m.yml").write_text(yaml.safe_dump(cfg))
        with pytest.raises(ConfigError) as e:
            llamix.merge(tmp_path / "m.yml", tmp_path / "out", progress=False)
        assert str(e.value) == f"{tmp_path / 'm.yml'}: tokenizer.tokens['<extra>'].source: {said}", str(e.value)
    monkeypatch.undo()
    cfg = {"merge_method": "linear", "dtype": "float32",
           "tokenizer": {"source": "base", "tokens": {"w5": {"source": p["ft1"]}}},
           "models": weighted(p, ("base", 0.5), ("ft1", 0.5))}
    llamix.merge(cfg, tmp_path / "ok", progress=False)


def test_same_vocabulary_needs_no_alignment_and_streams(tmp_path, vocab_models, monkeypatch):
    """tokenizer_source: base over models of one vocabulary realigns nothing: the vocabulary
    tensors stream from the files like the rest."""
    from llamix.merge.vocab import OutputVocab
    calls = []
    monkeypatch.setattr(OutputVocab, "align", lambda self, *a: calls.append(1))
    p = vocab_models
    llamix.merge({"merge_method": "linear", "tokenizer_source": "base", "base_model": p["base"],
                  "models": weighted(p, ("base", 0.5), ("base", 0.5))[:1]}, tmp_path / "out", progress=False)
    assert calls == []


def test_different_vocabularies_without_tokenizer_config_are_refused(tmp_path, vocab_models):
    p = vocab_models
    with pytest.raises(ValueError, match="shapes differ.*tokenizer_source: union"):
        llamix.merge({"merge_method": "linear", "models": weighted(p, ("base", 0.5), ("ft0", 0.5))}, tmp_path / "o",
                     progress=False)


SPM = ("stories260K_hf", "tokenizer.model")


def spm_model(root: Path, name: str, tensors: dict, added=(), assets=None) -> str:
    """A model whose tokenizer is only a tokenizer.model (512 pieces) plus `added` tokens ((text,
    special), ids 512...) in tokenizer_config.json's added_tokens_decoder, as transformers saves them."""
    n = 512 + len(added)
    rng = np.random.default_rng(len(added))
    t = dict(tensors)
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        t[k] = np.concatenate([t[k], rng.standard_normal((n - t[k].shape[0], HIDDEN)).astype(np.float32)])
    folder = write_model(root / name, t, vocab=n)
    shutil.copy(assets.joinpath(*SPM), folder / "tokenizer.model")
    decoder = {str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                        "special": True} for i, c in enumerate(("<unk>", "<s>", "</s>"))}
    for i, (text, special) in enumerate(added):
        decoder[str(512 + i)] = {"content": text, "lstrip": False, "normalized": not special, "rstrip": False,
                                 "single_word": False, "special": special}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "legacy": True, "added_tokens_decoder": decoder}))
    return str(folder)


@pytest.fixture(scope="module")
def spm_models(tmp_path_factory, assets):
    """SentencePiece-only models: base (512 pieces); ft0 adds <tool>; ft1 adds <|im_start|> (special)
    and newb (not special)."""
    root = tmp_path_factory.mktemp("spm_models")
    base = tiny_tensors(10, vocab=512)
    return {"base": spm_model(root, "base", base, assets=assets),
            "ft0": spm_model(root, "ft0", perturbed(base, 1, 0.05), [("<tool>", True)], assets=assets),
            "ft1": spm_model(root, "ft1", perturbed(base, 2, 0.05), [("<|im_start|>", True), ("newb", False)],
                             assets=assets)}


def test_union_of_sentencepiece_only_models(tmp_path, spm_models):
    """Models with only a tokenizer.model merge with tokenizer_source: union (they were refused):
    the new tokens follow the base's pieces, each row is its token's (aligned as for tokenizer.json
    models), and the output's tokenizer.model + added_tokens_decoder give llamix's tokenizer the
    merged vocabulary."""
    from llamix.tokenizer import Tokenizer
    from llamix.tokenizer.vocab import CONTROL, USER_DEFINED
    p = spm_models
    cfg = {"merge_method": "linear", "dtype": "float32", "tokenizer_source": "union",
           "models": weighted(p, ("base", 0.5), ("ft0", 0.3), ("ft1", 0.2))}
    out = llamix.merge(cfg, tmp_path / "out", progress=False)
    tok = Tokenizer.from_file(out)
    assert tok.vocab_size == 515 and tok.tokens[512:] == ["<tool>", "<|im_start|>", "newb"]
    assert list(tok.token_types[512:]) == [CONTROL, CONTROL, USER_DEFINED]
    assert tok.encode("<tool>x", parse_special=True) == [tok.bos_id, 512] + tok.encode("x", add_special=False)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 515
    got = read_model(out)["lm_head.weight"]
    rows = {k: read_model(Path(p[k]))["lm_head.weight"] for k in p}
    for tid, own in ((7, {"base": 7, "ft0": 7, "ft1": 7}), (512, {"ft0": 512}), (513, {"ft1": 512}),
                     (514, {"ft1": 513})):
        donor = {k: rows[k][j] for k, j in own.items()}
        aligned = {k: donor.get(k, next(iter(donor.values()))) for k in p}
        want = 0.5 * aligned["base"] + 0.3 * aligned["ft0"] + 0.2 * aligned["ft1"]
        np.testing.assert_allclose(got[tid], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("template,check", [("chatml", "<|im_start|>"), ("llama3", "<|start_header_id|>"),
                                            ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "m['content']")])
def test_chat_template_written_into_tokenizer_config(tmp_path, vocab_models, template, check):
    p = vocab_models
    out = tmp_path / "out"
    llamix.merge({"merge_method": "linear", "chat_template": template, "models": weighted(p, ("base", 1.0))}, out,
                 progress=False)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert check in config["chat_template"] and config["bos_token"] == "<s>"
    jinja2 = pytest.importorskip("jinja2")
    text = jinja2.Template(config["chat_template"]).render(messages=[{"role": "user", "content": "hi"}],
                                                            add_generation_prompt=True, bos_token="<s>", eos_token="</s>")
    assert "hi" in text


def test_chat_template_auto_and_bad_names(tmp_path, vocab_models):
    p = vocab_models
    tc = json.loads(Path(p["ft0"], "tokenizer_config.json").read_text())
    root = tmp_path / "m"
    shutil.copytree(p["ft0"], root)
    (root / "tokenizer_config.json").write_text(json.dumps({**tc, "chat_template": "{{ messages[0]['content'] }} x"}))
    out = tmp_path / "out"
    llamix.merge({"merge_method": "linear", "chat_template": "auto",
                  "models": [{"model": str(root), "parameters": {"weight": 1.0}}]}, out, progress=False)
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == "{{ messages[0]['content'] }} x"
    with pytest.raises(ConfigError, match="chat_template: 'nope' is neither a built-in"):
        llamix.merge({"merge_method": "linear", "chat_template": "nope", "models": weighted(p, ("base", 1.0))},
                     tmp_path / "o2", progress=False)


def test_zero_length_slice(tmp_path):
    base = tiny_tensors(3)
    a = write_model(tmp_path / "a", base)
    b = write_model(tmp_path / "b", perturbed(base, 4))
    out = tmp_path / "out"
    llamix.merge({"merge_method": "passthrough", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}]},
        {"sources": [{"model": str(b), "layer_range": [3, 3]}]},
        {"sources": [{"model": str(b), "layer_range": [1, 3]}]}]}, out, progress=False)
    got = read_model(out)
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 4
    want_b = read_model(b)
    np.testing.assert_array_equal(got["model.layers.2.mlp.up_proj.weight"], want_b["model.layers.1.mlp.up_proj.weight"])
    with pytest.raises(ConfigError, match=r"layer_range: expected \[start, end\) with 0 <= start <= end"):
        llamix.merge({"merge_method": "passthrough", "slices": [{"sources": [{"model": str(a), "layer_range": [2, 1]}]}]},
                     tmp_path / "o2", progress=False)


def test_pytorch_bin_is_refused_with_a_conversion_hint(tmp_path):
    folder = tmp_path / "pt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle that anyone will load")
    with pytest.raises(ConfigError, match=r"pytorch_model.bin \(a pickle\), which llamix never loads.*safetensors"):
        llamix.merge({"merge_method": "linear", "models": [{"model": str(folder), "parameters": {"weight": 1}}]},
                     tmp_path / "out", progress=False)


# --- Hugging Face repo ids from the local cache --------------------------------------------------
@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder named like the repo
    return cache


def test_repo_ids_resolve_from_the_cache_offline(tmp_path, offline_hub):
    base = tiny_tensors(5)
    src_a = write_model(tmp_path / "src_a", base)
    src_b = write_model(tmp_path / "src_b", perturbed(base, 6))
    hub_cache(offline_hub, "org/model-a", src_a)
    commit = hub_cache(offline_hub, "org/model-b", src_b, commit="fedcba9876543210fedcba9876543210fedcba98", ref="v2")
    out = tmp_path / "out"
    llamix.merge({"merge_method": "linear", "dtype": "float32",
                  "models": [{"model": "org/model-a", "parameters": {"weight": 0.5}},
                             {"model": "org/model-b@v2", "parameters": {"weight": 0.5}}]}, out, progress=False)
    got, a, b = read_model(out), read_model(src_a), read_model(src_b)
    name = "model.layers.1.self_attn.q_proj.weight"
    np.testing.assert_allclose(got[name], (0.5 * a[name].astype(np.float32) + 0.5 * b[name].astype(np.float32)),
                               rtol=1e-6)
    llamix.merge({"merge_method": "linear", "models": [{"model": f"org/model-b@{commit}", "parameters": {"weight": 1}}]},
                 tmp_path / "out2", progress=False)
    with pytest.raises(ConfigError, match=r"org/missing is neither a local folder nor in the Hugging Face cache.*"
                                          "HF_HUB_OFFLINE") as e:
        llamix.merge({"merge_method": "linear", "models": [{"model": "org/missing", "parameters": {"weight": 1}}]},
                     tmp_path / "out3", progress=False)
    assert "local_files_only" not in str(e.value)   # huggingface_hub's advice to a Python caller


def test_a_mistyped_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    # 'models/llama-bse' beside a 'models' folder: refused at once as a local path (no Hub request,
    # which offline took about 25 s of retries); '@main' still means the repo
    write_model(tmp_path / "models" / "llama-base", tiny_tensors(5))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import llamix.merge.sources as sources
    monkeypatch.setattr(sources, "from_hub", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(ConfigError, match=r"models/llama-bse.*is not a local folder: .*models exists but holds no "
                                          r"'llama-bse'.*models/llama-bse@main"):
        llamix.merge({"merge_method": "linear", "models": [{"model": "models/llama-bse", "parameters": {"weight": 1}}]},
                     tmp_path / "out", progress=False)


# --- LoRA ----------------------------------------------------------------------------------------
def write_adapter(folder: Path, base: dict, targets, r=4, alpha=8.0, rslora=False, seed=0, embed=False) -> dict:
    """A PEFT LoRA adapter for `targets` (module names), written with the safetensors package.
    Returns the expected deltas (float64) per target weight."""
    from safetensors.numpy import save_file
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    tensors, deltas = {}, {}
    scale = alpha / (np.sqrt(r) if rslora else r)
    for module in targets:
        out_f, in_f = base[module + ".weight"].shape
        a = (rng.standard_normal((r, in_f)) * 0.1).astype(np.float32)
        b = (rng.standard_normal((out_f, r)) * 0.1).astype(np.float32)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
        deltas[module + ".weight"] = scale * (b.astype(np.float64) @ a)
    if embed:
        v, h = base["model.embed_tokens.weight"].shape
        a = (rng.standard_normal((r, v)) * 0.1).astype(np.float32)
        b = (rng.standard_normal((h, r)) * 0.1).astype(np.float32)
        tensors["base_model.model.model.embed_tokens.lora_embedding_A"] = a
        tensors["base_model.model.model.embed_tokens.lora_embedding_B"] = b
        deltas["model.embed_tokens.weight"] = scale * (b.astype(np.float64) @ a).T
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "use_rslora": rslora, "task_type": "CAUSAL_LM",
        "target_modules": sorted({t.split(".")[-1] for t in targets}), "lora_dropout": 0.0, "fan_in_fan_out": False,
        "base_model_name_or_path": "base"}))
    return deltas


LORA_TARGETS = ["model.layers.0.self_attn.q_proj", "model.layers.2.mlp.down_proj", "model.layers.1.self_attn.v_proj"]


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_applied_while_streaming(tmp_path, rslora):
    base = tiny_tensors(8)
    model = write_model(tmp_path / "model", base)
    deltas = write_adapter(tmp_path / "lora", base, LORA_TARGETS, rslora=rslora, embed=True)
    out = tmp_path / "out"
    llamix.merge({"merge_method": "passthrough", "dtype": "float32",
                  "models": [{"model": f"{model}+{tmp_path / 'lora'}"}]}, out, progress=False)
    got = read_model(out)
    for name, w in base.items():
        want = w.astype(np.float64) + deltas.get(name, 0)
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-6, err_msg=name)
        if name not in deltas:
            np.testing.assert_array_equal(got[name], w)
    # mergekit's mapping form of the same reference
    out2 = tmp_path / "out2"
    llamix.merge({"merge_method": "passthrough", "dtype": "float32",
                  "models": [{"model": {"model": {"path": str(model)}, "lora": {"path": str(tmp_path / "lora")}}}]},
                 out2, progress=False)
    assert (out2 / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_lora_errors_name_the_problem(tmp_path):
    base = tiny_tensors(8)
    model = write_model(tmp_path / "model", base)
    write_adapter(tmp_path / "lora", {**base, "model.layers.9.mlp.up_proj.weight": np.zeros((24, 16), np.float32)},
                  ["model.layers.9.mlp.up_proj"])
    with pytest.raises(ConfigError, match="changes 'model.layers.9.mlp.up_proj.weight', which the model does not have"):
        llamix.merge({"merge_method": "passthrough", "models": [{"model": f"{model}+{tmp_path / 'lora'}"}]},
                     tmp_path / "out", progress=False)
    (tmp_path / "dora").mkdir()
    (tmp_path / "dora" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True}))
    with pytest.raises(ConfigError, match="DoRA"):
        llamix.merge({"merge_method": "passthrough", "models": [{"model": f"{model}+{tmp_path / 'dora'}"}]},
                     tmp_path / "out", progress=False)


# --- peers ---------------------------------------------------------------------------------------
def run_mergekit(cfg: dict, out: Path, **options):
    require_peer("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge
    run_merge(MergeConfiguration.model_validate(cfg), out_path=str(out),
              options=MergeOptions(write_model_card=False, quiet=True, device="cpu", **options))
    return read_model(out)


VOCAB_CONFIGS = {
    "union": {"tokenizer_source": "union", "models": [("base", 0.5), ("ft0", 0.3), ("ft1", 0.2)]},
    "base": {"tokenizer_source": "base", "models": [("ft0", 0.6), ("ft1", 0.4)]},
    "model": {"tokenizer": {"source": "ft0"}, "models": [("ft0", 0.5), ("ft1", 0.5)]},
    "tokens_padding": {"tokenizer": {"source": "union", "pad_to_multiple_of": 8, "tokens": {
        "newa": {"source": "ft0", "force": True},
        "<extra>": {"source": {"kind": "model_token", "model": "ft1", "token": "<tool>"}},
        "w5": {"source": {"kind": "zero"}, "force": True}}}, "models": [("base", 0.5), ("ft0", 0.3), ("ft1", 0.2)]},
}


@pytest.mark.peers
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(VOCAB_CONFIGS))
def test_vocabularies_match_mergekit(tmp_path, vocab_models, name, dtype):
    """Same tokens, same vocab_size, and each token's rows identical to mergekit's (looked up by
    token: mergekit numbers tokens new in several models in Python set order). Padding rows are
    the mean of the others in torch's summation order, so they match where the ids match."""
    p = vocab_models
    spec = json.loads(json.dumps(VOCAB_CONFIGS[name]).replace('"ft0"', json.dumps(p["ft0"]))
                      .replace('"ft1"', json.dumps(p["ft1"])))
    cfg = {"merge_method": "task_arithmetic" if name == "base" else "linear", "dtype": dtype,
           **{k: v for k, v in spec.items() if k != "models"},
           "models": weighted(p, *[(k, w) for k, w in VOCAB_CONFIGS[name]["models"]])}
    if name == "base":
        cfg["base_model"] = p["base"]
    want = run_mergekit(cfg, tmp_path / "mergekit")
    got = read_model(llamix.merge(cfg, tmp_path / "llamix", progress=False))
    vm, vl = vocab_of(tmp_path / "mergekit"), vocab_of(tmp_path / "llamix")

    def same(a, b, msg):
        if dtype == "float32" or cfg["merge_method"] == "linear":
            np.testing.assert_array_equal(a, b, err_msg=msg)
        else:  # task_arithmetic in bfloat16: mergekit rounds every intermediate (see test_merge_peers.py)
            np.testing.assert_allclose(a, b, rtol=0, atol=2.0 ** -6, err_msg=msg)  # 2 ulps at inputs of ~2
    assert set(vm) == set(vl)
    assert (json.loads((tmp_path / "mergekit" / "config.json").read_text())["vocab_size"] ==
            json.loads((tmp_path / "llamix" / "config.json").read_text())["vocab_size"])
    for tensor in got:
        if tensor in ("model.embed_tokens.weight", "lm_head.weight"):
            assert got[tensor].shape == want[tensor].shape
            for tok, i in vm.items():
                same(got[tensor][vl[tok]], want[tensor][i], f"{tensor} {tok!r}")
            if vm == vl:
                same(got[tensor][len(vm):], want[tensor][len(vm):], tensor)
        else:
            same(got[tensor], want[tensor], tensor)


@pytest.mark.peers
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("tokenizer", [{"tokenizer_source": "union"},
                                       {"tokenizer": {"source": "union", "pad_to_multiple_of": 8}}])
def test_sentencepiece_only_vocabularies_match_mergekit(tmp_path, spm_models, tokenizer, dtype):
    """tokenizer.model-only inputs: the same tokens (as transformers reads both outputs), vocab_size,
    and each token's rows as mergekit's."""
    require_peer("transformers")
    from transformers import AutoTokenizer
    p = spm_models
    cfg = {"merge_method": "linear", "dtype": dtype, **tokenizer,
           "models": weighted(p, ("base", 0.5), ("ft0", 0.3), ("ft1", 0.2))}
    want = run_mergekit(cfg, tmp_path / "mergekit")
    got = read_model(llamix.merge(cfg, tmp_path / "llamix", progress=False))
    vm = AutoTokenizer.from_pretrained(tmp_path / "mergekit").get_vocab()
    vl = AutoTokenizer.from_pretrained(tmp_path / "llamix").get_vocab()
    assert vm.keys() == vl.keys()
    size = json.loads((tmp_path / "mergekit" / "config.json").read_text())["vocab_size"]
    assert json.loads((tmp_path / "llamix" / "config.json").read_text())["vocab_size"] == size
    for tensor in got:
        assert got[tensor].shape == want[tensor].shape, tensor
        if tensor in ("model.embed_tokens.weight", "lm_head.weight"):
            for tok, i in vm.items():
                np.testing.assert_array_equal(got[tensor][vl[tok]], want[tensor][i], err_msg=f"{tensor} {tok!r}")
        else:
            np.testing.assert_array_equal(got[tensor], want[tensor], err_msg=tensor)


@pytest.mark.peers
def test_zero_length_slice_matches_mergekit(tmp_path):
    base = tiny_tensors(3)
    a, b = write_model(tmp_path / "a", base), write_model(tmp_path / "b", perturbed(base, 4))
    cfg = {"merge_method": "passthrough", "dtype": "float32", "slices": [
        {"sources": [{"model": str(a), "layer_range": [0, 2]}]}, {"sources": [{"model": str(b), "layer_range": [3, 3]}]},
        {"sources": [{"model": str(b), "layer_range": [1, 3]}]}]}
    want = run_mergekit(cfg, tmp_path / "mergekit", copy_tokenizer=False)
    got = read_model(llamix.merge(cfg, tmp_path / "llamix", progress=False))
    assert set(got) == set(want)
    for k in got:
        np.testing.assert_array_equal(got[k], want[k])


@pytest.mark.peers
def test_lora_matches_peft_merge_and_unload(tmp_path):
    """peft merges the adapter into the model (merge_and_unload, float32); llamix applies it while
    streaming: within float32 rounding of the B @ A product (summed over r = 4 terms)."""
    torch = require_peer("torch")
    transformers = require_peer("transformers")
    peft = require_peer("peft")
    base = tiny_tensors(8)
    model = write_model(tmp_path / "model", base)
    write_adapter(tmp_path / "lora", base, LORA_TARGETS)
    m = transformers.AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(m, str(tmp_path / "lora")).merge_and_unload()
    want = {k: v.detach().numpy().astype(np.float64) for k, v in merged.state_dict().items()}
    got = read_model(llamix.merge({"merge_method": "passthrough", "dtype": "float32",
                                   "models": [{"model": f"{model}+{tmp_path / 'lora'}"}]}, tmp_path / "out",
                                  progress=False))
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=4 * 2.0 ** -24 * (np.abs(want[name]).max() + 1),
                                   err_msg=name)


def test_online_resolution_fetches_only_weights_configs_and_tokenizers(tmp_path, monkeypatch):
    """Not in the cache and not offline: huggingface_hub is asked for safetensors, configs and
    tokenizer files only; a repo with only pickled weights is refused before downloading."""
    hub = pytest.importorskip("huggingface_hub")
    base = tiny_tensors(5)
    src = write_model(tmp_path / "src", base)
    calls = []

    def snapshot_download(repo_id, revision=None, cache_dir=None, local_files_only=False, allow_patterns=None):
        calls.append((repo_id, revision, local_files_only, tuple(allow_patterns or ())))
        if local_files_only:
            raise FileNotFoundError("not cached")
        return str(src)

    monkeypatch.setattr(hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(hub, "list_repo_files", lambda repo_id, revision=None: (
        ["config.json", "pytorch_model.bin"] if repo_id == "org/pickled" else ["config.json", "model.safetensors"]))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.chdir(tmp_path)
    llamix.merge({"merge_method": "linear", "models": [{"model": "org/model@main", "parameters": {"weight": 1}}]},
                 tmp_path / "out", progress=False)
    assert [c[:3] for c in calls] == [("org/model", "main", True), ("org/model", "main", False)]
    patterns = calls[1][3]
    assert "*.safetensors" in patterns and "config.json" in patterns and "tokenizer.json" in patterns
    assert not any(p.endswith(".bin") or p == "*" for p in patterns)
    with pytest.raises(ConfigError, match=r"org/pickled has only pytorch_model.bin \(a pickle\)"):
        llamix.merge({"merge_method": "linear", "models": [{"model": "org/pickled", "parameters": {"weight": 1}}]},
                     tmp_path / "out2", progress=False)


def test_a_model_listed_twice_is_refused(tmp_path):
    """mergekit refuses it ("Duplicate merge inputs"); a weight split over two entries of one model
    would otherwise merge silently as one heavier input."""
    a = tmp_path / "a"
    write_model(a, tiny_tensors(0))
    cfg = {"merge_method": "linear", "models": [{"model": str(a), "parameters": {"weight": 0.5}},
                                                 {"model": str(a), "parameters": {"weight": 0.5}}]}
    with pytest.raises(ConfigError, match=r"models\[1\]\.model: .* is listed twice \(also models\[0\]\)"):
        llamix.merge(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
