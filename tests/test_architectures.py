"""The GGUF architectures beside llama (qwen2, qwen3, gemma3, phi3, and llama with Mistral's sliding
window) on small random-weight files that llamix writes itself: logits against an independent
float64 numpy oracle (tests/oracle_arch.py, reading the file with gguf-py), incremental decoding,
thread counts, writing back, the loader's refusals, and llama.cpp as a peer (marker ``peers``).

Every case has grouped-query attention (8 query heads, 4 KV heads); windows are shorter than the
24-token sequence (gemma3-whole-window's covers the context: its sliding layers still take the
local RoPE base); gemma3 has 7 layers so that layer 5 is global and the others slide.
"""
from __future__ import annotations

import numpy as np
import pytest

import llamix
from llamix.export import export_gguf
from llamix.formats.gguf import GGUFReader, GGUFWriter
from llamix.loaders import random_checkpoint

import oracle_arch
import llama_cpp_peer
from conftest import require_peer

# (architecture, tied embeddings, sliding window, layers, extra config)
CASES = {
    "llama": ("llama", False, 0, 4, {}),
    "mistral-window": ("llama", True, 6, 4, {}),
    "qwen2-tied": ("qwen2", True, 0, 4, {"rope_theta": 1e6}),
    "qwen2": ("qwen2", False, 0, 4, {}),
    "qwen3": ("qwen3", False, 0, 4, {"rms_eps": 1e-6}),
    "gemma3": ("gemma3", True, 5, 7, {"rope_theta": 1e6, "rms_eps": 1e-6}),
    "gemma3-untied": ("gemma3", False, 9, 7, {}),
    # no window (written as the context length): the sliding layers still rotate with the local base
    "gemma3-whole-window": ("gemma3", True, 0, 7, {"rope_theta": 1e6}),
    "phi3-window": ("phi3", False, 6, 4, {}),
    "phi3": ("phi3", True, 0, 4, {}),
}
IDS = [1] + np.random.default_rng(2).integers(3, 354, 23).tolist()


def _checkpoint(case: str, seed: int = 1):
    arch, tied, window, layers, extra = CASES[case]
    return random_checkpoint("tiny", seed=seed, lazy=True, architecture=arch, tie_embeddings=tied,
                             sliding_window=window, n_layers=layers, **extra)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("arch")
    out = {}
    for case in CASES:
        out[case] = d / f"{case}.gguf"
        export_gguf(_checkpoint(case), out[case], "f32")
    return out


def _rel(a, ref) -> float:
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_float64_oracle(files, case):
    """F32 weights: llamix computes in float32 throughout, the oracle in float64; 1e-4 of the
    largest logit leaves room for float32 sums over 768-wide rows and 7 layers, and catches any
    misplaced row (a wrong permutation or split is off by O(1))."""
    m = llamix.load(files[case], n_ctx=64)
    assert m.config.architecture == CASES[case][0]
    ref = oracle_arch.logits(oracle_arch.read(files[case]), IDS)
    err = _rel(m.logits(IDS), ref)
    assert err < 1e-4, err
    # prefill then one token at a time: the sliding window moves with the position
    m.reset()
    steps = [m.eval(IDS[:10])] + [m.eval([t]) for t in IDS[10:]]
    assert _rel(np.stack(steps), ref[9:]) < 1e-4


@pytest.mark.parametrize("case", ["gemma3", "phi3-window", "qwen3"])
def test_fp16_kv_cache_with_windows(files, case):
    """The fp16 KV cache reads the same window (keys and values rounded to 11 bits: 2e-3)."""
    ref = oracle_arch.logits(oracle_arch.read(files[case]), IDS)
    m = llamix.load(files[case], n_ctx=64, kv_cache="f16")
    assert _rel(m.logits(IDS), ref) < 2e-3
    m.reset()
    steps = [m.eval(IDS[:7])] + [m.eval([t]) for t in IDS[7:]]
    assert _rel(np.stack(steps), ref[6:]) < 2e-3


@pytest.mark.parametrize("case", ["gemma3", "qwen2", "phi3-window"])
def test_identical_across_thread_counts(files, case, threads):
    m = llamix.load(files[case], n_ctx=64, n_threads=threads)
    ours = m.logits(IDS)
    llamix.set_threads(1)
    one = llamix.load(files[case], n_ctx=64).logits(IDS)
    llamix.set_threads(threads)
    assert np.array_equal(ours, one)


@pytest.mark.parametrize("case", ["gemma3", "qwen2"])
def test_every_isa_close_to_oracle(files, case, isa):
    ref = oracle_arch.logits(oracle_arch.read(files[case]), IDS)
    assert _rel(llamix.load(files[case], n_ctx=64).logits(IDS), ref) < 1e-4


