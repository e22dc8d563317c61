"""The fuzz campaign's short seeded run (marker ``fuzz``: not in the default run; .ci/run runs it as its
own step). Each target draws inputs for LLAMIX_FUZZ_SECONDS (default 12) from the seed
LLAMIX_FUZZ_SEED (default 0), each run in a child process with a time and memory limit; the test
fails on any crash, hang, or rejection that is not a LlamixError / OSError naming the file (or, for
the argument targets, the argument). Each new kind of fault is saved under tests/fuzz/corpus/
(commit it: test_fuzz_corpus.py replays it in every default run)."""
from __future__ import annotations

import os

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is in the 'test' extra")

import fuzz_harness as fh  # noqa: E402

SECONDS = float(os.environ.get("LLAMIX_FUZZ_SECONDS", "12"))
SEED = int(os.environ.get("LLAMIX_FUZZ_SEED", "0"))


@pytest.fixture(scope="module")
def runner():
    with fh.Runner() as r:
        yield r


@pytest.mark.fuzz
@pytest.mark.parametrize("target", fh.TARGETS)
def test_fuzz(target, runner):
    stats = fh.fuzz(target, SECONDS, SEED, runner=runner)
    print(stats.report())
    assert stats.tried > 0
    assert stats.n_bad == 0, stats.report()
