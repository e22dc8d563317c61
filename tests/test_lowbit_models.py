"""Models whose tensors are Q4_1, Q2_K, Q3_K, IQ4_NL or IQ4_XS load and run (issue #15).

Oracles: files written by gguf's own writer (Q4_1 blocks from gguf.quants' quantizer; for the
types gguf.quants cannot write, blocks built from random bytes with scales that give weights of
a model's size) against the float64 numpy forward pass of tests/oracle_arch.py over the weights
as gguf.quants dequantizes them; and files written by llama.cpp's quantizer (llama_model_quantize,
in a child process) from an F16 model, run by llama.cpp and by llamix: the same greedy tokens and
the same perplexity within 1 %.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import llamix
from llamix.export import export_gguf
from llamix.loaders import random_checkpoint

import llama_cpp_peer
import oracle_arch
from conftest import require_peer
from test_lowbit_quants import TYPES, gguf_type, random_blocks

IDS = [1] + np.random.default_rng(5).integers(3, 354, 31).tolist()
# fp16 super-block scales that make weights of about N(0, 0.02) size from random quants
SCALE = {"iq4_nl": 2e-4, "q2_k": 1e-3, "q3_k": 2e-4, "iq4_xs": 1e-5}


def _rel(a, ref) -> float:
    return float(np.abs(np.asarray(a, np.float64) - ref).max() / np.abs(ref).max())


@pytest.fixture(scope="module")
def f32_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lowbit") / "tiny-f32.gguf"
    export_gguf(random_checkpoint("tiny", seed=3, n_layers=2), path, "f32")
    return path


def _blocks_for(qtype: str, w: np.ndarray, rng) -> np.ndarray:
    """(rows, row bytes) of ``qtype`` standing for ``w``: gguf.quants' Q4_1 of it, else random
    blocks whose fp16 scales are set to SCALE (a weight of the model's size, not w's values)."""
    from gguf import quants

    if qtype == "q4_1":
        return quants.quantize(w, gguf_type("q4_1"))
    bs, nbytes, offsets = TYPES[qtype]
    data = random_blocks(qtype, w.shape[0], w.shape[1] // bs, rng).reshape(w.shape[0], -1, nbytes)
    for off in offsets:
        scale = (SCALE[qtype] * rng.uniform(0.5, 1.5, data.shape[:2])).astype(np.float16)
        data[..., off:off + 2] = scale.view(np.uint8).reshape(*data.shape[:2], 2)
    return data.reshape(w.shape[0], -1)


def write_with_gguf(src, dst, qtype: str, seed: int = 0):
    """``src`` (an F32 llama GGUF) rewritten by gguf.GGUFWriter with every matrix in ``qtype``."""
    gguf = require_peer("gguf", "test")
    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), f.types[0], sub_type=sub)
    rng = np.random.default_rng(seed)
    for t in r.tensors:
        data = np.asarray(t.data)
        if data.ndim == 2:
            w.add_tensor(t.name, _blocks_for(qtype, data.astype(np.float32), rng), raw_dtype=gguf_type(qtype))
        else:
            w.add_tensor(t.name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.mark.parametrize("qtype", list(TYPES))
def test_gguf_written_file_matches_float64_oracle(tmp_path, f32_file, qtype):
    """Every matrix (embeddings and output head included) in ``qtype``: llamix's logits against
    the float64 forward pass over gguf.quants' dequantized weights. Only llamix's 8-bit
    activations differ (weights are the same numbers): within 5 % of the largest logit as for
    Q8_0 files (tests/test_architectures.py); a wrong nibble order, scale or sign is O(1)."""
    path = write_with_gguf(f32_file, tmp_path / f"{qtype}.gguf", qtype)
    m = llamix.load(path, n_ctx=64)
    assert {t.qtype for t in m.checkpoint.tensors.values() if hasattr(t, "qtype")} == {qtype}
    ref = oracle_arch.logits(oracle_arch.read(path), IDS)
    ours = m.logits(IDS)
    assert _rel(ours, ref) < 5e-2, _rel(ours, ref)
    # decoding token by token reads the same weights through the one-token (GEMV) path
    m.reset()
    steps = [m.eval(IDS[:5])] + [m.eval([t]) for t in IDS[5:]]
    assert _rel(np.stack(steps), ref[4:]) < 5e-2


def test_info_lists_the_types(tmp_path, f32_file, capsys):
    from llamix.cli import main

    path = write_with_gguf(f32_file, tmp_path / "q3.gguf", "q3_k")
    assert main(["info", str(path)]) == 0
    assert "q3_k: " in capsys.readouterr().out


# llama.cpp's quantizer types (LLAMA_FTYPE_MOSTLY_*) whose files hold these tensor types
FTYPES = ["Q4_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "IQ4_NL", "IQ4_XS"]


@pytest.fixture(scope="module")
def llama_quantized(tmp_path_factory):
    """The tiny random model (rows of 256) as F16, then each FTYPE written by llama.cpp."""
    llama_cpp_peer.require()
    d = tmp_path_factory.mktemp("lcpp-quant")
    src = d / "tiny-f16.gguf"
    export_gguf(random_checkpoint("tiny", seed=4), src, "f16")
    out = {}
    for ftype in FTYPES:
        dst = d / f"tiny-{ftype}.gguf"
        assert llama_cpp_peer.quantize_in_child(src, dst, ftype) == 0, ftype
        out[ftype] = dst
    return out


def _nll(logits: np.ndarray, win) -> list[float]:
    z = logits.astype(np.float64)
    lp = z - z.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    return [-lp[j, win[j + 1]] for j in range(len(win) - 1)]


@pytest.mark.peers
@pytest.mark.parametrize("ftype", FTYPES)
def test_llama_quantize_files_match_llama_cpp(llama_quantized, ftype):
    """A file llama.cpp's quantizer wrote: llamix reads every tensor type in it, the 24 greedy
    tokens after a prompt equal llama.cpp's, and the perplexity over windows of random tokens
    (scored as llama-perplexity does: the second half of each window) is within 1 %."""
    path = llama_quantized[ftype]
    m = llamix.load(path, n_ctx=128)
    types = {t.qtype for t in m.checkpoint.tensors.values() if hasattr(t, "qtype")}
    main = {"Q4_1": "q4_1", "Q2_K": "q2_k", "IQ4_NL": "iq4_nl", "IQ4_XS": "iq4_xs"}.get(ftype, "q3_k")
    assert main in types, types
    rng = np.random.default_rng(6)
    wins = [[1] + rng.integers(3, 354, 127).tolist() for _ in range(3)]
    theirs = llama_cpp_peer.run_prompt_in_child(path, ids=IDS, n_greedy=24, n_ctx=128)
    lg = llama_cpp_peer.run_model_in_child(path, n_ctx=128, logits=wins)["logits"]
    mine, logits = [], m.eval(IDS)
    for _ in range(24):
        mine.append(int(np.argmax(logits)))
        logits = m.eval([mine[-1]])
    assert mine == theirs["greedy"]
    ppl = {}
    for who, per_window in [("llama.cpp", lg), ("llamix", [m.logits(w) for w in wins])]:
        nll = [x for w, z in zip(wins, per_window) for x in _nll(z, w)[64:]]
        ppl[who] = math.exp(np.mean(nll))
    assert ppl["llamix"] == pytest.approx(ppl["llama.cpp"], rel=1e-2), ppl
