"""pytest-benchmark timings of inference (run: python -m pytest bench/test_infer_bench.py --benchmark-only):
llamix and llama.cpp on the same synthesized random-weight TinyLlama-shaped Q4_0 GGUF, 2 threads.
Each engine's answer is checked against the other before timing. bench/infer_table.py prints the
full side-by-side table (Q4_0 and Q8_0, pp512 and tg128, bandwidth share)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llamix  # noqa: E402
from infer_common import model_file, prompt_tokens  # noqa: E402

THREADS = 2


@pytest.fixture(scope="module")
def engines():
    llama_cpp = pytest.importorskip("llama_cpp")
    path = model_file("1b", "q4_0")
    m = llamix.load(path, threads=THREADS, n_ctx=640)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=640, n_batch=512, n_ubatch=512, n_threads=THREADS,
                          n_threads_batch=THREADS, verbose=False)
    toks = prompt_tokens(8, m.config.vocab_size, seed=1)
    ours = m.logits(toks)[-1]
    llm.eval(toks)
    theirs = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))  # last token's logits
    assert np.corrcoef(ours, theirs)[0, 1] > 0.99
    return m, llm



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
    llm.reset()
    llm.eval(toks)

    def step():
        llm.n_tokens = 16
        llm._ctx.kv_cache_seq_rm(-1, 16, -1)
        llm.eval([toks[0]])
    benchmark.pedantic(step, rounds=20, warmup_rounds=2)


def test_llamix_prompt_512(benchmark, engines):
    m, _ = engines
    toks = prompt_tokens(512, m.config.vocab_size)
    benchmark.pedantic(lambda: (m.reset(), m.eval(toks)), rounds=3, warmup_rounds=1)


def test_llamacpp_prompt_512(benchmark, engines):
    _, llm = engines
    toks = prompt_tokens(512, 32000)
    benchmark.pedantic(lambda: (llm.reset(), llm.eval(toks)), rounds=3, warmup_rounds=1)
