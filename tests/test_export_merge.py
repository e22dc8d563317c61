"""``llamix merge CONFIG.yml OUT.gguf --type T``: merge and quantize in one streaming pass.

Oracle: the same merge written as a Hugging Face folder by the merge executor, then exported
with ``llamix quantize`` (two passes): the one-pass GGUF must hold exactly the same bytes.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import llamix
from llamix.formats.gguf import GGUFReader
from llamix.export import merge_to_gguf
from llamix.formats.names import gguf_name


def _config(assets, tmp_path, method="linear"):
    hf = assets / "stories260K_hf"
    twin = tmp_path / "twin"  # a second input equal to the first (one model listed twice is refused)
    if not twin.exists():
        shutil.copytree(hf, twin)
    if method == "linear":
        text = (f"merge_method: linear\nmodels:\n  - model: {hf}\n    parameters: {{weight: 0.3}}\n"
                f"  - model: {twin}\n    parameters: {{weight: 0.7}}\ndtype: float32\n")
    else:
        text = (f"merge_method: slerp\nbase_model: {hf}\nmodels:\n  - model: {hf}\n  - model: {twin}\n"
                f"parameters:\n  t: 0.4\ndtype: float32\n")
    p = tmp_path / "merge.yml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("qtype", ["q4_0", "q8_0", "f32"])
def test_one_pass_equals_merge_then_quantize(assets, tmp_path, qtype):
    cfg = _config(assets, tmp_path)
    one = tmp_path / "one.gguf"
    rep = merge_to_gguf(cfg, one, qtype)
    folder = llamix.merge(cfg, tmp_path / "folder")
    two = tmp_path / "two.gguf"
    llamix.export_gguf(folder, two, qtype)
    a, b = GGUFReader(one), GGUFReader(two)
    assert set(a.tensors) == set(b.tensors)
    for name in b.tensors:
        assert a.tensors[name].type == b.tensors[name].type, name
        np.testing.assert_array_equal(a.tensors[name].raw(), b.tensors[name].raw(), err_msg=name)
    assert rep.types["blk.0.attn_q.weight"] == qtype.upper()
    m = llamix.load(one)
    assert m.generate("Once upon a time", max_tokens=8, temperature=0)  # loads and runs


def test_merge_cli_gguf(assets, tmp_path, capsys):
    from llamix.cli import main

    out = tmp_path / "m.gguf"
    assert main(["merge", str(_config(assets, tmp_path)), str(out), "--type", "q8_0", "--quiet"]) == 0
    assert "bits/weight" in capsys.readouterr().out
    # a linear merge of a model with itself (weights 0.3 + 0.7) is that model, up to rounding
    ref = llamix.load(assets / "stories260K" / "stories260K.bin", quant="q8_0")
    got = llamix.load(out)
    ids = ref.tokenize("Once upon a time")
    np.testing.assert_allclose(got.logits(ids), ref.logits(ids), atol=0.05)


def test_names_and_errors(assets, tmp_path):
    assert gguf_name("model.layers.3.self_attn.k_proj.weight") == "blk.3.attn_k.weight"
    assert gguf_name("lm_head.weight") == "output.weight"
    with pytest.raises(ValueError, match="no GGUF name"):
        gguf_name("model.vision_tower.weight")
    with pytest.raises(ValueError, match="unknown type"):
        merge_to_gguf(_config(assets, tmp_path), tmp_path / "x.gguf", "q7_k")
    assert not (tmp_path / "x.gguf").exists()
