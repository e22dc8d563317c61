"""Samplers: greedy, temperature, top-k, top-p, min-p and repetition penalty, checked
statistically against distributions computed here from the definitions (float64 numpy), and
seeded reproducibility."""
from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(min_p=2),
                                 dict(repeat_penalty=0)])
def test_invalid_parameters(bad):
    with pytest.raises(ValueError):
        Sampler(**bad)
