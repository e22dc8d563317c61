"""Decode (one token) reads two row groups of a packed weight at once (run_row_group_pairs and the
kernels' GemvPair): the results must be the scalar reference's bits, for every packed type, any
row count (pairs, an odd last group, a short last group alone or in a pair, a group of 8 rows or
fewer), any thread count, and in matmul_many next to weights of other types. The `isa` fixture runs
every variant against the scalar reference, which has no pair kernels: AVX-512 pairs every type,
AVX2 the 32-block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL; its super-block types decode a lone
group one 8-row half at a time)."""
import numpy as np
import pytest

import llamix
from helpers import using_isa, using_threads

PACKED_TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl", "q2_k", "q3_k", "iq4_xs", "q4_k", "q5_k", "q6_k"]


def _scalar(x, qw):
    with using_isa("scalar"):
        return llamix.matmul(x, llamix.QuantizedTensor(qw.data, qw.info, qw.shape))


def _check_one_token(qtype, rows, k, seed, thread_counts):
    """One token against random weights of scale varying by row: every thread count gives the scalar
    reference's bits (the output is prefilled with NaN so an unwritten row shows)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((rows, k)) * rng.uniform(0.1, 3, (rows, 1))).astype(np.float32)
    qw = llamix.quantize(w, qtype)
    x = rng.standard_normal((1, k)).astype(np.float32)
    ref = _scalar(x, qw)
    for t in thread_counts:
        with using_threads(t):
            out = np.full((1, rows), np.nan, np.float32)
            np.testing.assert_array_equal(llamix.matmul(x, qw, out=out), ref)


@pytest.mark.parametrize("qtype", PACKED_TYPES)
@pytest.mark.parametrize("rows", [5, 16, 20, 32, 47, 60, 80, 97, 130])
def test_one_token_bit_identical_to_scalar(isa, qtype, rows):
    _check_one_token(qtype, rows, 512, seed=rows, thread_counts=[1, 2, 3])


BLOCK32_TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl"]


@pytest.mark.parametrize("qtype", BLOCK32_TYPES)
@pytest.mark.parametrize("k", [32, 96, 544])
def test_one_token_odd_block_counts(isa, qtype, k):
    """Block counts that a decode reading two blocks of a group in a row (AVX2 Q8_0) ends with one."""
    _check_one_token(qtype, 37, k, seed=k, thread_counts=[1, 2])


def test_one_token_matmul_many_mixed_types(isa, threads):
    rng = np.random.default_rng(5)
    k = 256
    ws = [llamix.quantize(rng.standard_normal((rows, k)).astype(np.float32), qt)
          for rows, qt in [(64, "q4_0"), (33, "q4_k"), (16, "f16"), (49, "q8_0"), (80, "q6_k"), (17, "iq4_xs")]]
    x = rng.standard_normal((1, k)).astype(np.float32)
    outs = [np.full((1, w.shape[0]), np.nan, np.float32) for w in ws]
    llamix.matmul_many(x, ws, outs)
    for w, y in zip(ws, outs):  # float weights sum in an order of each ISA's own
        np.testing.assert_array_equal(y, llamix.matmul(x, w) if w.info.name == "f16" else _scalar(x, w))
