"""The persistent thread pool: many tiny parallel regions, resizing while idle, determinism,
and calls from several Python threads at once (the pool serialises them)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import llamix
from llamix import _C


@pytest.fixture(autouse=True)
def _restore_threads():
    before = _C.threads()
    yield
    llamix.set_threads(before)


def test_many_tiny_calls_stay_correct():
    """Thousands of one-token calls (as decoding makes): each wakes the pool and must neither hang
    nor mix up results. 48 rows = 3 groups -> 3 tasks, so both threads take part."""
    rng = np.random.default_rng(0)
    qw = llamix.quantize(rng.standard_normal((48, 64)).astype(np.float32), "q4_0")
    xs = rng.standard_normal((64, 64)).astype(np.float32)
    llamix.set_threads(2)
    expected = llamix.matmul(xs, qw)  # rows are independent: one call with all tokens
    p = qw.prepared()
    for i in range(3000):
        j = i % 64
        np.testing.assert_array_equal(p.matmul(xs[j:j + 1])[0], expected[j])


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("prepared", [True, False])
def test_decode_lanes_cover_every_row_group(threads, prepared):
    """Decode gives each thread one lane of row groups, and a thread that finishes early takes
    groups from the ends of the others' lanes: every group must be computed (no NaN left in the
    output) and equal the prefill's answer, whichever thread took it. More threads than cores make
    the OS interleave them, so lanes are finished by helpers in many different ways."""
    rng = np.random.default_rng(7)
    rows, k = 16 * 157 + 5, 64
    qw = llamix.quantize(rng.standard_normal((rows, k)).astype(np.float32), "q4_0")
    xs = rng.standard_normal((40, k)).astype(np.float32)
    llamix.set_threads(threads)
    expected = llamix.matmul(xs, qw)  # 40 tokens: the prefill path
    p = qw.prepared()
    # prepared: repacked once; raw GGUF bytes: each group is repacked by whichever thread takes it
    decode = (lambda x, out: p.matmul(x, out)) if prepared else (lambda x, out: _C.matmul(x, qw.data, qw.info.gguf_id, k, out))
    out = np.empty((1, rows), np.float32)
    for i in range(400):
        out.fill(np.nan)
        j = i % len(xs)
        decode(xs[j:j + 1], out)
        np.testing.assert_array_equal(out[0], expected[j])


def test_set_threads_while_idle():
    rng = np.random.default_rng(1)
    qw = llamix.quantize(rng.standard_normal((200, 256)).astype(np.float32), "q8_0")
    x = rng.standard_normal((5, 256)).astype(np.float32)
    llamix.set_threads(1)
    expected = llamix.matmul(x, qw)
    for n in [2, 3, 1, 4, 2, 2, 1]:
        llamix.set_threads(n)
        assert llamix.cpu_info()["threads"] == n
        np.testing.assert_array_equal(llamix.matmul(x, qw), expected)
    llamix.set_threads(None)  # back to the default: LLAMIX_THREADS, else one per physical core
    default = int(os.environ.get("LLAMIX_THREADS", "0")) or _C.physical_cores()
    assert llamix.cpu_info()["threads"] == default


def test_set_threads_rejects_negative():
    with pytest.raises(ValueError):
        llamix.set_threads(-1)


def test_set_threads_rejects_more_than_eight_per_cpu():
    # 4096 spinning workers on 2 CPUs held a load average of 1200: refused, naming the limit
    limit = 8 * len(os.sched_getaffinity(0))
    assert _C.max_threads() == limit
    with pytest.raises(llamix.ArgumentError, match=f"at most {limit}"):
        llamix.set_threads(limit + 1)
    with pytest.raises(ValueError, match=f"at most {limit}"):
        _C.set_threads(limit + 1)


@pytest.mark.parametrize("n", [1, 3, 64])
def test_bit_identical_for_any_thread_count(isa, n):
    rng = np.random.default_rng(n)
    qw = llamix.quantize(rng.standard_normal((333, 320)).astype(np.float32), "q4_0")
    x = rng.standard_normal((n, 320)).astype(np.float32)
    outs = []
    for t in [1, 2, 3, 5]:
        llamix.set_threads(t)
        outs.append(llamix.matmul(x, qw))
    for y in outs[1:]:
        np.testing.assert_array_equal(y, outs[0])


def test_concurrent_python_threads():
    """Kernels release the GIL; parallel regions from several Python threads take turns."""
    rng = np.random.default_rng(2)
    qw = llamix.quantize(rng.standard_normal((96, 128)).astype(np.float32), "q4_0")
    xs = [rng.standard_normal((3, 128)).astype(np.float32) for _ in range(16)]
    llamix.set_threads(2)
    expected = [llamix.matmul(x, qw) for x in xs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda x: llamix.matmul(x, qw), xs * 8))
    for i, y in enumerate(got):
        np.testing.assert_array_equal(y, expected[i % 16])


@pytest.mark.parametrize("streams", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("nbytes", [8, 64 * 37 + 24, (4 << 20) - 8, (9 << 20) + 4096 + 8 * 5])
def test_stream_read_reads_every_word(threads, streams, nbytes):
    """The bandwidth probe's checksum is the XOR of every 64-bit word, whatever the split into
    4 MiB pieces, per-thread lanes and interleaved streams (a word skipped or read twice flips it)."""
    rng = np.random.default_rng(nbytes + streams)
    words = rng.integers(0, 2**63, nbytes // 8, dtype=np.uint64)
    assert _C.stream_read(words, streams) == int(np.bitwise_xor.reduce(words))
    words[-1] ^= 1 << 40  # the tail word counts
    assert _C.stream_read(words, streams=streams) == int(np.bitwise_xor.reduce(words))


def test_stream_read_rejects_other_stream_counts():
    with pytest.raises(ValueError):
        _C.stream_read(np.zeros(64, np.uint64), 3)