@pytest.mark.parametrize("case", ["gemma3", "qwen2-tied", "phi3", "qwen3"])
def test_quantized_file_close_to_its_float_model(tmp_path, files, case):
    """Q8_0 weights: the rows llamix permutes and splits are byte rows. Against the oracle on the
    same file (weights dequantized exactly) only llamix's Q8_0 activations differ (8 bits per
    value): measured 1.0-1.4% of the largest logit here, as for llama's own path on the same
    shapes (1.4%), 2.7% for gemma3 (7 layers, each output renormalised); a wrong row would be O(1)."""
    path = tmp_path / f"{case}-q8.gguf"
    export_gguf(_checkpoint(case), path, "q8_0", pure=True)
    ref = oracle_arch.logits(oracle_arch.read(path), IDS)
    q = llamix.load(path, n_ctx=64).logits(IDS)
    assert _rel(q, ref) < 5e-2, _rel(q, ref)


@pytest.mark.parametrize("case", list(CASES))
def test_written_back_tensor_for_tensor(tmp_path, files, case):
    """load -> export keeps every tensor's bytes: q/k rows go back to rotate-half order, phi3's
    pieces are fused again, and the metadata gives the same config."""
    src = llamix.load(files[case], n_ctx=32)
    out = tmp_path / "again.gguf"
    export_gguf(src, out, None)
    a, b = GGUFReader(files[case]), GGUFReader(out)
    assert sorted(a.tensors) == sorted(b.tensors)
    for name, t in a.tensors.items():
        assert np.array_equal(t.raw(), b.tensors[name].raw()), name
    again = llamix.load(out, n_ctx=32)
    assert again.config == src.config


def _rewrite(src, dst, drop=(), add=None, tensors_extra=None):
    """Copy a GGUF file, dropping metadata keys and setting others (value, type)."""
    r = GGUFReader(src)
    w = GGUFWriter(dst)
    for k, v in r.metadata.items():
        if k in drop or (add and k in add):
            continue
        w.add(k, v, r.value_types[k])
    for k, (v, vt) in (add or {}).items():
        w.add(k, v, vt)
    for name, t in r.tensors.items():
        w.add_tensor(name, np.array(t.raw()), t.type.name, t.shape)
    for name, arr in (tensors_extra or {}).items():
        w.add_tensor(name, arr, "F32")
    w.write()


def test_refusals_name_the_file_and_key(tmp_path, files):
    from llamix.formats.gguf import ValueType as V

    bad = tmp_path / "bad.gguf"
    _rewrite(files["qwen2"], bad, add={"general.architecture": ("falcon", V.STRING)})
    with pytest.raises(ValueError, match=r"bad\.gguf.*architecture 'falcon' is not supported"):
        llamix.load(bad)
    _rewrite(files["qwen2"], bad, add={"qwen2.block_count": ("four", V.STRING)})
    with pytest.raises(ValueError, match=r"bad\.gguf.*'qwen2\.block_count' must be an integer"):
        llamix.load(bad)
    _rewrite(files["gemma3"], bad, add={"gemma3.attention.layer_norm_rms_epsilon": (-1.0, V.FLOAT32)})
    with pytest.raises(ValueError, match=r"layer_norm_rms_epsilon.*must be positive"):
        llamix.load(bad)
    _rewrite(files["gemma3"], bad, drop={"gemma3.attention.sliding_window"})
    with pytest.raises(ValueError, match=r"'gemma3\.attention\.sliding_window' is missing"):
        llamix.load(bad)
    _rewrite(files["qwen2"], bad, add={"qwen2.attention.head_count_kv": (3, V.UINT32)})
    with pytest.raises(ValueError, match=r"not a multiple of n_kv_heads"):
        llamix.load(bad)
    _rewrite(files["qwen2"], bad, add={"qwen2.attention.head_count_kv": (16, V.UINT32)})
    with pytest.raises(ValueError, match=r"head_count_kv' = 16 is out of range"):
        llamix.load(bad)
    _rewrite(files["phi3"], bad, tensors_extra={"rope_factors_long.weight": np.ones(16, np.float32)})
    with pytest.raises(ValueError, match=r"LongRoPE"):
        llamix.load(bad)
    _rewrite(files["qwen3"], bad, tensors_extra={"blk.0.attn_output.bias": np.ones(256, np.float32)})
    with pytest.raises(ValueError, match=r"'blk\.0\.attn_output\.bias' is not part of a qwen3 model"):
        llamix.load(bad)


def test_export_refuses_what_the_architecture_cannot_say(tmp_path):
    ck = random_checkpoint("tiny", seed=1, lazy=True, qk_norm=True)  # a llama with q/k norms
    with pytest.raises(ValueError, match="a llama GGUF file cannot hold qk_norm = True"):
        export_gguf(ck, tmp_path / "x.gguf", "f32")
    assert not (tmp_path / "x.gguf").exists()


def test_tokenizer_false_skips_the_vocabulary(files):
    m = llamix.load(files["qwen2"], tokenizer=False, n_ctx=32)
    assert m.tokenizer is None
    assert m.generate_tokens([1, 5, 9], 4, temperature=0)  # token ids still run


