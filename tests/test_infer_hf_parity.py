"""Parity with Hugging Face transformers (a peer): random small LlamaConfig models saved with
save_pretrained, float32 logits over a multi-token prompt and during cached decoding.

Tolerance 1e-4 relative to the largest logit: both sides compute in float32 with different
summation orders (k <= 128 terms per dot product, ~1e-6 relative each) through 2 layers."""
from __future__ import annotations

import json

import numpy as np
import pytest

import llamix

from conftest import require_peer

pytestmark = pytest.mark.peers

CASES = {
    "mha-untied": dict(num_key_value_heads=4, tie_word_embeddings=False),
    "gqa-tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "mqa-llama3": dict(num_key_value_heads=1, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "linear-scaling-headdim": dict(num_key_value_heads=2, head_dim=32, rope_scaling={"rope_type": "linear", "factor": 2.0}),
}


def _make(tmp_path, name, **kw):
    torch = require_peer("torch")
    transformers = require_peer("transformers")
    torch.manual_seed(hash(name) % 1000)
    rope_scaling = kw.pop("rope_scaling", None)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-5,
                                   initializer_range=0.2, **kw)
    if rope_scaling is not None:  # 4.x and 5.x spell this differently; set it the version's way
        if hasattr(cfg, "rope_parameters") and cfg.rope_parameters is not None:
            cfg.rope_parameters = {**cfg.rope_parameters, **rope_scaling}
        else:
            cfg.rope_scaling = rope_scaling
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
    folder = tmp_path / name
    model.save_pretrained(folder, safe_serialization=True)
    return model, folder


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(tmp_path, case):
    torch = require_peer("torch")
    hf, folder = _make(tmp_path, case, **CASES[case])
    ids = [1, 5, 17, 42, 3, 88, 60, 61, 2, 9, 33, 71]
    with torch.no_grad():
        out = hf(torch.tensor([ids]), use_cache=True)
    ref = out.logits[0].numpy()
    m = llamix.load(folder)
    ours = m.logits(ids)
    tol = 1e-4 * np.abs(ref).max()
    assert np.abs(ours - ref).max() <= tol
    # cached decoding: one token at a time against HF's past_key_values
    past = out.past_key_values
    for t in [7, 50, 96, 0, 12]:
        with torch.no_grad():
            out = hf(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        step_ref = out.logits[0, -1].numpy()
        assert np.abs(m.eval([t]) - step_ref).max() <= 1e-4 * np.abs(step_ref).max()


def test_transformers_4x_config_spelling(tmp_path):
    """A config.json as transformers 4.x writes it (rope_theta, rope_scaling, torch_dtype) loads
    to the same model as the 5.x spelling (rope_parameters, dtype)."""
    torch = require_peer("torch")
    hf, folder = _make(tmp_path, "v4", num_key_value_heads=2, rope_scaling=CASES["mqa-llama3"]["rope_scaling"])
    cfg = json.loads((folder / "config.json").read_text())
    params = cfg.pop("rope_parameters", None) or {"rope_theta": cfg.get("rope_theta", 10000.0), **(cfg.get("rope_scaling") or {})}
    v4 = {k: v for k, v in cfg.items() if k not in ("dtype", "rope_scaling", "rope_theta")}
    v4.update(torch_dtype="float32", rope_theta=params.pop("rope_theta"),
              rope_scaling={"type" if "rope_type" not in params else "rope_type": params.pop("rope_type"), **params})
    (folder / "config.json").write_text(json.dumps(v4))
    ids = [1, 2, 3, 4, 5, 6, 7, 8]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    m = llamix.load(folder)
    assert m.config.rope_scaling["rope_type"] == "llama3"
    assert np.abs(m.logits(ids) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_half_precision_checkpoints(tmp_path):
    torch = require_peer("torch")
    hf, folder = _make(tmp_path, "half", num_key_value_heads=2)
    ids = [1, 9, 8, 7, 6, 5]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    for dtype, tol in ((torch.float16, 5e-3), (torch.bfloat16, 4e-2)):  # weight rounding 2^-11 / 2^-8
        hf.to(dtype).save_pretrained(tmp_path / str(dtype), safe_serialization=True)
        hf.to(torch.float32)
        m = llamix.load(tmp_path / str(dtype))
        assert m.tensors["blk.0.attn_q.weight"].qtype == {torch.float16: "f16", torch.bfloat16: "bf16"}[dtype]
        assert np.abs(m.logits(ids) - ref).max() <= tol * np.abs(ref).max() * 4


def test_invalid_configs_are_refused(tmp_path):
    _, folder = _make(tmp_path, "bad", num_key_value_heads=4)
    cfg = json.loads((folder / "config.json").read_text())
    for change, message in (({"model_type": "gpt2"}, "model_type 'gpt2'"),
                            ({"num_key_value_heads": 3}, "not a multiple"),
                            ({"hidden_act": "gelu"}, "hidden_act"),
                            ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}, "rope_parameters": None}, "yarn")):
        (folder / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(ValueError, match=message):
            llamix.load(folder)


def test_sharded_checkpoint(tmp_path):
    """Shards listed in model.safetensors.index.json load to the same model."""
    torch = require_peer("torch")
    hf, folder = _make(tmp_path, "shard", num_key_value_heads=2)
    hf.save_pretrained(tmp_path / "sharded", safe_serialization=True, max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    ids = [1, 4, 9, 16, 25]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0].numpy()
    m = llamix.load(tmp_path / "sharded")
    assert np.abs(m.logits(ids) - ref).max() <= 1e-4 * np.abs(ref).max()
