"""Perplexity, KL divergence and top-1 agreement, computed as llama.cpp's ``llama-perplexity`` does.

Reference: llama.cpp ``tools/perplexity/perplexity.cpp`` (function ``perplexity``, and
``kl_divergence`` for ``--kl-divergence``). The text is tokenized once, with BOS first only if the
vocabulary says ``add_bos_token`` (``common_tokenize(ctx, text, add_special=true)``; llama.cpp
refuses vocabularies with ``add_eos_token``, llamix adds no EOS) and cut into non-overlapping
windows of ``n_ctx`` tokens (a tail shorter than a window is dropped); when the vocabulary adds
BOS, the first token of every window is replaced by BOS (``llama_vocab_get_add_bos``), otherwise
windows are evaluated as cut; each window is evaluated from position 0, and only the second half
is scored: the logits at positions ``n_ctx // 2 .. n_ctx - 2`` predict the next token.

    PPL = exp(mean NLL),  its standard error  PPL * sqrt((mean NLL^2 - mean NLL^2) / (N - 1))
    KL  = mean over scored positions of  sum_v p_base(v) (log p_base(v) - log p_model(v))
    top-1 agreement = fraction of scored positions where both models' argmax agree
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ArgumentError

Progress = Callable[[float, float, str], None]  # progress(done, total, note)


@dataclass
class PerplexityResult:
    """What ``llamix.perplexity`` measured; ``ppl_se``, ``kl_se`` and ``top1_se`` are standard errors."""

    ppl: float
    ppl_se: float
    n_tokens: int                # scored tokens
    n_chunks: int
    n_ctx: int
    chunk_ppl: list[float] = field(default_factory=list)   # running perplexity after each window
    kl: float | None = None      # mean KL(base || model), nats
    kl_se: float | None = None
    top1: float | None = None    # top-1 agreement with the base model, 0..1
    top1_se: float | None = None
    nll: np.ndarray | None = field(default=None, repr=False)  # per scored token

    def summary(self) -> str:
        s = f"PPL = {self.ppl:.4f} +/- {self.ppl_se:.4f} ({self.n_tokens} tokens, {self.n_chunks} chunks of {self.n_ctx})"
        if self.kl is not None:
            s += f"\nMean KLD = {self.kl:.6f} +/- {self.kl_se:.6f}\nSame top p = {100 * self.top1:.3f} +/- {100 * self.top1_se:.3f} %"
        return s


_ROWS = 16   # logit rows turned into float64 log-probabilities at once


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (n, vocab)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def text_tokens(tokenizer, text: str) -> list[int]:
    """``text`` tokenized as llama-perplexity does: BOS first if the vocabulary says
    ``add_bos_token``, no EOS."""
    return ([tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id >= 0 else []) + \
        tokenizer.encode(text, add_special=False)


def _tokens(model, text) -> list[int]:
    if isinstance(text, str):
        tok = getattr(model, "tokenizer", None)
        return text_tokens(tok, text) if tok is not None else list(model.tokenize(text))
    return [int(t) for t in text]


def _bos_id(model) -> int | None:
    """The BOS id each window starts with, or None when the vocabulary adds no BOS."""
    tok = getattr(model, "tokenizer", None)
    if tok is not None:
        return int(tok.bos_id) if tok.add_bos and tok.bos_id >= 0 else None
    return int(model.config.bos_token_id)


def windows(tokens: list[int], n_ctx: int, bos: int | None, source: str | None = None) -> list[np.ndarray]:
    """The non-overlapping evaluation windows, each starting with ``bos`` (None: as cut);
    ``source`` names the text in the error for one too short."""
    if n_ctx < 4:
        raise ArgumentError(f"n_ctx must be at least 4, got {n_ctx}")
    n_chunks = len(tokens) // n_ctx
    if n_chunks < 1:
        raise ArgumentError(f"{source + ': ' if source else ''}the text has {len(tokens)} tokens: at least n_ctx = {n_ctx} are needed for one window (give a longer text, or a smaller n_ctx: -c)")
    out = []
    for i in range(n_chunks):
        w = np.asarray(tokens[i * n_ctx:(i + 1) * n_ctx], dtype=np.int64)
        if bos is not None:
            w[0] = bos
        out.append(w)
    return out


def perplexity(model, text, n_ctx: int = 512, *, kl_base=None, n_batch: int | None = None,
               progress: Progress | None = None, n_chunks: int | None = None,
               source: str | None = None) -> PerplexityResult:
    """Perplexity of ``model`` on ``text`` (a string, or token ids) as llama.cpp computes it.

    ``kl_base``: a second model (the unquantized one) to compare token distributions with: adds
    the mean KL divergence KL(base || model) and the top-1 agreement. ``n_batch``: tokens per
    forward call inside a window (default: the whole window at once). ``n_chunks``: score only
    the first ``n_chunks`` windows (llama-perplexity's ``--chunks``; None: all). ``progress(done_windows,
    total_windows, "ppl X")`` is called after each window. ``model`` is a :class:`llamix.Model` or
    anything with ``logits(ids)``, ``tokenize``, ``config`` (a peer wrapped for comparison).
    ``source``: the text's name (a file) for error messages. Raises ValueError for a text shorter than one window or models of different vocabularies.
    """
    progress = progress if callable(progress) else None
    n_ctx = int(n_ctx)
    for m in (model, kl_base):
        max_ctx = getattr(m, "n_ctx", None) if m is not None else None
        if max_ctx and n_ctx > int(max_ctx):
            raise ArgumentError(f"n_ctx {n_ctx} exceeds the context the model was loaded with ({max_ctx})")
    if n_batch is not None and int(n_batch) <= 0:
        raise ArgumentError(f"n_batch must be positive, got {n_batch}")
    if n_chunks is not None and int(n_chunks) < 1:
        raise ArgumentError(f"n_chunks must be >= 1 (None: every window), got {n_chunks}")
    tokens = _tokens(model, text)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if kl_base is not None and vocab and getattr(kl_base.config, "vocab_size", vocab) != vocab:
        names = [getattr(m, "source", None) or what for m, what in ((kl_base, "the KL base"), (model, "the model"))]
        raise ArgumentError(f"{names[0]}: the KL base's vocabulary ({kl_base.config.vocab_size} tokens) differs from "
                            f"{names[1]}'s ({vocab}): KL divergence compares the same tokens")
    wins = windows(tokens, n_ctx, _bos_id(model), source)[:None if n_chunks is None else int(n_chunks)]
    first = n_ctx // 2
    nll_all, kl_all, top1_all, chunk_ppl = [], [], [], []
    for i, w in enumerate(wins):
        logits = _window_logits(model, w, n_batch)[first:n_ctx - 1]
        base = _window_logits(kl_base, w, n_batch)[first:n_ctx - 1] if kl_base is not None else None
        target = w[first + 1:]
        # float64 a few rows at a time: a whole window's (rows, vocab) in float64, and its
        # temporaries, took several times the logits' memory (GBs for a 256k vocabulary)
        for r in range(0, len(target), _ROWS):
            lp = log_softmax(logits[r:r + _ROWS])
            nll_all.append(-lp[np.arange(len(lp)), target[r:r + _ROWS]])
            if base is not None:
                lb = log_softmax(base[r:r + _ROWS])
                kl_all.append((np.exp(lb) * (lb - lp)).sum(axis=-1))
                top1_all.append(lb.argmax(-1) == lp.argmax(-1))
        del logits, base   # before the next window's are made
        chunk_ppl.append(math.exp(np.concatenate(nll_all).mean()))
        if progress is not None:
            progress(i + 1, len(wins), f"ppl {chunk_ppl[-1]:.4f}")
    nll = np.concatenate(nll_all)
    res = PerplexityResult(ppl=math.exp(nll.mean()), ppl_se=0.0, n_tokens=len(nll), n_chunks=len(wins), n_ctx=n_ctx,
                           chunk_ppl=chunk_ppl, nll=nll)
    res.ppl_se = res.ppl * _sem(nll)
    if kl_base is not None:
        kl = np.concatenate(kl_all)
        top1 = np.concatenate(top1_all).astype(np.float64)
        res.kl, res.kl_se = float(kl.mean()), _sem(kl)
        res.top1, res.top1_se = float(top1.mean()), _sem(top1)
    return res


def _sem(v: np.ndarray) -> float:
    """Standard error of the mean, as llama.cpp: sqrt((E[v^2] - E[v]^2) / (N - 1))."""
    if len(v) < 2:
        return 0.0
    var = float(np.mean(v * v) - np.mean(v) ** 2)
    return math.sqrt(var / (len(v) - 1)) if var > 0 else 0.0


def _window_logits(model, ids: np.ndarray, n_batch: int | None) -> np.ndarray:
    """Logits (n_ctx, vocab) of one window evaluated from position 0, ``n_batch`` tokens per
    forward call (all at once when None)."""
    ids = [int(t) for t in ids]
    if not n_batch or n_batch >= len(ids):
        return np.asarray(model.logits(ids))
    # a llamix Model: continue the sequence batch by batch in its KV cache
    if not hasattr(model, "eval"):
        raise ArgumentError("n_batch needs a llamix Model (or a model whose logits() takes whole windows)")
    model.reset()
    return np.concatenate([model.eval(ids[i:i + n_batch], all_logits=True) for i in range(0, len(ids), n_batch)])
