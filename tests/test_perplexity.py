"""Perplexity, KL divergence and top-1 agreement as llama.cpp's llama-perplexity computes them.

Oracles: an independent float64 numpy forward pass of stories260K (tests/oracle_llama.py) with
the windowing rule re-implemented here from llama.cpp's perplexity.cpp; llama.cpp itself (its
logits through llama-cpp-python, in a child process) on the same GGUF file.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import llamix
from llamix.eval.perplexity import windows

import llama_cpp_peer
import oracle_llama
from helpers import log_softmax

TEXT = (Path(__file__).parent / "data" / "stories_eval.txt").read_text()


@pytest.fixture(scope="module")
def s260(assets):
    return llamix.load(assets / "stories260K" / "stories260K.bin", n_ctx=256)


def _oracle_windows(tokens, n_ctx, bos=1):
    """llama.cpp's rule: windows of n_ctx (tail dropped), first token -> BOS."""
    wins = []
    for i in range(len(tokens) // n_ctx):
        win = list(tokens[i * n_ctx:(i + 1) * n_ctx])
        win[0] = bos
        wins.append(win)
    return wins


def _nll(logits, win):
    """Next-token NLL along a window from its logits (0 for the last position)."""
    lp = log_softmax(logits)
    return [-lp[j, win[j + 1]] for j in range(len(win) - 1)] + [0.0]


def _oracle_ppl(nll_of_window, tokens, n_ctx, bos=1):
    """llama.cpp's rule: windows of n_ctx (tail dropped), first token -> BOS, score the logits at
    n_ctx//2 .. n_ctx-2 against the next token; PPL = exp(mean), SE = PPL * std / sqrt(N - 1)."""
    nll = []
    for win in _oracle_windows(tokens, n_ctx, bos):
        nll.extend(nll_of_window(win)[n_ctx // 2:n_ctx - 1])
    nll = np.array(nll)
    ppl = math.exp(nll.mean())
    return ppl, ppl * nll.std() / math.sqrt(len(nll) - 1), len(nll)


def _nll_numpy(w):
    return lambda win: _nll(oracle_llama.logits(w, win), win)


@pytest.mark.slow  # the float64 numpy forward pass over every window (~2-3 s)
def test_perplexity_matches_numpy_oracle(assets, s260):
    """f32 llamix vs the float64 oracle: logits differ by ~1e-6 relative (float32 rounding over
    5 layers), so mean NLL differs by < 1e-5 nats: PPL within 1e-4 relative."""
    w = oracle_llama.read_llama2c(assets / "stories260K" / "stories260K.bin")
    tokens = s260.tokenize(TEXT[:2000])
    ppl, se, n = _oracle_ppl(_nll_numpy(w), tokens, 64)
    r = llamix.perplexity(s260, TEXT[:2000], n_ctx=64)
    assert r.n_tokens == n and r.n_chunks == len(tokens) // 64
    assert r.ppl == pytest.approx(ppl, rel=1e-4)
    assert r.ppl_se == pytest.approx(se, rel=1e-3)
    assert 1.5 < r.ppl < 20  # a trained model on in-domain text


def test_kl_of_model_with_itself_is_zero(s260):
    r = llamix.perplexity(s260, TEXT[:3000], n_ctx=128, kl_base=s260)
    assert r.kl == 0.0 and r.kl_se == 0.0
    assert r.top1 == 1.0


def test_kl_and_top1_against_numpy(assets, s260):
    """KL(base || q4_0) and top-1 agreement recomputed from the two models' logits in float64."""
    q = llamix.load(assets / "stories260K" / "stories260K.bin", quant="q4_0", n_ctx=256)
    r = llamix.perplexity(q, TEXT[:2500], n_ctx=128, kl_base=s260)
    kl, top = [], []
    for win in windows(s260.tokenize(TEXT[:2500]), 128, 1):
        a = s260.logits(win)[64:127].astype(np.float64)
        b = q.logits(win)[64:127].astype(np.float64)
        la, lb = log_softmax(a), log_softmax(b)
        kl.extend((np.exp(la) * (la - lb)).sum(-1))
        top.extend(a.argmax(-1) == b.argmax(-1))
    assert r.kl == pytest.approx(np.mean(kl), rel=1e-9)
    assert r.top1 == pytest.approx(np.mean(top), abs=1e-12)
    assert 0 < r.kl < 0.5 and 0.5 < r.top1 < 1


def test_batched_windows_equal_whole(s260):
    """n_batch splits a window into forward calls through the KV cache: same logits up to float32
    reduction order, so PPL within 1e-5 relative."""
    a = llamix.perplexity(s260, TEXT[:2000], n_ctx=128)
    b = llamix.perplexity(s260, TEXT[:2000], n_ctx=128, n_batch=48)
    assert b.ppl == pytest.approx(a.ppl, rel=1e-5)


def test_too_short_a_text_names_the_file(s260, tmp_path, capsys):
    from llamix.cli import main
    short = tmp_path / "short.txt"
    short.write_text("Once upon a time")
    assert main(["perplexity", "-m", str(s260.source), "-f", str(short), "-c", "64"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"llamix perplexity: error: -f {short}: the text has ") and err.count("\n") == 1


def test_chunks_scores_the_first_windows_only(s260, tmp_path, capsys):
    """n_chunks / --chunks N (llama-perplexity's --chunks): the result of a text cut after N
    windows, and the first N running values of the whole text's."""
    full = llamix.perplexity(s260, TEXT[:3000], n_ctx=64)
    assert full.n_chunks > 3
    two = llamix.perplexity(s260, TEXT[:3000], n_ctx=64, n_chunks=2)
    cut = llamix.perplexity(s260, s260.tokenize(TEXT[:3000])[:128], n_ctx=64)   # BOS first, as llama-perplexity
    assert two.n_chunks == 2 and two.chunk_ppl == pytest.approx(full.chunk_ppl[:2], rel=1e-6)
    assert two.ppl == pytest.approx(cut.ppl, rel=1e-6) and two.n_tokens == cut.n_tokens
    assert llamix.perplexity(s260, TEXT[:3000], n_ctx=64, n_chunks=1000).n_chunks == full.n_chunks
    with pytest.raises(llamix.ArgumentError, match="n_chunks"):
        llamix.perplexity(s260, TEXT[:3000], n_ctx=64, n_chunks=0)
    from llamix.cli import main
    f = tmp_path / "t.txt"
    f.write_text(TEXT[:3000])
    assert main(["perplexity", "-m", str(s260.source), "-f", str(f), "-c", "64", "--chunks", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == " ".join(f"[{i + 1}]{p:.4f}" for i, p in enumerate(two.chunk_ppl))
    assert main(["perplexity", "-m", str(s260.source), "-f", str(f), "-c", "64", "--chunks", "0"]) == 1
    assert "--chunks must be >= 1" in capsys.readouterr().err


def test_bad_input(s260):
    with pytest.raises(ValueError, match="at least n_ctx"):
        llamix.perplexity(s260, "Once upon a time", n_ctx=128)
    with pytest.raises(ValueError, match="exceeds the context"):
        llamix.perplexity(s260, TEXT, n_ctx=512)
    with pytest.raises(ValueError, match="n_batch"):
        llamix.perplexity(s260, TEXT, n_ctx=64, n_batch=0)


def test_cli(assets, tmp_path, capsys):
    from llamix.cli import main

    f = tmp_path / "t.txt"
    f.write_text(TEXT[:2000])
    model = str(assets / "stories260K" / "stories260K.bin")
    assert main(["perplexity", "-m", model, "-f", str(f), "--ctx", "64", "--kl-base", model]) == 0
    out = capsys.readouterr().out
    assert "PPL = " in out and "Mean KLD = 0.000000" in out and "Same top p = 100.000" in out


@pytest.mark.peers
def test_perplexity_matches_llama_cpp(assets, tmp_path):
    """The same q8_0 GGUF in llama.cpp (its logits, our windowing rule) and in llamix: logits
    differ by llama.cpp's fp16 KV cache and activation rounding (~1e-3 relative), so PPL agrees
    within 0.5 %."""
    llama_cpp_peer.require()
    path = tmp_path / "s260_q8_0.gguf"
    llamix.export_gguf(assets / "stories260K" / "stories260K.bin", path, "q8_0")
    m = llamix.load(path, n_ctx=128)
    tokens = m.tokenize(TEXT[:3000])
    wins = _oracle_windows(tokens, 128)
    logits = llama_cpp_peer.run_model_in_child(path, n_ctx=128, logits=wins)["logits"]  # each from an empty cache
    by_window = {tuple(w): lg for w, lg in zip(wins, logits)}

    ppl, _, _ = _oracle_ppl(lambda win: _nll(by_window[tuple(win)], win), tokens, 128)
    assert llamix.perplexity(m, TEXT[:3000], n_ctx=128).ppl == pytest.approx(ppl, rel=5e-3)


class _LogitsModel:
    """A stand-in model (the duck type llamix.perplexity takes): fixed random logits per window."""

    def __init__(self, vocab: int, seed: int):
        self.config = type("C", (), {"vocab_size": vocab, "bos_token_id": 1})()
        self.vocab, self.seed = vocab, seed

    def logits(self, ids):
        z = np.random.default_rng(self.seed + int(ids[1])).standard_normal((len(ids), self.vocab), dtype=np.float32)
        z *= 3
        return z


def test_scoring_memory_stays_near_one_window_of_logits():
    """The float64 log-softmax runs over a few rows at a time: the peak memory past the window's
    float32 logits (both models' with a KL base) stays a fraction of them. Scored whole, the
    float64 copy and its temporaries took about 3x the logits more per model (4.3 GB for one
    1024-token window of a 262k vocabulary). Results as the numpy formulas over whole windows."""
    import tracemalloc

    n_ctx, vocab = 1024, 5000
    tokens = np.random.default_rng(0).integers(2, vocab, 2 * n_ctx).tolist()
    model, base = _LogitsModel(vocab, 1), _LogitsModel(vocab, 2)
    window_bytes = n_ctx * vocab * 4
    tracemalloc.start()
    try:
        r = llamix.perplexity(model, tokens, n_ctx=n_ctx, kl_base=base)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * window_bytes, peak / window_bytes   # the two windows of logits, and a little more
    nll, kl, top = [], [], []
    for w in windows(tokens, n_ctx, 1):
        a = log_softmax(model.logits(w).astype(np.float64))[n_ctx // 2:n_ctx - 1]
        b = log_softmax(base.logits(w).astype(np.float64))[n_ctx // 2:n_ctx - 1]
        nll.extend(-a[np.arange(len(a)), w[n_ctx // 2 + 1:]])
        kl.extend((np.exp(b) * (b - a)).sum(-1))
        top.extend(a.argmax(-1) == b.argmax(-1))
    assert r.ppl == pytest.approx(math.exp(np.mean(nll)), rel=1e-12)
    assert r.kl == pytest.approx(np.mean(kl), rel=1e-9) and r.top1 == pytest.approx(np.mean(top), abs=1e-12)
