"""``llamix chat -m MODEL``: an interactive conversation in the model's chat template.

One line per message (the first one may come from -p TEXT or -f FILE, as llama-cli's; -st ends
after its reply). The reply streams as it is generated and the conversation stays in the KV
cache, so a turn evaluates only its own text. ``/reset`` starts over (the system prompt stays),
``/exit`` or Ctrl-D ends the session; Ctrl-C stops the reply being written (twice in a row, or at
the prompt, ends the session). When the context fills, the oldest turns are dropped, and the
session says so.
"""
from __future__ import annotations

import re
import signal
import sys

from ..loaders import SHAPES
from ..errors import ChatTemplateError, FormatError
from ..model.chat import ChatSession
from .common import (MODEL_HELP, TOKENIZER_HELP, UsageError, add_ctx, add_gpu_flags, add_lora, check_ctx,
                     add_llama_cpp_loading, add_kv_cache, add_qtype, add_sampling, add_threads, check, check_sampling,
                     check_threads, quiet_requested, sampling_kwargs)
from .model_inputs import add_chat_template, open_model, read_prompt

try:  # line editing and history at the prompt, where the platform has it
    import readline  # noqa: F401
except ImportError:  # pragma: no cover - Windows
    pass

HELP = "/reset: start over (the system prompt stays)   /exit or Ctrl-D: quit   Ctrl-C: stop the reply"


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help=MODEL_HELP)
    src.add_argument("--random", metavar="SHAPE", choices=list(SHAPES),
                     help=f"no download: a random-weight model of this shape ({', '.join(SHAPES)}); its text is gibberish")
    p.add_argument("-sys", "--system-prompt", metavar="TEXT", help="the system message, kept for the whole session")
    first = p.add_mutually_exclusive_group()
    first.add_argument("-p", "--prompt", metavar="TEXT", help="the first user message (then the conversation goes on "
                                                             "from standard input, as llama-cli's)")
    first.add_argument("-f", "--file", metavar="FILE", help="the first user message, read from this file")
    p.add_argument("-st", "--single-turn", action="store_true",
                   help="end after the first reply (llama-cli's flag)")
    p.add_argument("-cnv", "--conversation", "-i", "--interactive", action="store_true", dest="_cnv",
                   help="accepted as llama-cli's flags: llamix chat always holds a conversation")
    add_chat_template(p)
    p.add_argument("-n", "--n-predict", type=int, default=-1, metavar="N",
                   help="at most N tokens per reply (-1: until the end of the turn)")
    add_ctx(p)
    add_threads(p)
    add_gpu_flags(p)
    add_llama_cpp_loading(p)
    add_sampling(p)
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    add_qtype(p)
    add_kv_cache(p)
    add_lora(p)
    p.add_argument("--stats", action="store_true",
                   help="after each reply, print the tokens evaluated and the prompt and generation speed to stderr")


def _check(args) -> None:
    check_threads(args)
    check(args.n_predict >= -1 and args.n_predict != 0, "-n/--n-predict", f"must be -1 or positive, got {args.n_predict}")
    check_ctx(args)
    check_sampling(args)


class _Interrupt:
    """Ctrl-C while a reply is written: a flag checked between tokens, so the reply stops cleanly
    (the session and its KV cache stay usable). A second Ctrl-C before the reply has stopped
    raises KeyboardInterrupt as usual."""

    def __init__(self):
        self.hit = False

    def __enter__(self):
        self.hit = False
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)
        return False


def _read(tty: bool) -> str | None:
    """One message, or None at the end of input."""
    if tty:
        try:
            return input("> ")
        except EOFError:
            print()
            return None
    line = sys.stdin.readline()
    return None if line == "" else line.rstrip("\n")


def run(args) -> int:
    _check(args)
    first = read_prompt(args) if args.prompt is not None or args.file is not None else None   # before the model loads
    m = open_model(args)
    try:
        session = ChatSession(m, system_prompt=args.system_prompt, chat_format=args.chat_format)
    except FormatError:
        raise
    except ValueError as e:
        raise UsageError(f"--chat-format: {e}") from None
    tty = sys.stdin.isatty()
    out, err = sys.stdout, sys.stderr
    quiet = quiet_requested(args)
    if tty and not quiet:
        print(f"[llamix chat: {m!r}, chat format {session.format.name}]\n[{HELP}]", file=err)
    interrupt = _Interrupt() if _main_thread() else None
    sampling = sampling_kwargs(args)
    replied = False
    while True:
        if replied and args.single_turn:
            return 0
        text, first = (first, None) if first is not None else (_read(tty), None)
        if text is None or text.strip() == "/exit":
            return 0
        if text.strip() == "/reset":
            session.reset()
            print("[conversation reset]", file=err)
            continue
        if text.strip() in ("/help", "/?"):
            print(f"[{HELP}   /help: this line]", file=err)
            continue
        if re.fullmatch(r"/[A-Za-z]+", text.strip()):  # a mistyped command, not a message for the model
            print(f"[{text.strip()}: not a command; {HELP}]", file=err)
            continue
        if not text.strip():
            continue
        try:
            reply = session.send(text, max_tokens=args.n_predict, **sampling)
        except ChatTemplateError:   # the template refuses the conversation (-sys with a template without one)
            raise
        except ValueError as e:  # the message alone does not fit the context
            print(f"[{e}]", file=err)
            continue
        if interrupt is not None:
            interrupt.__enter__()
        try:
            for piece in reply:
                out.write(piece)
                out.flush()
                if interrupt is not None and interrupt.hit:
                    break
        finally:
            reply.close()   # records the turn, whether it ended or was stopped
            if interrupt is not None:
                interrupt.__exit__()
            out.write("\n")
            out.flush()
        replied = True
        st = session.stats
        if interrupt is not None and interrupt.hit:
            print("[reply stopped]", file=err)
        if st.dropped_turns:
            print(f"[context full: dropped the oldest {st.dropped_turns} turn(s)]", file=err)
        if st.finish_reason == "length" and m.n_past + 1 >= m.n_ctx:
            print("[context full: the reply was cut; older turns are dropped at the next message]", file=err)
        if args.stats and not quiet:
            print(f"[prompt: {st.prompt_tokens} of {st.prompt_total} tokens evaluated, {st.prompt_tps:.1f} tokens/s | "
                  f"generation: {st.generated} tokens, {st.eval_tps:.1f} tokens/s]", file=err)


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()
