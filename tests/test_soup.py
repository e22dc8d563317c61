"""Greedy and uniform model soups (Wortsman et al. 2022) on stories260K and perturbed copies.

Oracle: every perplexity in the trace is recomputed here independently (numpy average of the
candidates' float32 tensors, loaded and quantized by llamix's normal loader path, scored by
llamix.perplexity), and the kept set is derived from those numbers by the greedy rule.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import llamix
from llamix.loaders import load_checkpoint

TEXT = (Path(__file__).parent / "data" / "stories_eval.txt").read_text()[:2600]
N_CTX = 128


@pytest.fixture(scope="module")
def noisy(assets, tmp_path_factory):
    """Copies of stories260K with Gaussian noise of relative size sigma (per tensor std)."""
    src = load_checkpoint(assets / "stories260K" / "stories260K.bin")
    d = tmp_path_factory.mktemp("soup")
    paths = {}
    for name, sigma, seed in [("small_a", 0.03, 1), ("small_b", 0.03, 2), ("small_c", 0.05, 3), ("big", 0.5, 4)]:
        rng = np.random.default_rng(seed)
        tensors = {}
        for n, t in src.tensors.items():
            w = t if isinstance(t, np.ndarray) else t.dequantize()
            if w.ndim == 2:
                w = (w + rng.standard_normal(w.shape).astype(np.float32) * np.float32(sigma * w.std())).astype(np.float32)
            tensors[n] = w
        obj = SimpleNamespace(config=src.config, tensors=tensors, tokenizer=src.tokenizer, rope_freqs=None)
        paths[name] = d / f"{name}.gguf"
        llamix.export_gguf(obj, paths[name], "f32")
    return paths


def _ppl_of_average(paths) -> float:
    """Independent recomputation: numpy mean of the f32 GGUF tensors, written as f32, loaded with
    quant='q8_0' (llamix's loader quantization), scored with llamix.perplexity."""
    cks = [load_checkpoint(p) for p in paths]
    tensors = {}
    for n, t in cks[0].tensors.items():
        arrs = [(ck.tensors[n] if isinstance(ck.tensors[n], np.ndarray) else ck.tensors[n].dequantize()) for ck in cks]
        acc = arrs[0].copy()
        for a in arrs[1:]:
            acc += a
        tensors[n] = acc / np.float32(len(arrs))
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "avg.gguf"
        llamix.export_gguf(SimpleNamespace(config=cks[0].config, tensors=tensors, tokenizer=cks[0].tokenizer,
                                           rope_freqs=None), p, "f32")
        m = llamix.load(p, quant="q8_0", n_ctx=N_CTX)
        return llamix.perplexity(m, TEXT, n_ctx=N_CTX).ppl


@pytest.mark.slow  # perplexity of every candidate and of each growing soup (~1 s)
def test_greedy_soup_trace_follows_the_rule(assets, noisy, tmp_path):
    cands = [noisy["big"], noisy["small_c"], noisy["small_a"], noisy["small_b"]]
    base = assets / "stories260K" / "stories260K.bin"
    r = llamix.soup(cands, TEXT, tmp_path / "soup.gguf", base=base, n_ctx=N_CTX, out_type="f32")
    # ranking: each candidate's own perplexity, best first
    single = {str(c): _ppl_of_average([c]) for c in cands}
    assert [c for c, _ in r.ranking] == sorted(single, key=single.get)
    for c, p in r.ranking:
        assert p == pytest.approx(single[c], rel=1e-6)
    # the trace: start from the best, keep a candidate iff the average's perplexity improves
    kept = [r.ranking[0][0]]
    current = r.ranking[0][1]
    assert len(r.steps) == len(cands) - 1
    for step, (cand, _) in zip(r.steps, r.ranking[1:]):
        assert step.candidate == cand and step.ppl_before == current
        assert step.ppl_after == pytest.approx(_ppl_of_average(kept + [cand]), rel=1e-6)
        assert step.kept == (step.ppl_after < step.ppl_before)
        if step.kept:
            kept.append(cand)
            current = step.ppl_after
    assert r.kept == kept and r.ppl == current
    # what the noise sizes imply: the big-noise copy ranks last and is rejected; averaging
    # independent small noise helps, so at least two small copies are kept
    assert r.ranking[-1][0] == str(noisy["big"]) and str(noisy["big"]) not in r.kept
    assert len(r.kept) >= 2
    assert r.ppl <= r.ranking[0][1]  # never worse than the best single candidate
    assert r.base_ppl is not None and r.base_ppl < r.ranking[0][1]  # noise only hurts the base
    out = llamix.load(tmp_path / "soup.gguf", quant="q8_0", n_ctx=N_CTX)
    assert llamix.perplexity(out, TEXT, n_ctx=N_CTX).ppl == pytest.approx(r.ppl, rel=1e-6)
    assert "kept" in r.report() and "rejected" in r.report()


def test_uniform_soup(noisy):
    cands = [noisy["small_a"], noisy["small_b"], noisy["big"]]
    r = llamix.soup(cands, TEXT, method="uniform", n_ctx=N_CTX)
    assert r.kept == [c for c, _ in r.ranking] and not r.steps
    assert r.ppl == pytest.approx(_ppl_of_average(cands), rel=1e-6)


def test_soup_errors(assets, noisy, tmp_path):
    with pytest.raises(ValueError, match="at least one candidate"):
        llamix.soup([], TEXT)
    with pytest.raises(ValueError, match="method"):
        llamix.soup([noisy["small_a"]], TEXT, method="ties")
    tok = llamix.Tokenizer.from_file(assets / "stories260K" / "tok512.model")
    other = tmp_path / "other.gguf"
    llamix.export_gguf(llamix.random_checkpoint("tiny", tokenizer=tok, lazy=True, n_layers=2), other, "f16")
    with pytest.raises(ValueError, match="other.gguf"):
        llamix.soup([noisy["small_a"], other], TEXT)


def test_soup_cli(noisy, tmp_path, capsys):
    from llamix.cli import main

    f = tmp_path / "eval.txt"
    f.write_text(TEXT)
    out = tmp_path / "s.gguf"
    assert main(["soup", "--candidates", str(noisy["small_a"]), str(noisy["big"]), "--eval", str(f),
                 "--ctx", str(N_CTX), str(out)]) == 0
    text = capsys.readouterr().out
    assert "rejected" in text and out.is_file()
