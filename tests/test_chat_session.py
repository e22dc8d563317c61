"""Multi-turn chat: ChatSession keeps the conversation in the KV cache and evaluates only the new
turn (counted, and the reply checked against the same prompt run from an empty cache), drops the
oldest turns when the context fills; ``llamix chat`` through pipes and through a pseudo-terminal
(streaming, /reset, /exit, Ctrl-C stops a reply and not the session, Ctrl-D ends it)."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

import llamix
from llamix import Tokenizer
from llamix.chat_format import builtin_format
from llamix.model.chat import ChatSession

PYTHON_DIR = Path(llamix.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(assets):
    tok = Tokenizer.from_file(assets / "vocab" / "ggml-vocab-qwen2.gguf")
    ck = llamix.random_checkpoint("tiny", "q8_0", tokenizer=tok, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                                  hidden_dim=128, seed=11)
    ck.chat_template = builtin_format("chatml").template
    return llamix.Model(ck, n_ctx=384)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "chatml-random.gguf"
    llamix.export_gguf(model, path, qtype="q8_0")
    return path


def _turn_delta_tokens(model, user: str) -> int:
    """Tokens a ChatML turn adds after the previous reply: end of that turn, the user's message,
    the assistant header."""
    delta = f"<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    return len(model.tokenize(delta, add_special=False, parse_special=True))


def test_each_turn_evaluates_only_itself(model):
    no_eos = {e: -1e4 for e in model.eos_ids}   # replies run to max_tokens: their length is known
    s = ChatSession(model, system_prompt="You are terse.")
    users = ["Hello!", "What is two plus two?", "Thanks, and three plus three?", "Bye."]
    for i, u in enumerate(users):
        reply = "".join(s.send(u, max_tokens=12, temperature=0.9, seed=i, logit_bias=no_eos))
        st = s.stats
        assert st.generated == 12 and st.finish_reason == "length"
        if i == 0:
            assert st.prompt_tokens == st.prompt_total
        else:  # the previous reply's last token (never evaluated) and this turn's text
            assert st.prompt_tokens == 1 + _turn_delta_tokens(model, u), i
        assert s.messages[-1] == {"role": "assistant", "content": reply}
    assert [m["role"] for m in s.messages] == ["system"] + ["user", "assistant"] * 4


def test_reply_equals_a_fresh_run_of_the_same_prompt(model):
    """The cached conversation gives the reply a fresh cache gives for the same prompt ids."""
    s = ChatSession(model)
    "".join(s.send("Tell me a story.", max_tokens=10, temperature=0))
    ids = s.prompt_ids(s.messages + [{"role": "user", "content": "Another one."}])
    second = "".join(s.send("Another one.", max_tokens=10, temperature=0))
    assert s.stats.prompt_tokens < len(ids) / 2
    model.reset()
    fresh = model.create_completion(ids, max_tokens=10, temperature=0, stop=["<|im_end|>"])
    assert fresh["choices"][0]["text"] == second


def test_context_full_drops_the_oldest_turns(model):
    s = ChatSession(model, system_prompt="System prompt stays.", reply_room=64)
    long = "word " * 60
    dropped = 0
    for i in range(6):
        "".join(s.send(f"{i}: {long}", max_tokens=8, temperature=0))
        dropped += s.stats.dropped_turns
        assert s.stats.prompt_total + 8 <= model.n_ctx
    assert dropped > 0
    assert s.messages[0] == {"role": "system", "content": "System prompt stays."}
    assert s.messages[1]["role"] == "user" and not s.messages[1]["content"].startswith("0:")
    with pytest.raises(ValueError, match="too long"):
        s.send("x " * 2000)


def test_reset_and_interrupted_reply(model):
    s = ChatSession(model, system_prompt="S")
    it = s.send("Count to a hundred.", max_tokens=50, temperature=0)
    next(it)
    it.close()                     # the reader stopped early: what was said is kept
    assert s.messages[-1]["role"] == "assistant" and s.stats.finish_reason == "stop"
    "".join(s.send("Go on.", max_tokens=5, temperature=0))
    assert s.stats.prompt_tokens < s.stats.prompt_total
    s.reset()
    assert s.messages == [{"role": "system", "content": "S"}]


def test_a_message_that_is_not_unicode_is_named_with_its_own_position(model):
    """Bytes that were not UTF-8 (a lone surrogate) are refused naming the message and the
    position in it, not a position in the rendered prompt; the session is unchanged."""
    s = ChatSession(model, system_prompt="S")
    with pytest.raises(llamix.ArgumentError, match=r"message: not valid Unicode: a lone surrogate U\+DCFF at position 3"):
        s.send("hi \udcff there")
    assert s.messages == [{"role": "system", "content": "S"}]


# --- the command -----------------------------------------------------------------------------------
def _env():
    return {**os.environ, "PYTHONPATH": str(PYTHON_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "LLAMIX_THREADS": "1"}


def test_chat_command_through_pipes(model, model_file):
    lines = "Hello\nSecond message\n/reset\n/help\n/hlep\nThird\n/exit\nnever read\n"
    r = subprocess.run([sys.executable, "-m", "llamix.cli", "chat", "-m", str(model_file), "-n", "6", "--stats",
                        "-s", "3", "-sys", "Be brief.", "-c", "384"], input=lines, capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    stats = re.findall(r"\[prompt: (\d+) of (\d+) tokens evaluated", r.stderr)
    assert len(stats) == 3 and "[conversation reset]" in r.stderr   # /help and /hlep are no turns
    assert "/help: this line" in r.stderr and "[/hlep: not a command; /reset:" in r.stderr
    (n1, t1), (n2, t2), (n3, t3) = [(int(a), int(b)) for a, b in stats]
    assert n1 == t1 and n2 < t2 and n3 < t3   # turn 2 reuses turn 1; after /reset the system prompt is reused
    assert t3 < t2
    assert r.stdout.count("\n") == 3          # one line per reply


class _Terminal:
    """The master side of a pseudo-terminal: expect() reads until a pattern and consumes the
    output up to its end (what follows stays for the next expect)."""

    def __init__(self, fd: int):
        self.fd, self.buf = fd, b""

    def expect(self, pattern: bytes, timeout: float = 60.0) -> bytes:
        end = time.monotonic() + timeout
        while pattern not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; got {self.buf[-500:]!r}")
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the terminal closed while waiting for {pattern!r}; got {self.buf[-500:]!r}")
                self.buf += chunk
        i = self.buf.index(pattern) + len(pattern)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def wait_for_bytes(self, n: int, timeout: float = 60.0) -> None:
        """Read until at least n bytes wait unconsumed."""
        end = time.monotonic() + timeout
        while len(self.buf) < n and time.monotonic() < end:
            if select.select([self.fd], [], [], max(0.0, end - time.monotonic()))[0]:
                try:
                    self.buf += os.read(self.fd, 4096)
                except OSError:
                    break
        assert len(self.buf) >= n, f"no streamed reply; got {self.buf[-500:]!r}"


def test_chat_command_in_a_terminal(model_file):
    """Through a pseudo-terminal: the prompt, a streamed reply, Ctrl-C stopping a long reply with
    the session going on, Ctrl-D ending it with exit code 0."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: run the chat on the terminal
        os.execve(sys.executable, [sys.executable, "-m", "llamix.cli", "chat", "-m", str(model_file), "--temp", "1.5",
                                   "--stats", "-c", "2048"], _env())
    try:
        term = _Terminal(fd)
        term.expect(b"> ")
        os.write(fd, b"Write something very long\n")
        term.expect(b"very long")                      # the echo of the line typed
        term.wait_for_bytes(40)                        # the reply is being streamed (it runs to the full context)
        os.write(fd, b"\x03")                          # Ctrl-C
        out = term.expect(b"> ")
        assert b"[reply stopped]" in out and b"tokens evaluated" in out
        os.write(fd, b"/reset\n")
        term.expect(b"[conversation reset]")
        term.expect(b"> ")
        # Ctrl-D at the prompt, again every half second: one typed before readline has the
        # terminal is lost (readline flushes pending input when it takes it), on a loaded machine too
        end, next_eof = time.monotonic() + 60, 0.0
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < end:
            if time.monotonic() >= next_eof:
                try:
                    os.write(fd, b"\x04")
                except OSError:  # the chat has closed the terminal
                    pass
                next_eof = time.monotonic() + 0.5
            time.sleep(0.05)
        assert done[0] == pid, "the chat did not end at Ctrl-D"
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
