"""The low-bit quantizers against ggml's own (ggml_quantize_chunk from llama-cpp-python, in a
child process), with the same importance vector: our error, weighted as llama.cpp weights it, is
no larger than llama.cpp's; Q4_1 without importance is byte-identical."""
from __future__ import annotations

import numpy as np
import pytest

from llamix.quant import quantize

import llama_cpp_peer
from test_quant_lowbit import TYPES, _deq, _ggml_weights, _weights, _werr


@pytest.mark.peers
@pytest.mark.parametrize("qtype", TYPES + ["q4_0w", "q5_0w", "q5_1w"])
@pytest.mark.parametrize("weighted", [False, True])
def test_no_worse_than_llama_cpp(qtype, weighted):
    """Same matrix, same importance vector: our RMS error, weighted as llama.cpp weights it, is at
    most llama.cpp's (measured 0.85-1.0x of it)."""
    llama_cpp_peer.require()
    if qtype.endswith("w"):  # the fallback types: weighted by us only with an importance matrix
        if not weighted:
            pytest.skip("Q4_0/Q5_0/Q5_1 without an importance matrix are ggml's reference (test_quant_formats.py)")
        qtype = qtype[:-1]
    w, imp = _weights(rows=64, seed=3)
    im = imp if weighted else None
    theirs = llama_cpp_peer.ggml_quantize_in_child(w, qtype, im)
    ours = quantize(w, qtype, imatrix=im).data
    assert ours.shape == theirs.shape
    metric = _ggml_weights(w, imp, qtype) if weighted else np.ones_like(w)
    e_ours, e_theirs = _werr(_deq(ours, qtype, w.shape), w, metric), _werr(_deq(theirs, qtype, w.shape), w, metric)
    assert e_ours <= e_theirs * 1.0005, (e_ours, e_theirs)
    if qtype == "q4_1" and not weighted:
        np.testing.assert_array_equal(ours, theirs)  # both are ggml's reference quantizer
