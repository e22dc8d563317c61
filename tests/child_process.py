"""Run a function in a fresh Python process, so that a crash of native peer code (a segfault, an
abort, a hang) becomes an exception in the caller instead of the caller's death.

    from child_process import Child, run_in_child

    theirs = run_in_child(llama_cpp_peer.run_model, path, logits=[ids])   # one call, one process
    with Child() as c:                                                   # several calls, one process
        c.call(f, 1)
        c.call(g, 2)

The child is a new interpreter (``subprocess``) with the caller's import path and environment,
nothing else: the function must live at the top level of an importable module (not ``__main__``),
and arguments and results travel by pickle over a socket pair. The child's stdout and stderr go
to a log file from its first instruction on; when it dies or hangs, the exception
(``ChildCrashed``) names the function, the exit code or signal and the log's tail, which holds the
Python stack that ``faulthandler`` writes on SIGSEGV / SIGABRT / SIGBUS. An exception raised inside
the function is raised again in the caller, with the child's traceback as its cause.

Shared by the tests and the benchmarks (bench/ puts tests/ on its import path).
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path

DEFAULT_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 40


class ChildCrashed(RuntimeError):
    """The child process died or hung before answering."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in the child (shown as the re-raised one's cause)."""

    def __str__(self):
        return self.args[0]


def _describe_exit(code) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _serve(fd: int) -> None:
    """The child's loop: answer calls until the parent closes its end."""
    conn = Connection(fd)
    while True:
        try:
            func, args, kwargs = conn.recv()
        except EOFError:
            return
        try:
            result = ("ok", func(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - everything goes back to the caller
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            try:
                pickle.dumps(e)
                result = ("err", e, tb)
            except Exception:  # noqa: BLE001 - an unpicklable exception travels as text
                result = ("err", RuntimeError(f"{type(e).__name__}: {e}"), tb)
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(result)


_BOOT = "import sys; sys.path[:0] = {path!r}; import child_process; child_process._serve({fd})"


def _name(func) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class Child:
    """One worker process; ``call`` runs a function in it (started on first use if need be).
    Use as a context manager; after a crash the next ``call`` starts a new process."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S):
        self.timeout = timeout
        self._proc = None
        self._pid = None
        self._conn = None
        self._log = None

    def __enter__(self) -> "Child":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        fd, self._log = tempfile.mkstemp(prefix="llamix-child-", suffix=".log")
        self._conn, child_conn = Pipe()
        path = [str(Path(__file__).resolve().parent)] + [p for p in sys.path if p]
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-X", "faulthandler", "-c", _BOOT.format(path=path, fd=child_conn.fileno())],
                stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT, pass_fds=(child_conn.fileno(),))
            self._pid = self._proc.pid
        finally:
            os.close(fd)
            child_conn.close()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = Path(self._log).read_text(errors="replace")
        except (OSError, TypeError):
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def _crashed(self, what: str, why: str) -> ChildCrashed:
        self.close(kill=True, keep_log=True)
        tail = self.log_tail()
        msg = f"{what} {why} in its child process (pid {self._pid})"
        msg += f"\n--- child stdout/stderr, last {LOG_TAIL_LINES} lines ---\n{tail}" if tail else "; it wrote nothing"
        self._drop_log()
        return ChildCrashed(msg)

    def _gone(self) -> str:
        """The child's exit status, once it has ended (waiting a moment for it)."""
        try:
            code = self._proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        return _describe_exit(code)

    def call(self, func, *args, timeout: float | None = None, **kwargs):
        """``func(*args, **kwargs)`` in the child; its result, its exception, or ChildCrashed."""
        __tracebackhide__ = True  # pytest: show the test's line and the message, not this loop
        if getattr(func, "__module__", None) == "__main__":
            raise ValueError(f"{_name(func)}: a function for the child must live in an importable module")
        if self._proc is None:
            self.start()
        what, limit = _name(func), self.timeout if timeout is None else timeout
        try:
            self._conn.send((func, args, kwargs))
        except OSError:
            raise self._crashed(what, f"could not be sent: the child is gone ({self._gone()})") from None
        deadline = time.monotonic() + limit
        while not self._conn.poll(0.05):
            if self._proc.poll() is not None and not self._conn.poll(0):
                raise self._crashed(what, f"died: {self._gone()}")
            if time.monotonic() > deadline:
                raise self._crashed(what, f"timed out after {limit:.0f} s (killed)")
        try:
            answer = self._conn.recv()
        except (EOFError, OSError):  # the pipe closed: the child ended without answering
            raise self._crashed(what, f"died: {self._gone()}") from None
        if answer[0] == "ok":
            return answer[1]
        _, exc, tb = answer
        raise exc from RemoteTraceback(f"\n--- in the child process (pid {self._pid}) ---\n{tb}")

    def close(self, kill: bool = False, keep_log: bool = False) -> None:
        """End the child: close its pipe and let it exit (kill it if it does not, or at once)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if not kill:
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if not keep_log:
            self._drop_log()

    def _drop_log(self) -> None:
        if self._log is not None:
            try:
                os.unlink(self._log)
            except OSError:
                pass
            self._log = None


def run_in_child(func, *args, timeout: float = DEFAULT_TIMEOUT_S, **kwargs):
    """``func(*args, **kwargs)`` in a fresh process; its result, its exception, or ChildCrashed."""
    __tracebackhide__ = True
    with Child(timeout=timeout) as child:
        return child.call(func, *args, **kwargs)
