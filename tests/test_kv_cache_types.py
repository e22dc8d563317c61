"""KV cache types at the model level: keys and values stored as f32, f16, q8_0 or q4_0 apart
(kv_cache_k / kv_cache_v, -ctk / -ctv), their sizes, errors, and `llamix bench -d`. The attention
over each type is tested against float64 in test_attention_tiled.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

import llamix
from llamix import _C
from llamix.cli import main
from llamix.errors import ArgumentError
from llamix.loaders import SHAPES, random_checkpoint
from llamix.model import Model

from helpers import rel_rms

# bytes per element: f32 4, f16 2, q8_0 34 / 32, q4_0 18 / 32
BYTES = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@pytest.fixture(scope="module")
def tiny():
    return random_checkpoint("tiny", "q8_0", seed=3)  # head_dim 32: every cache type applies


def test_types_apart_sizes_and_logits(tiny):
    ids = np.random.default_rng(0).integers(3, 354, 300).tolist()
    base = Model(tiny, n_ctx=512).logits(ids)
    c = tiny.config
    err = {}
    for k, v in [("f16", "f16"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("q8_0", "f16"), ("f32", "q4_0")]:
        m = Model(tiny, n_ctx=512, kv_cache_k=k, kv_cache_v=v)
        assert (m.kv_cache_k, m.kv_cache_v) == (k, v)
        assert m.kv_cache_nbytes == c.n_layers * 512 * c.kv_dim * (BYTES[k] + BYTES[v])
        err[k, v] = rel_rms(m.logits(ids), base)
    # (random weights amplify any rounding through the layers; the order is what must hold)
    assert err["f16", "f16"] < 0.03 and err["q8_0", "q8_0"] < 0.04 and err["q8_0", "f16"] < 0.04
    assert 0.04 < err["q4_0", "q4_0"] < 0.3 and 0.04 < err["f32", "q4_0"] < 0.3


def test_kv_cache_sets_both_and_apart_overrides(tiny):
    m = Model(tiny, n_ctx=64, kv_cache="q8_0", kv_cache_v="f16")
    assert (m.kv_cache_k, m.kv_cache_v) == ("q8_0", "f16")


def test_tinyllama_q8_0_cache_at_32k_under_0_4_gb():
    s = SHAPES["1b"]
    kv_dim = s["dim"] // s["n_heads"] * s["n_kv_heads"]
    cache = _C.KVCache(s["n_layers"], 32768, kv_dim, "q8_0", n_kv_heads=s["n_kv_heads"])
    assert cache.nbytes == s["n_layers"] * 32768 * kv_dim * 2 * 34 // 32
    assert cache.nbytes < 0.4e9


def test_bad_types_name_the_argument(tiny, s260_bin):
    with pytest.raises(ArgumentError, match="kv_cache_v: KV cache type"):
        Model(tiny, n_ctx=64, kv_cache_v="q5_0")
    with pytest.raises(ArgumentError, match=r"kv_cache_k='q8_0' needs head_dim to be a multiple of 32") as e:
        llamix.load(s260_bin, kv_cache_k="q8_0")  # head_dim 8
    assert e.value.cli.startswith("-ctk/--cache-type-k q8_0 needs head_dim")   # the command line's words
    with pytest.raises(ValueError, match="KV cache type"):
        _C.KVCache(2, 8, 64, "q6_k")


def test_cli_flags_and_bench_depth(capsys):
    assert main(["bench", "--shape", "tiny", "-p", "16", "-n", "4", "-r", "1", "-t", "1", "-d", "40",
                 "-ctk", "q8_0", "-ctv", "f16", "--json"]) == 0
    for out in json.loads(capsys.readouterr().out):
        assert (out["n_depth"], out["type_k"], out["type_v"]) == (40, "q8_0", "f16")
        assert out["avg_ts"] > 0
    assert main(["bench", "--shape", "tiny", "-p", "8", "-n", "0", "-r", "1", "-d", "-1"]) == 1
    assert "-d/--n-depth must be >= 0" in capsys.readouterr().err
    assert main(["bench", "--shape", "tiny", "-p", "0", "-n", "0"]) == 1
    assert "nothing to measure" in capsys.readouterr().err
    assert main(["bench", "--shape", "tiny", "-p", "4", "-n", "0", "-r", "1", "-d", "2046"]) == 0  # context 2048
    assert "beyond the model's training context (2048)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["bench", "--shape", "tiny", "-p", "8", "-n", "0", "-r", "1", "-ctk", "q9"])
    assert e.value.code == 2 and "-ctk/--cache-type-k" in capsys.readouterr().err


def test_rewind_keeps_a_prefix(tiny):
    ids = np.random.default_rng(1).integers(3, 354, 40).tolist()
    m = Model(tiny, n_ctx=64)
    full = m.logits(ids)
    m.rewind(25)
    assert m.n_past == 25
    np.testing.assert_array_equal(m.eval(ids[25:], all_logits=True), full[25:])
    with pytest.raises(ArgumentError, match="n_past"):
        m.rewind(41)
