"""pytest-benchmark timings of inference (run: python -m pytest bench/test_infer_bench.py --benchmark-only):
llamix and llama.cpp on the same synthesized random-weight TinyLlama-shaped Q4_0 GGUF, 2 threads.
Each engine's answer is checked against the other before timing. bench/infer_table.py prints the
full side-by-side table (Q4_0 and Q8_0, pp512 and tg128, bandwidth share).

llama.cpp runs in a child process holding the model (bench/lcpp_child.py, without extra weight
buffers): its timings here include one pipe round trip per call (well under a millisecond, against
tens of milliseconds per decoded token of this model)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lcpp_child  # noqa: E402
import llamix  # noqa: E402
from infer_common import model_file, prompt_tokens  # noqa: E402

THREADS = 2


@pytest.fixture(scope="module")
def engines():
    ok, reason = lcpp_child.llama_cpp_peer.available()
    if not ok:
        pytest.skip(reason)
    path = model_file("1b", "q4_0")
    m = llamix.load(path, threads=THREADS, n_ctx=640)
    with lcpp_child.Child() as llm:  # llama.cpp in its own process, the model kept loaded
        llm.call(lcpp_child.load, path, n_ctx=640, n_batch=512, threads=THREADS)
        toks = prompt_tokens(8, m.config.vocab_size, seed=1)
        ours = m.logits(toks)[-1]
        theirs = llm.call(lcpp_child.last_logits, toks)  # last token's logits
        assert np.corrcoef(ours, theirs)[0, 1] > 0.99
        yield m, llm


def test_llamix_decode_token(benchmark, engines):
    m, _ = engines
    toks = prompt_tokens(16, m.config.vocab_size)
    m.reset()
    m.eval(toks)

    def step():
        m.n_past = 16  # decode position 16 again and again
        m._cached = m._cached[:16]
        m.eval([toks[0]])
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)


def test_llamacpp_decode_token(benchmark, engines):
    _, llm = engines
    toks = prompt_tokens(16, 32000)
    llm.call(lcpp_child.reset_eval, toks)

    def step():  # decode position 16 again and again
        llm.call(lcpp_child.eval_from, 16, [toks[0]])
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)


def test_llamix_prompt_512(benchmark, engines):
    m, _ = engines
    toks = prompt_tokens(512, m.config.vocab_size)
    benchmark.pedantic(lambda: (m.reset(), m.eval(toks)), rounds=3, warmup_rounds=1)


def test_llamacpp_prompt_512(benchmark, engines):
    _, llm = engines
    toks = prompt_tokens(512, 32000)
    benchmark.pedantic(lambda: llm.call(lcpp_child.reset_eval, toks), rounds=3, warmup_rounds=1)
