"""The child-process runner (child_process.py) that the llama.cpp peer tests and the benchmarks
use: results and exceptions come back, and a crash, an exit or a hang of the child is an
exception naming the function, the exit status and the child's output, never the caller's death."""
from __future__ import annotations

import os
import signal
import time

import pytest

from child_process import Child, ChildCrashed, run_in_child


def _double(x):
    return 2 * x


def _raise():
    raise KeyError("missing in the child")


def _segfault():
    print("decoding...", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)


def _exit(code):
    os._exit(code)


def _sleep(s):
    time.sleep(s)


def _pid():
    return os.getpid()


def test_result_and_exception_come_back():
    assert run_in_child(_double, 21) == 42
    with pytest.raises(KeyError, match="missing in the child") as e:
        run_in_child(_raise)
    assert "in the child process" in str(e.value.__cause__) and "_raise" in str(e.value.__cause__)


def test_segfault_is_an_exception_with_signal_and_stack():
    with pytest.raises(ChildCrashed) as e:
        run_in_child(_segfault)
    msg = str(e.value)
    assert "test_child_process._segfault died: killed by signal 11 (SIGSEGV)" in msg
    assert "decoding..." in msg  # the child's own output
    assert "Fatal Python error: Segmentation fault" in msg and "in _segfault" in msg  # faulthandler's stack


def test_exit_code_and_timeout():
    with pytest.raises(ChildCrashed, match="died: exit code 3"):
        run_in_child(_exit, 3)
    t = time.monotonic()
    with pytest.raises(ChildCrashed, match="timed out after 1 s"):
        run_in_child(_sleep, 60, timeout=1)
    assert time.monotonic() - t < 30


def test_one_child_serves_many_calls_and_restarts_after_a_crash():
    with Child() as c:
        first = c.call(_pid)
        assert [c.call(_double, i) for i in range(5)] == [0, 2, 4, 6, 8]
        assert c.call(_pid) == first != os.getpid()
        with pytest.raises(ChildCrashed):
            c.call(_segfault)
        assert c.call(_pid) != first  # a new process
