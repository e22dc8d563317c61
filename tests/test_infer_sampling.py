"""Samplers: greedy, temperature, top-k, top-p, min-p and repetition penalty, checked
statistically against distributions computed here from the definitions (float64 numpy), and
seeded reproducibility."""
from __future__ import annotations

import numpy as np
import pytest

from llamix.errors import ArgumentError
from llamix.model.sampling import Sampler

LOGITS = np.array([2.0, 1.5, 1.4, 0.3, 0.0, -0.5, -1.0, -3.0, 2.0 - 1e-3, -8.0], dtype=np.float32)


def _oracle(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """The documented definition, written independently: filters on softmax(logits) in order of
    decreasing probability, then temperature on the survivors."""
    x = logits.astype(np.float64)
    order = sorted(range(len(x)), key=lambda i: (-x[i], i))
    if top_k:
        order = order[:top_k]
    p = np.exp(x[order] - x[order].max())
    p /= p.sum()
    keep = len(order)
    if top_p < 1:
        c = 0.0
        for i, pi in enumerate(p):
            c += pi
            if c >= top_p:
                keep = i + 1
                break
    if min_p > 0:
        keep = min(keep, sum(1 for pi in p if pi >= min_p * p[0]))
    kept = order[:keep]
    q = np.exp((x[kept] - x[kept].max()) / temperature)
    out = np.zeros(len(x))
    out[kept] = q / q.sum()
    return out


def _chi2_ok(counts, probs, n):
    """Pearson chi-square against the expected counts; 99.99% quantile bound for df <= 10 is < 36."""
    mask = probs > 0
    assert counts[~mask].sum() == 0, "sampled a token the filters should have removed"
    exp = probs[mask] * n
    chi2 = float(((counts[mask] - exp) ** 2 / exp).sum())
    return chi2 < 36.0


@pytest.mark.slow  # 20000 samples per case (~0.5-0.9 s each)
@pytest.mark.parametrize("kw", [dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0),
                                dict(temperature=0.7, top_k=3, top_p=1.0, min_p=0.0),
                                dict(temperature=1.3, top_k=0, top_p=0.8, min_p=0.0),
                                dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2),
                                dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)])
def test_sampling_distribution(kw):
    s = Sampler(seed=1, **kw)
    want = _oracle(LOGITS, **kw)
    idx, p = s.probabilities(LOGITS)
    got = np.zeros(len(LOGITS))
    got[idx] = p
    assert np.allclose(got, want, atol=1e-9)
    n = 20000
    counts = np.bincount([s.sample(LOGITS) for _ in range(n)], minlength=len(LOGITS))
    assert _chi2_ok(counts, want, n)


def test_filters_remove_what_they_should():
    assert set(Sampler(top_k=2, top_p=1, min_p=0).candidates(LOGITS)) == {0, 8}
    # the two largest tokens hold 0.553 of the mass, the third brings it to 0.721
    assert set(Sampler(top_k=0, top_p=0.55, min_p=0).candidates(LOGITS)) == {0, 8}
    assert set(Sampler(top_k=0, top_p=0.56, min_p=0).candidates(LOGITS)) == {0, 8, 1}
    # min_p = 0.5: p_i >= 0.5 p_max  <=>  logit_i >= logit_max - ln 2
    assert set(Sampler(top_k=0, top_p=1, min_p=0.5).candidates(LOGITS)) == {0, 8, 1, 2}


def test_greedy_and_repeat_penalty():
    assert Sampler(temperature=0).sample(LOGITS) == 0
    # penalty 2 on token 0: 2.0 -> 1.0, so token 8 (1.999) wins
    assert Sampler(temperature=0, repeat_penalty=2.0).sample(LOGITS, history=[0]) == 8
    # negative logits are multiplied: token 9 (-8) stays last
    pen = Sampler(repeat_penalty=2.0).penalize(LOGITS, [9, 4])
    assert pen[9] == -16.0 and pen[4] == 0.0


