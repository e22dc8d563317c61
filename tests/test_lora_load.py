"""llamix.load(path, lora=ADAPTER, lora_scale=...): a PEFT LoRA adapter folded into the weights as
they load. Peer: peft's merge_and_unload on transformers' model of the same tiny checkpoint (the
adapter made and saved by peft itself); the scale against the adapter's own alpha; a GGUF file of
the model (q8_0: the updated weights quantized again) against the float result."""
from __future__ import annotations

import json

import numpy as np
import pytest

import llamix
from conftest import require_peer
from llamix.errors import ArgumentError, ConfigError
import llama_cpp_peer
from helpers import perturbed, tiny_tensors, write_model
from llamix.cli import main as cli_main
from llamix.formats.gguf import GGUFWriter
from llamix.formats.names import gguf_name, hf_rows_to_gguf
from llamix.formats.peft_lora import LoraAdapter
from llamix.merge.extract_lora import extract_lora
from llamix.loaders import byte_tokenizer

IDS = [1, 5, 17, 42, 3, 88, 60, 61, 2, 9, 33, 71]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def hf_lora(tmp_path_factory):
    """(model folder, adapter folder, transformers' logits of the merged model, of the base model)."""
    torch = require_peer("torch")
    transformers = require_peer("transformers")
    peft = require_peer("peft")
    tmp = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, initializer_range=0.2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp / "model", safe_serialization=True)
    with torch.no_grad():
        base = model(torch.tensor([IDS])).logits[0].numpy()
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0))
    with torch.no_grad():   # peft starts B at zero: an adapter that changes nothing would prove nothing
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    lora.save_pretrained(tmp / "adapter", safe_serialization=True)
    merged = lora.merge_and_unload().eval()
    with torch.no_grad():
        want = merged(torch.tensor([IDS])).logits[0].numpy()
    return tmp / "model", tmp / "adapter", want, base


def test_lora_matches_peft_merged_model(hf_lora):
    model, adapter, want, base = hf_lora
    got = llamix.load(model, lora=adapter).logits(IDS)
    scale = np.abs(want).max()
    assert np.abs(want - base).max() > 0.05 * scale          # the adapter matters
    assert np.abs(got - want).max() <= 1e-4 * scale


