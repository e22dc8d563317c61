"""Continuous batching: ``Transformer.forward_batch`` gives every sequence, bit for bit, the logits
it gets run alone through ``forward`` (batch sizes 1..8, prompts mixed with decodes, f32 and f16
caches, every kernel variant and thread count), and the ``BatchEngine`` scheduler gives each
request the tokens ``Model.run`` gives it alone (greedy and seeded sampling), admits requests as
slots free up, frees a cancelled request's slot, bounds its queue and reuses cached prefixes."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import llamix
from llamix import _C
from llamix.model import BatchEngine, QueueFull, Sampler
from llamix.model.engine import Request


@pytest.fixture(scope="module", params=["q4_0", "q4_K"])
def model(request):
    ck = llamix.random_checkpoint("tiny", request.param, seed=1, n_layers=2)
    return llamix.Model(ck, n_ctx=96)


def _alone(m, prompt, n_gen, kv):
    """Greedy logits of prompt then n_gen tokens, each sequence alone on a fresh cache."""
    c = m.config
    cache = _C.KVCache(c.n_layers, m.n_ctx, c.kv_dim, kv)
    out = [m._t.forward(cache, np.asarray(prompt, np.int32), 0, 1)[0]]
    for k in range(n_gen):
        t = np.array([int(np.argmax(out[-1]))], np.int32)
        out.append(m._t.forward(cache, t, len(prompt) + k, 1)[0])
    return out


@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_forward_batch_equals_alone(model, isa, threads, kv):
    c = model.config
    rng = np.random.default_rng(7)
    prompts = [rng.integers(0, c.vocab_size, size=int(rng.integers(1, 24))).tolist() for _ in range(8)]
    n_gen = 4
    ref = [_alone(model, p, n_gen, kv) for p in prompts]
    for size in range(1, 9):
        ps = prompts[:size]
        caches = [_C.KVCache(c.n_layers, model.n_ctx, c.kv_dim, kv) for _ in ps]
        # sequence i starts i steps late: its prompt runs in the same pass as the others' decodes
        done = [0] * size        # tokens generated per sequence
        last: list = [None] * size
        for step in range(n_gen + size):
            seqs = [i for i in range(size) if i <= step and done[i] <= n_gen]
            if not seqs:
                break
            toks, pos, cnt = [], [], []
            for i in seqs:
                if last[i] is None:
                    toks += ps[i]; pos.append(0); cnt.append(len(ps[i]))
                else:
                    toks.append(int(np.argmax(last[i]))); pos.append(len(ps[i]) + done[i] - 1); cnt.append(1)
            logits = model._t.forward_batch([caches[i] for i in seqs], np.array(toks, np.int32), pos, cnt,
                                            [1] * len(seqs))
            assert logits.shape == (len(seqs), c.vocab_size)
            for r, i in enumerate(seqs):
                np.testing.assert_array_equal(logits[r], ref[i][done[i]], err_msg=f"batch {size}, sequence {i}")
                last[i] = logits[r]
                done[i] += 1


def test_forward_batch_checks(model):
    c = model.config
    a = _C.KVCache(c.n_layers, model.n_ctx, c.kv_dim)
    b = _C.KVCache(c.n_layers, 8, c.kv_dim)
    t = lambda *x: np.array(x, np.int32)  # noqa: E731
    with pytest.raises(ValueError, match="twice"):
        model._t.forward_batch([a, a], t(1, 2), [0, 0], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="context overflow"):
        model._t.forward_batch([a, b], t(1, 2), [0, 8], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="sum of counts"):
        model._t.forward_batch([a, b], t(1, 2, 3), [0, 0], [1, 1], [1, 1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model._t.forward_batch([a], t(c.vocab_size), [0], [1], [1])
    with pytest.raises(ValueError, match="n_out"):
        model._t.forward_batch([a], t(1), [0], [1], [2])
    wrong = _C.KVCache(c.n_layers + 1, 8, c.kv_dim)
    with pytest.raises(ValueError, match="does not match"):
        model._t.forward_batch([wrong], t(1), [0], [1], [1])
    # no logits wanted from a prompt chunk: nothing returned, the cache still filled
    assert model._t.forward_batch([a], t(1, 2), [0], [2], [0]).shape == (0, c.vocab_size)


@pytest.mark.parametrize("kv", ["f32", "f16", "q8_0"])
def test_copy_prefix_continues_as_the_cache_that_evaluated_it(model, kv):
    """A cache given another's first n positions (KVCache.copy_prefix) over stale content of its
    own continues exactly as a cache that evaluated those n tokens: the next tokens' logits are
    bit for bit the same (n inside, at and past the end of an attention tile)."""
    c = model.config
    seq = np.random.default_rng(11).integers(0, c.vocab_size, size=90).astype(np.int32)
    new = lambda: _C.KVCache(c.n_layers, model.n_ctx, c.kv_dim, kv, n_kv_heads=c.n_kv_heads)  # noqa: E731
    src = new()
    model._t.forward(src, seq[:70], 0, 1)
    for n in (1, 31, 32, 33, 70):
        ref = new()
        model._t.forward(ref, seq[:n], 0, 1)
        want = model._t.forward(ref, seq[n:n + 10], n, 10)
        dst = new()
        model._t.forward(dst, seq[::-1][:80].copy(), 0, 1)   # stale positions, to be overwritten
        dst.copy_prefix(src, n)
        np.testing.assert_array_equal(model._t.forward(dst, seq[n:n + 10], n, 10), want, err_msg=f"n={n}")
    with pytest.raises(ValueError, match="layout"):
        dst.copy_prefix(_C.KVCache(c.n_layers, model.n_ctx, c.kv_dim, "f32" if kv != "f32" else "f16",
                                   n_kv_heads=c.n_kv_heads), 4)
    with pytest.raises(ValueError, match="n_ctx"):
        dst.copy_prefix(src, model.n_ctx + 1)
    with pytest.raises(ValueError, match="same cache"):
        dst.copy_prefix(dst, 4)


# --- the scheduler --------------------------------------------------------------------------------------
def _request(m, prompt, max_tokens=12, **kw):
    return Request(prompt, sampler=Sampler(**{"temperature": 0.0, **kw}), max_tokens=max_tokens, eos_ids=())


def _prompts(m, n, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(1, m.config.vocab_size, size=int(rng.integers(2, 30))).tolist() for _ in range(n)]


@pytest.mark.parametrize("parallel", [1, 3, 8])
def test_engine_matches_alone(model, parallel):
    prompts = _prompts(model, 10)
    kinds = [dict(temperature=0.0), dict(temperature=0.9, seed=5, top_k=0, top_p=1.0, min_p=0.0)]
    alone = []
    for i, p in enumerate(prompts):
        model.reset()
        alone.append([s.token for s in model.run(_request(model, p, **kinds[i % 2]))])
    results: dict[int, list[int]] = {}
    with BatchEngine(model, n_parallel=parallel, n_batch=40) as engine:
        def go(i):
            results[i] = [s.token for s in engine.run(_request(model, prompts[i], **kinds[i % 2]))]
        threads = [threading.Thread(target=go, args=(i,)) for i in range(len(prompts))]
        for th in threads:
            th.start()
            time.sleep(0.002 * (th.name[-1] == "3"))   # stagger some arrivals
        for th in threads:
            th.join(60)
        assert engine.n_steps > 0
    assert [results[i] for i in range(len(prompts))] == alone


def test_engine_cancel_frees_slot_and_queue_bound(model):
    p = _prompts(model, 1)[0]
    with BatchEngine(model, n_parallel=1, max_queue=1) as engine:
        got, go_on = [], threading.Event()

        def held(item):  # the first request stays in its slot until the queue checks are done
            got.append(item)
            go_on.wait(30)

        first = engine.submit(_request(model, p, max_tokens=60), held)
        while not got:
            time.sleep(0.001)
        second = engine.submit(_request(model, p, max_tokens=2), lambda item: None)
        with pytest.raises(QueueFull):
            engine.submit(_request(model, p, max_tokens=2), lambda item: None)
        second.cancel()                      # dropped from the queue at once
        assert second.finished and engine.queue_depth == 0
        first.cancel()
        go_on.set()
        deadline = time.time() + 10
        while engine.slots_busy and time.time() < deadline:
            time.sleep(0.001)
        assert engine.slots_busy == 0 and first.finished
        assert got[-1] is None and len(got) < 60
        # the slot serves the next request, and its cached prefix is reused
        steps = list(engine.run(_request(model, p, max_tokens=3)))
        assert len(steps) == 3
        model.reset()
        assert [s.token for s in steps] == [s.token for s in model.run(_request(model, p, max_tokens=3))]


def test_engine_call_and_stop(model):
    engine = BatchEngine(model, n_parallel=2).start()
    assert engine.call(lambda x: x + 1, 41).result(10) == 42
    with pytest.raises(ZeroDivisionError):
        engine.call(lambda: 1 / 0).result(10)
    engine.stop(10)
    with pytest.raises(RuntimeError, match="stopped"):
        engine.submit(_request(model, [1, 2]), lambda item: None)


def test_ids_past_the_tokenizer_are_never_sampled(assets):
    # a Hugging Face config's vocab_size may exceed its tokenizer's (Qwen2: 151936 rows, 151665
    # tokens): the extra rows have no text, so a request with a tokenizer never samples them
    tok = llamix.Tokenizer.from_file(assets / "stories260K" / "tok512.model")
    n = tok.vocab_size
    logits = np.zeros(n + 40, np.float32)
    logits[n + 7] = 50.0  # the best logit lies in the padding
    logits[3] = 10.0
    for kw in ({"temperature": 0.0}, {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 1}):
        for _ in range(20):
            req = Request([1], sampler=Sampler(**kw), max_tokens=1, tokenizer=tok, eos_ids=())
            assert req.step(logits).token < n
    greedy = Request([1], sampler=Sampler(temperature=0.0), max_tokens=1, tokenizer=tok, eos_ids=())
    assert greedy.step(logits).token == 3
    raw = Request([1], sampler=Sampler(temperature=0.0), max_tokens=1, eos_ids=())  # token ids only: every row
    assert raw.step(logits).token == n + 7


def test_engine_evaluates_a_shared_prompt_once(model):
    """Requests sharing a long prompt (the n choices of one request, a common system prompt) arriving
    together: one slot evaluates it, the others wait for it and copy its keys and values, running
    only what differs; each gets the tokens it gets alone."""
    p = np.random.default_rng(9).integers(1, model.config.vocab_size, size=40).tolist()
    prompts = [p + [k] for k in (5, 6, 7)]
    alone = []
    for q in prompts:
        model.reset()
        alone.append([s.token for s in model.run(_request(model, q, max_tokens=4))])
    with BatchEngine(model, n_parallel=3, n_batch=64) as engine:
        items: list[list] = [[], [], []]
        jobs = [engine.submit(_request(model, q, max_tokens=4), items[i].append) for i, q in enumerate(prompts)]
        deadline = time.time() + 60
        while not all(j.finished for j in jobs) and time.time() < deadline:
            time.sleep(0.001)
    assert [[s.token for s in got if s is not None] for got in items] == alone
    assert sorted(j.n_prompt_evaluated for j in jobs) == [1, 1, len(p) + 1]