def test_seeded_reproducibility():
    s1, s2, s3 = Sampler(seed=5, top_k=0), Sampler(seed=5, top_k=0), Sampler(seed=6, top_k=0)
    a = [s1.sample(LOGITS) for _ in range(50)]
    assert a == [s2.sample(LOGITS) for _ in range(50)]
    assert a != [s3.sample(LOGITS) for _ in range(50)]


@pytest.mark.parametrize("bad", [dict(temperature=float("nan")), dict(top_k=2.5), dict(top_p=-0.1), dict(top_p=1.5),
                                 dict(min_p=2),
                                 dict(repeat_penalty=0), dict(repeat_last_n=-2)])
def test_invalid_parameters(bad):
    with pytest.raises(ValueError):
        Sampler(**bad)


def test_negative_temperature_is_greedy_and_negative_top_k_off_as_in_llama_cpp():
    """llama.cpp's sampler (llama-cli, llama-server): temperature <= 0 samples greedily, top_k <= 0
    keeps every token (both were refused). llama-cpp-python's negative temperature is the API's
    (test_chat_api.py)."""
    best = int(np.argmax(LOGITS))
    assert all(Sampler(temperature=-1, seed=s).sample(LOGITS) == best for s in range(20))

    def draws(top_k):
        smp = Sampler(seed=4, top_k=top_k)
        return [smp.sample(LOGITS) for _ in range(60)]
    assert draws(-5) == draws(0) and len(set(draws(0))) > 2


def test_seed_minus_one_is_random_as_in_llama_cpp():
    """llama.cpp's -s -1 and llama-cpp-python's seed=-1 (LLAMA_DEFAULT_SEED) draw a random seed;
    other negative seeds are refused naming the argument."""
    draws = [[Sampler(seed=-1, top_k=0).sample(LOGITS) for _ in range(40)] for _ in range(2)]
    assert draws[0] != draws[1]          # two fresh random streams (equal with probability ~1e-20)
    with pytest.raises(ArgumentError, match="seed"):
        Sampler(seed=-2)
    with pytest.raises(ArgumentError, match="seed"):
        Sampler(seed="7")


def test_top_p_zero_is_greedy():
    """llama.cpp keeps one token when top_p = 0: sampling is the argmax at any temperature."""
    s = Sampler(temperature=1.5, top_k=0, top_p=0.0, min_p=0.0, seed=3)
    assert {s.sample(LOGITS) for _ in range(200)} == {0}


@pytest.mark.parametrize("last_n", [6, 2, -1])
def test_frequency_and_presence_penalties(last_n):
    """logit -= count * frequency + presence (counted over the last repeat_last_n tokens; -1: all
    of them, as llama.cpp's --repeat-last-n -1), after the repetition penalty: checked against the
    formula on a history with repeats."""
    history = [1, 1, 1, 3, 9, 9, 2]
    s = Sampler(repeat_penalty=1.3, frequency_penalty=0.25, presence_penalty=0.5, repeat_last_n=last_n)
    out = s.penalize(LOGITS, history)
    want = LOGITS.astype(np.float64).copy()
    window = history if last_n == -1 else history[-last_n:]
    for t in set(window):
        v = want[t]
        v = v / 1.3 if v > 0 else v * 1.3
        want[t] = v - window.count(t) * 0.25 - 0.5
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert LOGITS[1] == np.float32(1.5)  # the caller's array is left alone
    np.testing.assert_array_equal(Sampler(repeat_penalty=1.3, repeat_last_n=0).penalize(LOGITS, history), LOGITS)


def test_masked_tokens_are_never_sampled():
    """A grammar's mask sets logits to -inf: those tokens never come out, whatever the filters."""
    logits = LOGITS.copy()
    allowed = np.array([3, 5, 7])
    mask = np.full(logits.shape, -np.inf, np.float32)
    mask[allowed] = 0
    for kw in (dict(top_k=0, top_p=1.0, min_p=0.0), dict(top_k=40, top_p=0.95, min_p=0.05), dict(temperature=0)):
        s = Sampler(seed=1, **kw)
        got = {s.sample(logits + mask) for _ in range(300)}
        assert got <= set(allowed.tolist()) and got