def test_lora_scale_is_the_adapters_alpha_scaled(hf_lora, tmp_path):
    model, adapter, _, base = hf_lora
    half = tmp_path / "half"
    half.mkdir()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["lora_alpha"] = cfg["lora_alpha"] / 2
    (half / "adapter_config.json").write_text(json.dumps(cfg))
    (half / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    scaled = llamix.load(model, lora=adapter, lora_scale=0.5).logits(IDS)
    assert np.array_equal(scaled, llamix.load(model, lora=half).logits(IDS))
    assert np.abs(llamix.load(model, lora=adapter, lora_scale=0.0).logits(IDS) - base).max() <= 1e-4 * np.abs(base).max()


@pytest.mark.parametrize("qtype", ["f32", "q8_0"])
def test_lora_on_a_gguf_file(hf_lora, tmp_path, qtype):
    """GGUF names and q/k row order: an f32 file takes the adapter as the folder does. q8_0: each
    updated weight is quantized again, so the result is the float one within q8_0's own error on
    this model (the file without the adapter against the float model without it)."""
    model, adapter, want, base = hf_lora
    gguf = tmp_path / "m.gguf"
    llamix.export_gguf(model, gguf, qtype, tokenizer=byte_tokenizer(384))
    err = np.abs(llamix.load(gguf, lora=adapter).logits(IDS) - want).max()
    if qtype == "f32":
        assert err <= 1e-4 * np.abs(want).max()
    else:
        own = np.abs(llamix.load(gguf).logits(IDS) - base).max()
        assert err <= 1.5 * own
        assert np.abs(want - base).max() > 3 * own


def test_llama_lora_path(hf_lora):
    model, adapter, want, _ = hf_lora
    got = llamix.Llama(model_path=str(model), lora_path=str(adapter), verbose=False).logits(IDS)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_an_adapter_for_another_model_is_refused(hf_lora, tmp_path):
    model, adapter, _, _ = hf_lora
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps(cfg))
    require_peer("safetensors.numpy").save_file({"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": np.zeros((4, 64), np.float32),
               "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight": np.zeros((64, 4), np.float32)},
              str(other / "adapter_model.safetensors"))
    with pytest.raises(ConfigError, match=r"layers\.7\.self_attn\.q_proj"):
        llamix.load(model, lora=other)
    with pytest.raises(FileNotFoundError, match="no such LoRA adapter"):
        llamix.load(model, lora=tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a PEFT adapter"):
        llamix.load(model, lora=model)
    with pytest.raises(ArgumentError, match="lora_scale"):
        llamix.load(model, lora=adapter, lora_scale=float("nan"))


def test_a_file_that_is_not_an_adapter_is_named(hf_lora, tmp_path):
    model, _, _, _ = hf_lora
    gguf = tmp_path / "adapter.gguf"
    llamix.export_gguf(model, gguf, "f32", tokenizer=byte_tokenizer(384))   # a model, not an adapter
    with pytest.raises(ConfigError, match="general.type / adapter.type are .* not a LoRA adapter"):
        llamix.load(model, lora=gguf)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a GGUF LoRA adapter"):
        llamix.load(model, lora=tmp_path / "notes.txt")


def test_cli_lora_flags(hf_lora, tmp_path, capsys):
    """llama.cpp's --lora FNAME and --lora-scaled FNAME SCALE: the adapter at that scale changes
    the greedy text as the API's lora= does; one adapter only; SCALE a number."""
    model, adapter, _, _ = hf_lora
    gguf = tmp_path / "m.gguf"
    llamix.export_gguf(model, gguf, "f32", tokenizer=byte_tokenizer(384))

    def greedy(*flags):
        assert cli_main(["generate", "-m", str(gguf), "-p", "ab", "-n", "8", "--temp", "0", "--no-display-prompt",
                         *flags]) == 0
        return capsys.readouterr().out

    def api(**kw):
        return llamix.load(gguf, **kw).create_completion("ab", max_tokens=8, temperature=0)["choices"][0]["text"]

    assert greedy("--lora", str(adapter)).strip() == api(lora=adapter).strip()
    assert greedy("--lora-scaled", str(adapter), "0.5").strip() == api(lora=adapter, lora_scale=0.5).strip()
    # llama.cpp's current spelling, FNAME:SCALE (its --lora-scaled takes one argument now)
    assert greedy(f"--lora-scaled={adapter}:0.5") == greedy("--lora-scaled", f"{adapter}:0.5") == \
        greedy("--lora-scaled", str(adapter), "0.5")
    assert cli_main(["generate", "-m", str(gguf), "-p", "ab", "--lora", str(adapter),
                     "--lora-scaled", str(adapter), "1"]) == 1
    assert "give one adapter" in capsys.readouterr().err
    assert cli_main(["generate", "-m", str(gguf), "-p", "ab", "--lora-scaled", str(adapter), "half"]) == 1
    assert "SCALE must be a number" in capsys.readouterr().err


def _gguf_adapter(adapter, out, alpha: float):
    """The PEFT adapter as convert_lora_to_gguf writes one for a llama model: NAME.lora_a (r, in),
    NAME.lora_b (out, r) with q/k rows in the GGUF file's (adjacent-pair) order."""
    tensors = LoraAdapter(adapter, "test")
    cfg = llamix.loaders.read_hf_config(adapter.parent / "model")
    config = llamix.loaders.config_from_hf(cfg)
    with GGUFWriter(out) as w:
        w.add("general.architecture", "llama")
        w.add("general.type", "adapter")
        w.add("adapter.type", "lora")
        w.add("adapter.lora.alpha", np.float32(alpha))
        for target, (a_key, b_key, _) in tensors.pairs.items():
            name = gguf_name(target)
            a = np.asarray(tensors.tensors.get(a_key), np.float32)
            b = hf_rows_to_gguf(name, np.asarray(tensors.tensors.get(b_key), np.float32), config)
            w.add_tensor(name + ".lora_a", np.ascontiguousarray(a))
            w.add_tensor(name + ".lora_b", np.ascontiguousarray(b))


@pytest.mark.peers
def test_gguf_adapter_matches_peft_and_llama_cpp(hf_lora, tmp_path):
    """A GGUF LoRA adapter file: llamix folds it as the PEFT folder it came from, and its logits on
    an f32 GGUF model are llama.cpp's with the same adapter (llama.cpp adds B(Ax) at run time)."""
    model, adapter, want, _ = hf_lora
    gguf = tmp_path / "m.gguf"
    llamix.export_gguf(model, gguf, "f32", tokenizer=byte_tokenizer(384))
    lora = tmp_path / "lora.gguf"
    _gguf_adapter(adapter, lora, json.loads((adapter / "adapter_config.json").read_text())["lora_alpha"])
    ours = llamix.load(gguf, lora=lora).logits(IDS)
    assert np.abs(ours - want).max() <= 1e-4 * np.abs(want).max()
    half = llamix.load(gguf, lora=lora, lora_scale=0.5).logits(IDS)
    assert np.abs(half - llamix.load(model, lora=adapter, lora_scale=0.5).logits(IDS)).max() <= 1e-4 * np.abs(want).max()
    llama_cpp_peer.require()
    theirs = llama_cpp_peer.run_model_in_child(gguf, n_ctx=64, seed=0, logits=[IDS], lora_path=str(lora))["logits"][0]
    assert np.abs(theirs - want).max() <= 1e-3 * np.abs(want).max()
    assert np.abs(ours - theirs).max() <= 1e-3 * np.abs(want).max()


def test_cli_one_adapter_only_said_before_loading(tmp_path, capsys, monkeypatch):
    """llama.cpp applies every --lora given; llamix applies one, so a repeated --lora (or
    --lora-scaled) is refused naming both rather than keeping the last one silently, and a missing
    adapter or a SCALE that is not finite is said before the model loads."""
    import llamix.commands.model_inputs as mi
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")

    def no_load(*args, **kw):
        raise AssertionError("the model was loaded before the flags were checked")
    monkeypatch.setattr(mi, "load_checkpoint", no_load)
    monkeypatch.setattr(mi, "random_checkpoint", no_load)
    for cmd in ("generate", "chat"):
        for flags in (["--lora", a, "--lora", b], ["--lora-scaled", a, "1", "--lora-scaled", b, "0.5"],
                      ["--lora", a, "--lora-scaled", b, "1"]):
            assert cli_main([cmd, "-m", "model.gguf", "-p", "ab", *flags]) == 1
            err = capsys.readouterr().err
            assert "give one adapter" in err and a in err and b in err, err
    assert cli_main(["generate", "--random", "tiny", "-p", "ab", "--lora", str(tmp_path / "missing.gguf")]) == 1
    assert "missing.gguf: no such LoRA adapter file or folder" in capsys.readouterr().err
    assert cli_main(["generate", "--random", "tiny", "-p", "ab", "--lora-scaled", a, "nan"]) == 1
    assert "SCALE must be a finite number" in capsys.readouterr().err


def test_lora_argument_kinds(s260_bin, monkeypatch):
    """lora= takes one path: a list (several adapters) or '' is an ArgumentError said before the
    model loads (a list was a TypeError from pathlib, '' read the current folder as an adapter);
    Llama(lora_path='') is no adapter, as llama-cpp-python tests it."""
    import llamix.model.model as mm
    real = mm.load_checkpoint
    calls = []
    monkeypatch.setattr(mm, "load_checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    with pytest.raises(ArgumentError, match="one adapter .* got list; several adapters at once are not supported"):
        llamix.load(s260_bin, lora=["a", "b"])
    with pytest.raises(ArgumentError, match="lora='': no adapter path"):
        llamix.load(s260_bin, lora="")
    assert calls == []
    plain = llamix.load(s260_bin).logits([1, 403, 407])
    got = llamix.Llama(model_path=str(s260_bin), lora_path="", verbose=False).logits([1, 403, 407])
    np.testing.assert_array_equal(got, plain)


def test_quantize_with_lora_writes_the_adapted_model(hf_lora, tmp_path, capsys):
    """llamix quantize --lora / --lora-scaled (llama-export-lora's job): the file written holds the
    adapted weights (f32: the logits of load(lora=) and of peft's merged model; q8_0: within its
    rounding), and runs with no adapter. The adapter is an input: OUT may not replace it."""
    model, adapter, want, base = hf_lora
    gguf = tmp_path / "m.gguf"
    llamix.export_gguf(model, gguf, "f32", tokenizer=byte_tokenizer(384))
    out = tmp_path / "adapted.gguf"
    assert cli_main(["quantize", str(gguf), str(out), "f32", "--lora", str(adapter), "-q"]) == 0
    got = llamix.load(out).logits(IDS)
    np.testing.assert_array_equal(got, llamix.load(gguf, lora=adapter).logits(IDS))
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    # q8_0 at half scale: the same file as the adapted f32 weights quantized by a second quantize
    half, half_f32, then = (tmp_path / n for n in ("half.q8_0.gguf", "half.f32.gguf", "then.q8_0.gguf"))
    assert cli_main(["quantize", str(gguf), str(half), "q8_0", "--lora-scaled", str(adapter), "0.5", "-q"]) == 0
    assert cli_main(["quantize", str(gguf), str(half_f32), "f32", "--lora-scaled", str(adapter), "0.5", "-q"]) == 0
    assert cli_main(["quantize", str(half_f32), str(then), "q8_0", "-q"]) == 0
    np.testing.assert_array_equal(llamix.load(half_f32).logits(IDS),
                                  llamix.load(model, lora=adapter, lora_scale=0.5).logits(IDS))
    np.testing.assert_array_equal(llamix.load(half).logits(IDS), llamix.load(then).logits(IDS))
    capsys.readouterr()
    assert cli_main(["quantize", str(gguf), str(adapter / "adapter_model.safetensors"), "f32", "--lora", str(adapter),
                     "--force", "-q"]) == 1
    assert "input" in capsys.readouterr().err


def test_perplexity_and_imatrix_take_lora(hf_lora, tmp_path, capsys):
    """llama-perplexity's and llama-imatrix's --lora / --lora-scaled (llama.cpp's common flags): the
    scores are those of the adapted model (the same as on a file with the adapter written in), and
    --kl-base compares the adapted model with the base."""
    model, adapter, _, _ = hf_lora
    gguf, adapted = tmp_path / "m.gguf", tmp_path / "adapted.gguf"
    llamix.export_gguf(model, gguf, "f32", tokenizer=byte_tokenizer(384))
    llamix.export_gguf(llamix.load(gguf, lora=adapter, lora_scale=0.5), adapted, "f32")
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 12)
    flags = ["-f", str(text), "-c", "32", "--chunks", "3"]

    def run(*argv):
        assert cli_main(list(argv)) == 0
        return capsys.readouterr().out
    scores = [run("perplexity", "-m", str(m), *flags, *lora).splitlines()[:-1]   # but the timing line
              for m, lora in ((gguf, ["--lora-scaled", str(adapter), "0.5"]), (adapted, []))]
    assert scores[0] == scores[1] and len(scores[0]) >= 2
    kl = run("perplexity", "-m", str(gguf), *flags, "--lora", str(adapter), "--kl-base", str(gguf))
    assert "Mean KLD" in kl and "Mean KLD = 0.000000" not in kl
    from llamix.formats.imatrix import read_imatrix
    run("imatrix", "-m", str(gguf), *flags, "-o", str(tmp_path / "a.gguf"), "-q", "--lora-scaled", str(adapter), "0.5")
    run("imatrix", "-m", str(adapted), *flags, "-o", str(tmp_path / "b.gguf"), "-q")
    a, b = read_imatrix(tmp_path / "a.gguf"), read_imatrix(tmp_path / "b.gguf")
    assert a.sums.keys() == b.sums.keys()
    for k in a.sums:
        np.testing.assert_array_equal(a.sums[k], b.sums[k])


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0"])
def test_lora_with_qtype_is_folded_before_the_conversion(hf_lora, tmp_path, qtype):
    """load(float model, qtype=Q, lora=A) holds the adapted float weights converted to Q once: the
    same weights as the adapted model written in f32 and loaded with qtype=Q (it folded the update
    into weights already converted, rounding it a second time and losing updates below Q's step).
    The CLI's --qtype / --lora load through the same function."""
    model, adapter, _, _ = hf_lora
    adapted = tmp_path / "adapted.gguf"
    llamix.export_gguf(llamix.load(model, lora=adapter), adapted, "f32", tokenizer=byte_tokenizer(384))
    want = llamix.load(adapted, qtype=qtype)
    got = llamix.load(model, qtype=qtype, lora=adapter, tokenizer=byte_tokenizer(384))
    assert want.tensors.keys() == got.tensors.keys()
    for name, t in want.tensors.items():
        u = got.tensors[name]
        if hasattr(t, "qtype"):
            assert (t.qtype, t.shape) == (u.qtype, u.shape), name
            np.testing.assert_array_equal(np.asarray(t.data), np.asarray(u.data), err_msg=name)
    np.testing.assert_array_equal(got.logits(IDS), want.logits(IDS))


def test_gguf_adapter_with_q8_0_tensors(hf_lora, tmp_path):
    """convert_lora_to_gguf --outtype q8_0 writes Q8_0 lora_a tensors (lora_b rows of r elements
    stay float): they are read (were refused as 'not F32, F16 or BF16'), dequantized as gguf-py
    dequantizes them, so the model is the one with those values in a float adapter."""
    gguf_py = require_peer("gguf")
    from gguf.quants import dequantize, quantize as gq_quantize
    model, adapter, _, _ = hf_lora
    gguf = tmp_path / "m.gguf"
    llamix.export_gguf(model, gguf, "f32", tokenizer=byte_tokenizer(384))
    tensors = LoraAdapter(adapter, "test")
    cfg = llamix.loaders.config_from_hf(llamix.loaders.read_hf_config(model))
    alpha = json.loads((adapter / "adapter_config.json").read_text())["lora_alpha"]
    q8, plain = tmp_path / "q8.gguf", tmp_path / "plain.gguf"
    for path, quantized in ((q8, True), (plain, False)):
        with GGUFWriter(path) as w:
            for k, v in (("general.architecture", "llama"), ("general.type", "adapter"), ("adapter.type", "lora")):
                w.add(k, v)
            w.add("adapter.lora.alpha", np.float32(alpha))
            for target, (a_key, b_key, _) in tensors.pairs.items():
                name = gguf_name(target)
                a = np.asarray(tensors.tensors.get(a_key), np.float32)
                raw = gq_quantize(a, gguf_py.GGMLQuantizationType.Q8_0)
                if quantized:
                    w.add_tensor(name + ".lora_a", raw, "Q8_0", shape=a.shape)
                else:
                    w.add_tensor(name + ".lora_a", np.ascontiguousarray(
                        dequantize(raw, gguf_py.GGMLQuantizationType.Q8_0).astype(np.float32)))
                w.add_tensor(name + ".lora_b", np.ascontiguousarray(
                    hf_rows_to_gguf(name, np.asarray(tensors.tensors.get(b_key), np.float32), cfg)))
    np.testing.assert_array_equal(llamix.load(gguf, lora=q8).logits(IDS), llamix.load(gguf, lora=plain).logits(IDS))
    assert np.abs(llamix.load(gguf, lora=q8).logits(IDS) - llamix.load(gguf).logits(IDS)).max() > 0.01


@pytest.mark.peers
def test_gguf_adapter_token_embd_and_norms(hf_lora, tmp_path):
    """convert_lora_to_gguf's token_embd LoRA has A and B flipped ((vocab, r) and (embd, r), as
    llama.cpp's llm_build_inp_embd reads them) and its r is lora_b's: folded as E + s * A @ B^T
    (float64 numpy), and the logits are llama.cpp's with the same adapter (the adapter was refused as
    'not (r, in) and (out, r)'). A whole *_norm.weight (mergekit-extract-lora's changed norms,
    which llama.cpp skips) replaces the model's norm (it was refused as not .lora_a / .lora_b)."""
    from llamix.loaders import load_checkpoint
    from llamix.quant import quantize
    model, _, _, _ = hf_lora
    gguf = tmp_path / "m.gguf"
    llamix.export_gguf(model, gguf, "f32", tokenizer=byte_tokenizer(384))
    rng = np.random.default_rng(11)
    a, b = rng.normal(0, 0.3, (384, 4)).astype(np.float32), rng.normal(0, 0.3, (64, 4)).astype(np.float32)
    norm = rng.uniform(0.5, 1.5, 64).astype(np.float32)

    def adapter(path, with_norm):
        with GGUFWriter(path) as w:
            for k, v in (("general.architecture", "llama"), ("general.type", "adapter"), ("adapter.type", "lora")):
                w.add(k, v)
            w.add("adapter.lora.alpha", np.float32(8.0))
            w.add_tensor("token_embd.weight.lora_a", a)
            w.add_tensor("token_embd.weight.lora_b", b)
            if with_norm:
                w.add_tensor("blk.1.attn_norm.weight", norm)
        return path
    ck = load_checkpoint(gguf)
    e = ck.tensors["token_embd.weight"].dequantize().astype(np.float64)
    ck.tensors["token_embd.weight"] = quantize(
        (e + 0.5 * (8.0 / 4) * (a.astype(np.float64) @ b.astype(np.float64).T)).astype(np.float32), "f32")
    want_embd = llamix.Model(ck, n_ctx=64).logits(IDS)
    plain = adapter(tmp_path / "embd.gguf", False)
    ours = llamix.load(gguf, lora=plain, lora_scale=0.5).logits(IDS)
    scale = np.abs(want_embd).max()
    assert np.abs(ours - want_embd).max() <= 1e-5 * scale
    assert np.abs(ours - llamix.load(gguf).logits(IDS)).max() > 0.01 * scale    # the update matters
    ck.tensors["blk.1.attn_norm.weight"] = norm
    with_norm = llamix.load(gguf, lora=adapter(tmp_path / "norm.gguf", True), lora_scale=0.5).logits(IDS)
    assert np.abs(with_norm - llamix.Model(ck, n_ctx=64).logits(IDS)).max() <= 1e-5 * scale
    llama_cpp_peer.require()
    theirs = llama_cpp_peer.run_model_in_child(gguf, n_ctx=64, seed=0, logits=[IDS], lora_path=str(plain),
                                               lora_scale=0.5)["logits"][0]
    assert np.abs(theirs - ours).max() <= 1e-3 * scale


def test_an_adapter_or_imatrix_given_as_the_model_is_named(tmp_path, capsys):
    """A LoRA adapter (GGUF or PEFT folder) or an importance matrix given where a model goes says
    what it is and where it is given (was: "required metadata key 'llama.embedding_length' is
    missing", "no config.json (not a Hugging Face model folder)")."""
    from llamix.formats.imatrix import ImportanceMatrix, write_imatrix
    gguf = tmp_path / "lora.gguf"
    with GGUFWriter(gguf) as w:
        for k, v in (("general.architecture", "llama"), ("general.type", "adapter"), ("adapter.type", "lora")):
            w.add(k, v)
        w.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((2, 64), np.float32))
        w.add_tensor("blk.0.attn_q.weight.lora_b", np.zeros((64, 2), np.float32))
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    im = tmp_path / "im.gguf"
    write_imatrix(ImportanceMatrix(sums={"blk.0.attn_q.weight": np.ones((1, 64))}, counts={"blk.0.attn_q.weight":
                                   np.ones(1)}, datasets=["x"], chunk_count=1, chunk_size=8), im)
    for path, said in ((gguf, "a LoRA adapter (general.type = 'adapter'), not a model; it is given with --lora FNAME"),
                       (peft, "a PEFT LoRA adapter folder (adapter_config.json), not a model; it is given with --lora"),
                       (im, "an importance matrix (general.type = 'imatrix'), not a model; it is given with quantize "
                            "--imatrix FILE")):
        for argv in (["info", str(path)], ["generate", "-m", str(path), "-p", "a"]):
            assert cli_main(argv) == 1
            err = capsys.readouterr().err
            assert err.startswith(f"llamix {argv[0]}: error: {path}: {said}") and err.count("\n") == 1, err
        with pytest.raises((llamix.LlamixError, OSError), match="not a model"):
            llamix.load(path)


