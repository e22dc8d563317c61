"""Every input the fuzz campaign ever found failing (tests/fuzz/corpus/<target>/*.json: the files, the
arguments, and what went wrong when it was found), replayed in a child process with the fuzz
limits: each must now be accepted, or refused with a LlamixError / OSError naming the file."""
from __future__ import annotations

import pytest

import fuzz_harness as fh

CASES = fh.corpus_cases()


@pytest.fixture(scope="module")
def runner():
    with fh.Runner() as r:
        yield r


@pytest.mark.parametrize("target, path", CASES, ids=[f"{t}/{p.stem}" for t, p in CASES])
def test_corpus_case(target, path, runner):
    case = fh.load_case(path)
    result = runner.run(target, case)
    assert result["outcome"] in fh.GOOD, (
        f"{path.name} ({case['note']}): found as {case['found'].get('outcome')} {case['found'].get('type')} "
        f"at {case['found'].get('where')}; now {result['outcome']} {result.get('type')} at {result.get('where')}: "
        f"{result.get('message')}\n{result.get('traceback', '')}")


def test_corpus_is_not_empty():
    assert len(CASES) > 0 and {t for t, _ in CASES} <= set(fh.TARGETS)
