"""GGUF export (``llamix quantize``, ``Model.save``, ``llamix.export_gguf``).

Oracles: the source tensors themselves (round trips), the known-good greedy tokens of
stories260K (shared/assets/README.md), llama.cpp's own quantizer (``llama_model_quantize``
through llama-cpp-python: same tensor types and, for its reference quantizers, the same bytes)
and llama.cpp's inference on our files (llama.cpp always in a child process: llama_cpp_peer.py).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import llamix
from llamix.formats.gguf import GGUFReader
from llamix.export.gguf import export_gguf, fallback_type, tensor_type, use_more_bits
from llamix import Tokenizer, random_checkpoint

import llama_cpp_peer
from helpers import STORIES_GREEDY_60 as KNOWN_IDS
from helpers import STORIES_PROMPT as PROMPT
from helpers import rel_rms


@pytest.fixture(scope="module")
def exported(s260_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    return {t: (export_gguf(s260_bin, d / f"s260_{t}.gguf", t), d / f"s260_{t}.gguf")
            for t in ["f32", "f16", "q8_0", "q4_0", "q4_0_mse", "q4_k_m", "q5_k_m"]}


@pytest.fixture(scope="module")
def tiny_f32(assets, tmp_path_factory):
    """A random model whose rows are multiples of 256, so K-quant types are really used."""
    tok = Tokenizer.from_file(assets / "stories260K" / "tok512.model")
    path = tmp_path_factory.mktemp("tiny") / "tiny_f32.gguf"
    export_gguf(random_checkpoint("tiny", tokenizer=tok, lazy=True, n_layers=2, n_heads=4, n_kv_heads=2), path, "f32")
    return path


def test_round_trip_identical_tensors(s260_bin, exported, assets):
    """llama2.c -> GGUF f32 -> llamix: every tensor identical; HF folder -> GGUF: the same (q/k rows
    are permuted back to GGUF order by the loader)."""
    src = llamix.load(s260_bin)
    back = llamix.load(exported["f32"][1])
    hf = llamix.load(assets / "stories260K_hf")
    for name, t in src.tensors.items():
        a = t if isinstance(t, np.ndarray) else t.dequantize()
        b = back.tensors[name]
        b = b if isinstance(b, np.ndarray) else b.dequantize()
        np.testing.assert_array_equal(a, b, err_msg=name)
        c = hf.tensors[name]
        np.testing.assert_array_equal(a, c if isinstance(c, np.ndarray) else c.dequantize(), err_msg=name)


def test_round_trip_quantized_bytes(s260_bin, exported, tmp_path):
    """A q8_0 export holds exactly llamix.quantize's bytes; re-exporting a GGUF to its own type
    copies bytes unchanged."""
    src = llamix.load(s260_bin)
    r = GGUFReader(exported["q8_0"][1])
    for name, t in r.tensors.items():
        if t.type.name == "Q8_0" and name in src.tensors:
            w = src.tensors[name].dequantize()
            np.testing.assert_array_equal(t.raw(), llamix.quantize(w, "q8_0").data, err_msg=name)
    again = tmp_path / "again.gguf"
    export_gguf(exported["q4_k_m"][1], again, "q4_k_m")
    a, b = GGUFReader(exported["q4_k_m"][1]), GGUFReader(again)
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name].raw(), b.tensors[name].raw())


def test_greedy_text_f32_and_q8_0(s260_bin, exported):
    """f32 GGUF gives the known-good 60 tokens; q8_0 GGUF equals the original quantized at load."""
    f32 = llamix.load(exported["f32"][1])
    assert f32.generate_tokens(PROMPT, max_tokens=60, temperature=0) == KNOWN_IDS
    q8 = llamix.load(exported["q8_0"][1]).generate_tokens(PROMPT, max_tokens=60, temperature=0)
    assert q8 == llamix.load(s260_bin, quant="q8_0").generate_tokens(PROMPT, max_tokens=60, temperature=0)
    assert q8[:20] == KNOWN_IDS[:20]


def test_model_save(s260_bin, tmp_path):
    m = llamix.load(s260_bin)
    rep = export_gguf(m, tmp_path / "m.gguf", qtype="q4_0")
    assert rep.types["blk.0.attn_q.weight"] == "Q4_0"
    assert rep.types["blk.0.ffn_down.weight"] == "F16"      # 172-wide rows
    assert rep.types["token_embd.weight"] == "Q8_0"         # tied head: Q6_K -> Q8_0 (64-wide rows)
    back = llamix.load(tmp_path / "m.gguf")
    assert back.tokenize("Once upon a time") == m.tokenize("Once upon a time")
    assert os.path.getsize(tmp_path / "m.gguf") > rep.nbytes


def test_type_rules():
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert fallback_type("q4_k", 64) == "q5_0" and fallback_type("q5_k", 64) == "q5_1"
    assert fallback_type("q6_k", 64) == "q8_0" and fallback_type("q4_k", 172) == "f16"
    assert fallback_type("q4_0", 172) == "f16" and fallback_type("q4_k", 512) == "q4_k"
    t = lambda n, s, ft, tied=False, pure=False: tensor_type(n, s, ft, 32, tied, pure)  # noqa: E731
    assert t("output.weight", (32000, 4096), "q4_0") == "q6_k"
    assert t("output.weight", (32000, 4096), "q4_0", pure=True) == "q4_0"
    assert t("output.weight", (32000, 4096), "q8_0") == "q8_0"
    assert t("token_embd.weight", (32000, 4096), "q4_k_m") == "q4_k"
    assert t("token_embd.weight", (32000, 4096), "q4_k_m", tied=True) == "q6_k"
    assert t("blk.3.attn_v.weight", (1024, 4096), "q4_k_m") == "q6_k"
    assert t("blk.4.attn_v.weight", (1024, 4096), "q4_k_m") == "q4_k"
    assert t("blk.4.ffn_norm.weight", (4096,), "q4_k_m") == "f32"
    with pytest.raises(ValueError, match="unknown type"):
        t("output.weight", (8, 8), "q7_k")


def test_atomic_write_and_errors(s260_bin, tmp_path, monkeypatch):
    import llamix.export.gguf as ex

    out = tmp_path / "never.gguf"

    def boom(t, target, importance=None):
        raise RuntimeError("conversion failed")
    monkeypatch.setattr(ex, "convert_tensor", boom)
    with pytest.raises(RuntimeError):
        export_gguf(s260_bin, out, "q4_0")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary left behind
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown type"):
        export_gguf(s260_bin, out, "q7_k")
    with pytest.raises(FileNotFoundError):
        export_gguf(tmp_path / "missing.bin", out, "q4_0")


def test_cli_quantize(s260_bin, tmp_path, capsys):
    from llamix.cli import main

    out = tmp_path / "c.gguf"
    assert main(["quantize", str(s260_bin), str(out), "--type", "q4_0_mse"]) == 0
    assert "bits/weight" in capsys.readouterr().out
    r = GGUFReader(out)
    assert r.tensors["blk.0.attn_q.weight"].type.name == "Q4_0"


def test_kquant_mix_on_a_256_multiple_model(tiny_f32, tmp_path):
    """Q4_K_M on rows that are multiples of 256: Q4_K with Q6_K for attn_v/ffn_down of the layers
    use_more_bits picks and for the head; quantization error below Q4_0's at similar size."""
    rep = export_gguf(tiny_f32, tmp_path / "t.gguf", "q4_k_m")
    assert rep.types["blk.0.attn_q.weight"] == "Q4_K" and rep.types["output.weight"] == "Q6_K"
    assert rep.types["blk.1.ffn_down.weight"] == "Q6_K"  # layer 1 of 2 >= 7 * 2 // 8
    src, q = llamix.load(tiny_f32), llamix.load(tmp_path / "t.gguf")
    q40 = llamix.load(tiny_f32, quant="q4_0")
    name = "blk.0.ffn_up.weight"
    w = src.tensors[name].dequantize()
    err = lambda m: np.sqrt(np.mean((m.tensors[name].dequantize() - w) ** 2) / np.mean(w ** 2))  # noqa: E731
    assert err(q) < 0.9 * err(q40)