def test_lora_scaled_takes_llama_cpps_fname_colon_scale():
    """llama.cpp's --lora-scaled FNAME:SCALE[,FNAME:SCALE...] (one argument) is read as the older
    FNAME SCALE (two), each adapter of a list its own flag (then refused: one adapter); the older
    form, a FNAME holding ':' followed by a SCALE, and anything after -- stay as they are; --lora
    takes llama.cpp's comma list."""
    from llamix.cli import _lora_scaled_pairs as rewrite
    from llamix.commands.common import UsageError, lora_of
    assert rewrite(["generate", "--lora-scaled", "a.gguf:0.5", "-p", "x"]) == \
        ["generate", "--lora-scaled", "a.gguf", "0.5", "-p", "x"]
    assert rewrite(["serve", "--lora-scaled=C:/x/a.gguf:2"]) == ["serve", "--lora-scaled", "C:/x/a.gguf", "2"]
    assert rewrite(["chat", "--lora-scaled", "a:1,b:-0.5"]) == ["chat", "--lora-scaled", "a", "1", "--lora-scaled",
                                                                "b", "-0.5"]
    for kept in (["generate", "--lora-scaled", "a", "0.5"], ["generate", "--lora-scaled", "x:1", "0.5"],
                 ["generate", "--lora-scaled", "a:b", "1"], ["generate", "--", "--lora-scaled", "a:1"]):
        assert rewrite(kept) == kept
    import argparse
    with pytest.raises(UsageError, match="--lora a --lora b: give one adapter"):
        lora_of(argparse.Namespace(lora=["a,b"], lora_scaled=None))


def test_extract_lora_adapter_with_changed_norms_loads(tmp_path):
    """The adapter `llamix extract-lora` writes of a fine-tune that changed its norms (saved whole
    in modules_to_save, as mergekit-extract-lora saves them) loads with lora= and gives the
    fine-tune's logits at full rank (it was refused: "saves model.layers.0.input_layernorm.weight
    with shape [16], which does not replace the model's blk.0.attn_norm.weight")."""
    base_t = tiny_tensors(0)
    base = write_model(tmp_path / "base", base_t)
    ft = write_model(tmp_path / "ft", perturbed(base_t, 1, scale=0.05))
    extract_lora(str(base), str(ft), tmp_path / "lora", rank=16)
    saved = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["modules_to_save"]
    assert "input_layernorm" in saved and "norm" in saved
    ids = [1, 5, 9, 3, 7, 2]
    ref = llamix.load(ft, n_ctx=16).logits(ids)
    got = llamix.load(base, lora=tmp_path / "lora", n_ctx=16).logits(ids)
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()
