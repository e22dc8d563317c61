"""llamix._runtime.idle_blas_threads: OpenBLAS's spinning workers are stopped before llamix's
kernels run (Model.eval), and numpy's BLAS keeps working (it restarts them). The speed effect is
measured in bench/blas_spin.py, not here."""
from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from llamix._runtime import _openblas_shutdowns, idle_blas_threads

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self")


def n_tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def test_stops_openblas_workers_and_numpy_still_works():
    if not _openblas_shutdowns():
        pytest.skip("numpy is not linked to OpenBLAS here")
    if threading.active_count() != 1:
        pytest.skip("another Python thread is alive (the guard then does nothing)")
    rng = np.random.default_rng(0)
    a, x = rng.standard_normal((2048, 2048)), rng.standard_normal(2048)
    a @ x  # large enough for OpenBLAS to start its workers
    before = n_tasks()
    idle_blas_threads()
    after = n_tasks()
    if before == after:
        pytest.skip("OpenBLAS runs single-threaded here (one core or a thread limit)")
    assert after < before
    exact = np.array([np.dot(row, x) for row in a[:8]])  # row by row: no threaded call
    np.testing.assert_allclose((a @ x)[:8], exact, rtol=1e-12)


def test_does_nothing_while_another_python_thread_lives():
    if not _openblas_shutdowns():
        pytest.skip("numpy is not linked to OpenBLAS here")
    a = np.random.default_rng(1).standard_normal((2048, 2048))
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        a @ np.ones(2048)
        before = n_tasks()
        idle_blas_threads()
        assert n_tasks() == before
    finally:
        stop.set()
        t.join()