@pytest.mark.peers
@pytest.mark.parametrize("case", ["llama", "qwen2-tied", "qwen2", "qwen3", "gemma3", "gemma3-untied",
                                  "gemma3-whole-window", "phi3"])
def test_same_greedy_tokens_as_llamacpp(files, case):
    """llama.cpp on the same file (F32 weights, float32 KV cache): the 24 prompt logits agree to
    1e-4 of the largest (gemma3: 2e-3, llama.cpp's GELU is an fp16 table lookup) and 32 greedy
    tokens are the same. (llama.cpp ignores a llama or phi3 file's sliding window, so those cases
    are the oracle's alone.)"""
    llama_cpp_peer.require()

    theirs = llama_cpp_peer.run_prompt_in_child(files[case], ids=IDS, n_greedy=32, all_logits=True, n_ctx=64)
    m = llamix.load(files[case], n_ctx=64)
    ours = m.logits(IDS)
    assert _rel(ours, theirs["logits"]) < (2e-3 if case.startswith("gemma3") else 1e-4)
    m.reset()
    logits, mine = m.eval(IDS), []
    for _ in range(32):
        mine.append(int(np.argmax(logits)))
        logits = m.eval([mine[-1]])
    assert mine == theirs["greedy"]


def _q5_0_as_q8_0(t):
    """A Q5_0 tensor's bytes rewritten as Q8_0 blocks of the same values (numpy, from the block
    layout: value = d * (q - 16), q's low nibbles in qs, fifth bits in qh)."""
    from llamix.quant import QuantizedTensor

    rows, k = t.shape
    raw = t.data.reshape(rows, k // 32, 22)
    qh = raw[..., 2:6].copy().view(np.uint32)[..., 0]
    qs = raw[..., 6:22]
    bits = (qh[..., None] >> np.arange(32, dtype=np.uint32)) & 1
    q = np.concatenate([qs & 0xF, qs >> 4], axis=-1).astype(np.int16) | (bits.astype(np.int16) << 4)
    out = np.concatenate([raw[..., 0:2], (q - 16).astype(np.int8).view(np.uint8)], axis=-1)
    return QuantizedTensor(np.ascontiguousarray(out.reshape(rows, -1)), "q8_0", (rows, k))


def test_q5_0_weights_run_as_the_q8_0_weights_of_the_same_values():
    """The forward pass multiplies Q5_0 matrices (most of the Q4_K_M mixes of small models) with
    the Q8_0 kernels: bit for bit the model whose Q5_0 blocks are rewritten as Q8_0."""
    ck = random_checkpoint("tiny", "q5_0", seed=3, architecture="qwen2")
    as_q8 = {n: _q5_0_as_q8_0(t) if getattr(t, "qtype", None) == "q5_0" else t for n, t in ck.tensors.items()}
    assert sum(getattr(t, "qtype", None) == "q5_0" for t in ck.tensors.values()) > 20
    from llamix.loaders import Checkpoint

    other = Checkpoint(ck.config, as_q8, None, None, "as q8_0")
    a = llamix.Model(ck, n_ctx=32).logits(IDS[:12])
    b = llamix.Model(other, n_ctx=32).logits(IDS[:12])
    assert np.array_equal(a, b)
    np.testing.assert_array_equal(ck.tensors["blk.0.attn_q.weight"].dequantize(),
                                  as_q8["blk.0.attn_q.weight"].dequantize())


@pytest.mark.peers
def test_mistral_folder_sliding_window_matches_transformers(tmp_path):
    """A Hugging Face Mistral folder whose sliding window (4) is shorter than the 12-token prompt:
    llamix applies it on every layer, as transformers does (float32 both: 1e-4 of the largest logit),
    in one batch and token by token."""
    torch = require_peer("torch")
    transformers = require_peer("transformers")
    torch.manual_seed(5)
    cfg = transformers.MistralConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                     rms_norm_eps=1e-5, initializer_range=0.2, sliding_window=4,
                                     attn_implementation="eager")
    model = transformers.MistralForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "mistral", safe_serialization=True)
    ids = [1, 5, 17, 42, 3, 88, 60, 61, 2, 9, 33, 71]
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].double().numpy()
        full = transformers.MistralForCausalLM(transformers.MistralConfig(**{**cfg.to_dict(), "sliding_window": None}))
        full.load_state_dict(model.state_dict())
        no_window = full.eval()(torch.tensor([ids])).logits[0].double().numpy()
    assert _rel(no_window, ref) > 1e-2  # the window changes the result
    m = llamix.load(tmp_path / "mistral", n_ctx=32)
    assert m.config.sliding_window == 4
    assert _rel(m.logits(ids), ref) < 1e-4
    m.reset()
    steps = np.stack([m.eval(ids[:3])] + [m.eval([t]) for t in ids[3:]])
    assert _rel(steps, ref[2:]) < 1e-4
