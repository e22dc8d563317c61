"""llama.cpp's side of the benchmarks. Every function here runs in a child process (tests/
child_process.py), never in the benchmark's own: a crash in llama.cpp then ends that engine's
figures with a message, not the whole run. Models are opened by tests/llama_cpp_peer.py, i.e.
without llama.cpp's extra (repacked) weight buffers (use_extra_bufts=False): its AMX / repacked
Q4_0 paths are not what is measured.

A persistent child keeps one model loaded between calls (``load`` then ``pp`` / ``tg`` / ...), so
the benchmarks can alternate between the two engines as before; each timing is taken inside the
child, around llama.cpp's own call (the pipe round trip is not in it).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))

import llama_cpp_peer  # noqa: E402
from child_process import Child, run_in_child  # noqa: E402,F401 - re-exported for the benchmarks

NOTE = "llama.cpp without extra (repacked) weight buffers (use_extra_bufts=False), in a child process"

_llm = None  # the model of a persistent child


def load(path, n_ctx: int, n_batch: int = 512, threads: int = 2, logits_all: bool = False) -> int:
    """Open ``path`` in this (child) process for the calls that follow; returns its vocabulary size."""
    global _llm
    _llm = None
    _llm = llama_cpp_peer.open_model(path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=threads,
                                     n_threads_batch=threads, logits_all=logits_all)
    return _llm.n_vocab()


def last_logits(tokens) -> np.ndarray:
    """The last token's logits after evaluating ``tokens`` from an empty cache."""
    _llm.reset()
    _llm.eval([int(t) for t in tokens])
    return llama_cpp_peer.last_logits(_llm)


def pp(tokens) -> float:
    """Prompt tokens/s: one batch from an empty cache."""
    _llm.reset()
    t = time.perf_counter()
    _llm.eval(tokens)
    return len(tokens) / (time.perf_counter() - t)


def tg(tokens) -> float:
    """Decode tokens/s: single-token evaluations from an empty cache."""
    _llm.reset()
    t = time.perf_counter()
    for tok in tokens:
        _llm.eval([tok])
    return len(tokens) / (time.perf_counter() - t)


def greedy_tg(n: int, bos: int = 1) -> float:
    """Decode tokens/s of greedy generation after BOS (argmax of the last logits, no sampler)."""
    _llm.reset()
    _llm.eval([bos])
    t = time.perf_counter()
    for _ in range(n):
        tok = int(np.argmax(llama_cpp_peer.last_logits(_llm)))
        _llm.eval([tok])
    return n / (time.perf_counter() - t)


def eval_from(n_past: int, tokens) -> None:
    """Evaluate ``tokens`` after the first ``n_past`` cached ones (what one decode step repeats)."""
    _llm.n_tokens = n_past
    _llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
    _llm.eval(tokens)


def reset_eval(tokens) -> None:
    _llm.reset()
    _llm.eval(tokens)


def window_nll(windows, ctx: int) -> tuple[float, list]:
    """Seconds to evaluate every window with all logits (what llama-perplexity does), and the NLL
    of the second half of each window (llama.cpp's perplexity rule). Needs logits_all."""
    t = time.perf_counter()
    nll = []
    for w in windows:
        _llm.reset()
        _llm.eval([int(i) for i in w])
        lg = np.array(_llm.scores[:ctx], dtype=np.float64)
        lg -= lg.max(-1, keepdims=True)
        lp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        half = ctx // 2
        nll.extend(-lp[np.arange(half, ctx - 1), np.asarray(w)[half + 1:]])
    return time.perf_counter() - t, nll


def timed_quantize(src, dst, ftype: str, threads: int) -> float:
    """Seconds llama_model_quantize takes (src -> dst, LLAMA_FTYPE_MOSTLY_<ftype>); raises on failure."""
    t = time.perf_counter()
    rc = llama_cpp_peer.quantize(src, dst, ftype, nthread=threads)
    dt = time.perf_counter() - t
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed for {ftype} (code {rc})")
    return dt


# --- quant_quality.py ---------------------------------------------------------------------------
def lcpp_logprobs(path, windows, ctx: int, threads: int) -> np.ndarray:
    """log-softmax of the second half of every window (positions ctx/2 .. ctx-2), float32."""
    llm = llama_cpp_peer.open_model(str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, n_threads=threads,
                                    n_threads_batch=threads, logits_all=True)
    out = []
    for w in windows:
        llm.reset()
        llm.eval([int(i) for i in w])
        lg = np.array(llm.scores[ctx // 2:ctx - 1], dtype=np.float32)
        lg -= lg.max(-1, keepdims=True)
        out.append(lg - np.log(np.exp(lg).sum(-1, keepdims=True)))
    return np.concatenate(out)


_base = None  # the reference file's log-probabilities, kept in the child (large vocabularies)


def lcpp_set_base(path, windows, ctx: int, threads: int) -> int:
    global _base
    _base = lcpp_logprobs(path, windows, ctx, threads)
    return int(_base.shape[0])


def lcpp_kl_top1(path, windows, ctx: int, threads: int) -> tuple[float, float]:
    """Mean KL(base || path) over the scored positions, and the fraction where the argmax agrees."""
    lp = lcpp_logprobs(path, windows, ctx, threads)
    kl = float(np.mean(np.sum(np.exp(_base) * (_base - lp), axis=-1, dtype=np.float64)))
    return kl, float(np.mean(_base.argmax(-1) == lp.argmax(-1)))


def lcpp_quantize(src, dst, ftype: str, imatrix, threads: int) -> float:
    t = time.perf_counter()
    rc = llama_cpp_peer.quantize_ex(src, dst, ftype, imatrix=imatrix, nthread=threads)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {ftype} failed ({rc})")
    return time.perf_counter() - t


def lcpp_quantize_times(src, dst, ftype: str, imatrix, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this child's threads) that llama_model_quantize takes."""
    t, c = time.perf_counter(), time.process_time()
    rc = llama_cpp_peer.quantize_ex(src, dst, ftype, imatrix=imatrix, nthread=threads)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {ftype} failed ({rc})")
    return time.perf_counter() - t, time.process_time() - c