# --- llama.cpp peers -------------------------------------------------------------------------------
def _llama_quantize(src, dst, ftype, pure=False):
    """llama.cpp's quantizer (llama_model_quantize), in a child process; ftype e.g. "q4_k_m"."""
    assert llama_cpp_peer.quantize_in_child(src, dst, ftype, pure) == 0


@pytest.mark.peers
@pytest.mark.parametrize("ftype", ["q4_0", "q8_0", "q4_k_m", "q5_k_m"])
def test_same_types_and_bytes_as_llama_quantize(exported, tmp_path, ftype):
    """llama.cpp's quantization of our f32 GGUF and ours: the same tensor types, and byte-identical
    tensors (on stories260K every K type falls back to Q5_0/Q5_1/Q8_0/F16, whose reference
    quantizers we reproduce)."""
    llama_cpp_peer.require()
    theirs = tmp_path / f"lcpp_{ftype}.gguf"
    _llama_quantize(exported["f32"][1], theirs, ftype)
    a, b = GGUFReader(exported[ftype][1]), GGUFReader(theirs)
    assert {n: t.type.name for n, t in a.tensors.items()} == {n: t.type.name for n, t in b.tensors.items()}
    for name in b.tensors:
        np.testing.assert_array_equal(a.tensors[name].raw(), b.tensors[name].raw(), err_msg=name)


