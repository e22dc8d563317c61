"""The file types q4_1 q2_k q3_k_s q3_k_m q3_k_l q4_k_s q5_k_s iq4_nl iq4_xs and llama-quantize's
per-tensor flags: every tensor's type equals the one llama.cpp's own quantizer
(llama_model_quantize, in a child process) writes from the same f16 file."""
from __future__ import annotations

import numpy as np
import pytest

from llamix import Tokenizer, random_checkpoint
from llamix.export.gguf import export_gguf
from llamix.export.type_rules import TypeOverrides, parse_tensor_type
from llamix.errors import ArgumentError
from llamix.formats.gguf import GGUFReader

import llama_cpp_peer

FTYPES = ["q4_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q5_k_s", "iq4_nl", "iq4_xs", "q4_k_m"]


@pytest.fixture(scope="module")
def f16_models(assets, tmp_path_factory, s260_bin):
    """An f16 model of 16 layers with rows of 256 (GQA 4: the n_gqa rules) and stories260K in f16
    (rows of 64 and 172: every fallback)."""
    d = tmp_path_factory.mktemp("mixes")
    tok = Tokenizer.from_file(assets / "stories260K" / "tok512.model")
    deep = d / "deep_f16.gguf"
    export_gguf(random_checkpoint("tiny", tokenizer=tok, lazy=True, n_layers=16, n_heads=8, n_kv_heads=2, dim=256,
                                  hidden_dim=512), deep, "f16")
    s260 = d / "s260_f16.gguf"
    export_gguf(s260_bin, s260, "f16")
    return {"deep": deep, "s260": s260}


def _types(path) -> dict:
    return {n: t.type.name for n, t in GGUFReader(path).tensors.items()}


def _compare(src, tmp_path, ftype, llama_kw=None, ours_kw=None):
    theirs, ours = tmp_path / f"l_{ftype}.gguf", tmp_path / f"o_{ftype}.gguf"
    assert llama_cpp_peer.quantize_ex_in_child(src, theirs, ftype, **(llama_kw or {})) == 0
    export_gguf(src, ours, ftype, **(ours_kw or {}))
    a, b = _types(ours), _types(theirs)
    assert a == b, {n: (a.get(n), b.get(n)) for n in set(a) | set(b) if a.get(n) != b.get(n)}
    return a


@pytest.mark.peers
@pytest.mark.parametrize("model", ["deep", "s260"])
@pytest.mark.parametrize("ftype", FTYPES)
def test_same_types_as_llama_quantize(f16_models, tmp_path, model, ftype):
    llama_cpp_peer.require()
    types = _compare(f16_models[model], tmp_path, ftype)
    if model == "deep" and ftype == "q3_k_m":  # the mix really mixes
        assert {"Q3_K", "Q4_K", "Q5_K", "Q6_K"} <= set(types.values())


@pytest.mark.peers
def test_overrides_as_llama_quantize(f16_models, tmp_path):
    llama_cpp_peer.require()
    src = f16_models["deep"]
    tt = (("attn_v", "q8_0"), ("blk\\.1[0-9]\\.ffn_down", "iq4_nl"))
    _compare(src, tmp_path, "q3_k_m",
             dict(output_tensor_type="q5_k", token_embedding_type="q4_0", tensor_types=tt),
             dict(overrides=TypeOverrides(output_tensor_type="q5_k", token_embedding_type="q4_0", tensor_types=tt)))
    _compare(src, tmp_path, "iq4_xs", dict(leave_output_tensor=True), dict(overrides=TypeOverrides(leave_output_tensor=True)))
    _compare(src, tmp_path, "q4_k_s", dict(pure=True), dict(pure=True))


@pytest.mark.peers
@pytest.mark.parametrize("ftype, tt", [("q4_k_m", (("blk\\.1\\.", "q8_0"),)),
                                       ("q3_k_m", (("blk\\.0\\.attn_v", "q8_0"),)),
                                       ("q4_k_s", (("blk\\.[02]\\.ffn_down", "q5_0"), ("blk\\.1\\.attn_v", "q8_0")))])
def test_override_of_a_few_layers_shifts_the_mix_as_llama_quantize(f16_models, tmp_path, ftype, tt):
    """llama-quantize counts the attn_v and ffn_down tensors that take their type from the mix
    (qs.i_attention_wv, qs.i_ffn_down); one that a --tensor-type pattern matches is not counted, so
    the "more bits" layers after it move by one. The types were the layer numbers' before."""
    llama_cpp_peer.require()
    _compare(f16_models["deep"], tmp_path, ftype, dict(tensor_types=tt), dict(overrides=TypeOverrides(tensor_types=tt)))


@pytest.mark.peers
@pytest.mark.parametrize("ftype", ["iq4_xs", "q4_0"])
def test_imatrix_rules_as_llama_quantize(f16_models, tmp_path, ftype):
    """With an importance matrix llama-quantize keeps IQ4_XS in the first ffn_down layers and gives
    Q4_0 files Q4_1 there: the same types here."""
    llama_cpp_peer.require()
    src = f16_models["deep"]
    r = GGUFReader(src)
    imat = {n: np.ones(t.shape[-1], np.float32) for n, t in r.tensors.items() if n.startswith("blk.") and len(t.shape) == 2}
    _compare(src, tmp_path, ftype, dict(imatrix=imat), dict(imatrix=imat))


def test_parse_tensor_type():
    assert parse_tensor_type("ATTN_V=Q8_0") == ("attn_v", "q8_0")
    for bad in ("attn_v", "attn_v=q9_k", "=q8_0", "(=q8_0"):
        with pytest.raises(ArgumentError, match="--tensor-type"):
            parse_tensor_type(bad)
