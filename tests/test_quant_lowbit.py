"""The low-bit quantizers (Q4_1, Q2_K, Q3_K, IQ4_NL, IQ4_XS) and importance-weighted K-quants.

Oracles: gguf.quants (its Q4_1 quantizer: identical bytes; its dequantizers read every block we
write); ggml's own quantizer in test_quant_lowbit_peers.py. No llama.cpp here: the sanitizer run
(test_sanitizers.py) runs this file.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from llamix.errors import ArgumentError
from llamix.quant import quantize

TYPES = ["q4_1", "q2_k", "q3_k", "iq4_nl", "iq4_xs", "q4_k", "q5_k", "q6_k"]
# relative RMS error of Gaussian-ish weights, unit weights (a sanity bound, far above what we reach)
BOUND = {"q4_1": 0.1, "q2_k": 0.33, "q3_k": 0.19, "iq4_nl": 0.095, "iq4_xs": 0.095, "q4_k": 0.09, "q5_k": 0.045,
         "q6_k": 0.022}


def _weights(rows=48, k=1024, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, k)) * np.exp(0.3 * rng.standard_normal((rows, k)))  # heavier tails
    imp = np.exp(1.5 * rng.standard_normal(k))  # activations' second moments span decades
    return w.astype(np.float32), imp.astype(np.float32)


def _deq(data: np.ndarray, qtype: str, shape) -> np.ndarray:
    return quants.dequantize(data.reshape(shape[0], -1), GGMLQuantizationType[qtype.upper()]).reshape(shape)


def _werr(d, w, imp) -> float:
    return float(np.sqrt(np.sum(imp * (d.astype(np.float64) - w) ** 2) / np.sum(imp * w.astype(np.float64) ** 2)))


# llama.cpp's error weights for an importance vector (ggml-quants.c, quantize_row_*_impl):
# importance * sqrt(sigma2 + x^2), sigma2 = factor * mean(x^2) over a span; Q6_K: importance alone
_SPAN = {"q2_k": (256, 1), "q3_k": (256, 2), "q4_k": (256, 2), "q5_k": (256, 2), "iq4_xs": (256, 2),
         "iq4_nl": (32, 2), "q4_0": (None, 1), "q4_1": (None, 1), "q5_0": (None, 1), "q5_1": (None, 1)}


def _ggml_weights(w, imp, qtype) -> np.ndarray:
    if qtype == "q6_k":
        return np.broadcast_to(imp.astype(np.float64), w.shape)
    span, factor = _SPAN[qtype]
    span = span or w.shape[1]
    x = w.astype(np.float64).reshape(w.shape[0], -1, span)
    s2 = factor * np.mean(x * x, axis=-1, keepdims=True)
    return (imp.astype(np.float64).reshape(1, -1, span) * np.sqrt(s2 + x * x)).reshape(w.shape)


def _ours(w, qtype, imp):
    return quantize(w, qtype, imatrix=imp).data


def test_q4_1_reference_bytes_equal_gguf():
    w, _ = _weights(k=512)
    w[3] = 0.0
    w[5, :32] = 1.5  # a constant block
    np.testing.assert_array_equal(quantize(w, "q4_1").data.reshape(-1), quants.quantize(w, GGMLQuantizationType.Q4_1).reshape(-1))


@pytest.mark.parametrize("qtype", TYPES)
def test_round_trip_through_gguf(qtype):
    w, imp = _weights()
    ones = np.ones_like(imp)
    plain = _deq(quantize(w, qtype).data, qtype, w.shape)
    weighted = _deq(_ours(w, qtype, imp), qtype, w.shape)
    assert _werr(plain, w, ones) < BOUND[qtype]
    # the importance-weighted search lowers the error it weights
    metric = _ggml_weights(w, imp, qtype)
    assert _werr(weighted, w, metric) < _werr(plain, w, metric)
    assert _werr(weighted, w, imp) < _werr(plain, w, imp)


@pytest.mark.parametrize("qtype", TYPES)
def test_special_rows(qtype):
    k = 512
    w = np.zeros((4, k), np.float32)
    w[1] = 3.0                                 # constant
    w[2, ::7] = -1e4                           # sparse, large
    w[3] = np.linspace(-1, 1, k)
    imp = np.ones(k, np.float32)
    imp[: k // 2] = 0.0                        # half the columns never activated
    for im in (None, imp):
        d = _deq(quantize(w, qtype, imatrix=im).data, qtype, w.shape)
        assert np.all(np.isfinite(d))
        np.testing.assert_array_equal(d[0], 0.0)
        assert np.allclose(d[3, k // 2:], w[3, k // 2:], atol=0.2)


def test_bad_input():
    w, imp = _weights(k=512)
    with pytest.raises(ArgumentError, match="imatrix must be a vector of 512"):
        quantize(w, "q3_k", imatrix=imp[:100])
    with pytest.raises(ArgumentError, match="non-negative"):
        quantize(w, "iq4_xs", imatrix=-imp)
    with pytest.raises(ArgumentError, match="multiple of the q2_k block size 256"):
        quantize(w[:, :96], "q2_k")
    w16 = w.astype(np.float16)
    np.testing.assert_array_equal(quantize(w16, "iq4_nl").data, quantize(w16.astype(np.float32), "iq4_nl").data)