@pytest.mark.peers
def test_llama_quantize_pure_q4_0_bytes(exported, tmp_path):
    llama_cpp_peer.require()
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    export_gguf(exported["f32"][1], ours, "q4_0", pure=True)
    _llama_quantize(exported["f32"][1], theirs, "q4_0", pure=True)
    a, b = GGUFReader(ours), GGUFReader(theirs)
    for name in b.tensors:
        assert a.tensors[name].type == b.tensors[name].type
        np.testing.assert_array_equal(a.tensors[name].raw(), b.tensors[name].raw(), err_msg=name)


@pytest.mark.peers
@pytest.mark.parametrize("ftype", ["q8_0", "q4_0", "q4_0_mse", "f32"])
def test_llama_cpp_runs_our_files(exported, ftype):
    """llama.cpp loads our GGUF with no other file: same tokenizer, logits within its activation /
    KV-cache rounding (relative RMS 1e-2 for 4/8-bit, 1e-3 for f32), and the same greedy tokens:
    along llama.cpp's 40 greedy tokens, llamix's argmax agrees at every step except where llamix's
    own top two logits are closer than 0.25 (the largest logit difference measured between the
    two on these files), i.e. a genuine near-tie that rounding may break either way."""
    llama_cpp_peer.require()
    path = exported[ftype][1]
    m = llamix.load(path)
    text = "Once upon a time, there was a little dog."
    lcpp = llama_cpp_peer.run_model_in_child(path, n_ctx=128, tokenize=[(text, True)], logits=[m.tokenize(text)],
                                             greedy_runs=[(PROMPT, 40, False)])
    theirs = lcpp["logits"][0]
    assert lcpp["tokenize"][0] == m.tokenize(text)
    ours = m.logits(m.tokenize(text))
    rel = rel_rms(theirs, ours)
    assert rel < (1e-3 if ftype == "f32" else 1e-2)
    theirs_ids = lcpp["greedy"][0]
    lg = m.logits(PROMPT + theirs_ids[:-1])[len(PROMPT) - 1:]
    for i, tok in enumerate(theirs_ids):
        best = int(lg[i].argmax())
        assert best == tok or lg[i, best] - lg[i, tok] < 0.25, (i, best, tok)
    if ftype in ("f32", "q8_0"):
        assert theirs_ids == m.generate_tokens(PROMPT, max_tokens=40, temperature=0)


@pytest.mark.peers
def test_kquant_quantizers_at_least_as_accurate_as_llama_cpp(tiny_f32, tmp_path):
    """On the same f32 tensors, our Q4_K / Q5_K / Q6_K blocks have no larger RMS error than
    llama.cpp's own quantizer's (measured: 0.2 %, 1 %, 7 % lower)."""
    llama_cpp_peer.require()
    from gguf import GGMLQuantizationType, quants

    src = GGUFReader(tiny_f32)
    for ftype, name in [("Q4_K_M", "blk.0.ffn_up.weight"), ("Q5_K_M", "blk.0.attn_q.weight"), ("Q6_K", "output.weight")]:
        theirs, ours = tmp_path / f"l_{ftype}.gguf", tmp_path / f"o_{ftype}.gguf"
        _llama_quantize(tiny_f32, theirs, ftype)
        export_gguf(tiny_f32, ours, ftype.lower())
        w = src.tensors[name].array().astype(np.float64)
        errs = []
        for path in (theirs, ours):
            t = GGUFReader(path).tensors[name]
            d = quants.dequantize(t.raw(), GGMLQuantizationType[t.type.name]).reshape(w.shape)
            errs.append(np.sqrt(np.mean((d - w) ** 2) / np.mean(w ** 2)))
        assert GGUFReader(ours).tensors[name].type == GGUFReader(theirs).tensors[name].type
        assert errs[1] <= errs[0], (ftype, errs)


@pytest.mark.peers
def test_llama_cpp_q4_k_m_file_runs_in_llamix(tiny_f32, tmp_path):
    """A Q4_K_M file made by llama.cpp itself (K-quant blocks from llama.cpp's quantizer) runs in
    llamix with logits close to llama.cpp's; and llamix's own Q4_K_M runs in llama.cpp."""
    llama_cpp_peer.require()
    theirs = tmp_path / "lcpp_q4_k_m.gguf"
    _llama_quantize(tiny_f32, theirs, "q4_k_m")
    ours = tmp_path / "ours_q4_k_m.gguf"
    export_gguf(tiny_f32, ours, "q4_k_m")
    ids = [1] + list(range(10, 60))
    for path in (theirs, ours):
        assert GGUFReader(path).tensors["blk.0.attn_q.weight"].type.name == "Q4_K"
        ref = llama_cpp_peer.run_model_in_child(path, n_ctx=128, logits=[ids])["logits"][0]
        got = llamix.load(path).logits(ids)
        # random weights give small logits; both sides quantize activations (Q8_K) differently
        assert rel_rms(got, ref) < 0.03
