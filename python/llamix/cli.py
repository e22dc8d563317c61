"""The ``llamix`` command line: each subcommand lives in ``llamix/commands/<name>.py`` and provides
``add_arguments(parser)`` and ``run(args) -> int``.

Exit codes: 0 done, 1 an error (one line on stderr naming the file, field or flag: a
``llamix.LlamixError``, or an ``OSError`` naming the file), 2 bad usage,
130 interrupted by Ctrl-C and 143 by SIGTERM (128 + the signal, as a shell reports it; partial
output files are removed), 141 the reader of stdout went away (``| head``).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import signal
import sys

from . import __version__
from ._runtime import cpu_info
from .commands.common import quiet_requested
from .errors import cli_message

COMMANDS = {
    "info": "show a model's hyper-parameters and tensors, and the CPU's kernels",
    "generate": "generate text from a prompt",
    "chat": "talk with a model in its chat template (multi-turn, streamed)",
    "bench": "measure prompt processing and generation speed (llama-bench style)",
    "quantize": "write a model as a GGUF file of a chosen type",
    "perplexity": "measure perplexity (and KL divergence against a base model) on a text",
    "merge": "merge models from a mergekit-style YAML config",
    "extract-lora": "extract a LoRA adapter (truncated SVD of the weight deltas) from a fine-tune and its base",
    "soup": "greedy model soup: add candidates only while held-out perplexity improves",
    "evolve": "search merge parameters with CMA-ES, candidates scored in parallel on Ray",
    "serve": "an OpenAI-compatible HTTP server with continuous batching",
    "imatrix": "compute an importance matrix over a calibration text (llama-imatrix's job) for quantize --imatrix",
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each default, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False) or action.help == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` only that subcommand's flags: each command module
    imports its own stack (model, server, merge, ...), and a merge should not pay ~0.3 s to import
    the server's and the model's."""
    parser = argparse.ArgumentParser(prog="llamix", description="LLaMA-family models in 4 bits on the CPU, and model merging.")
    parser.add_argument("--version", action="version", version=f"llamix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter)
        if command in (None, name):
            mod = importlib.import_module(f"llamix.commands.{name.replace('-', '_')}")
            p.set_defaults(run=mod.run, parser=p)
            mod.add_arguments(p)
    return parser


def _refuse_unknown(sub: argparse.ArgumentParser, extra: list[str]) -> None:
    """An unknown flag is the subcommand's usage error, with the nearest flag it has."""
    known = [o for a in sub._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
    hints = []
    for arg in extra:
        close = difflib.get_close_matches(arg.split("=")[0], known, n=1) if arg.startswith("-") else []
        hints.append(f"{arg} (did you mean {close[0]}?)" if close else arg)
    sub.error("unrecognized arguments: " + " ".join(hints))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C so that writers remove their temporary files on the way out."""


def _terminate(signum, frame):
    raise _Terminated


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:   # a command imports its stack (numpy, the kernels, ...): Ctrl-C may come during it
        parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    except KeyboardInterrupt:
        _stderr_line("llamix: interrupted")
        return 130
    args, extra = parser.parse_known_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    if extra:
        _refuse_unknown(args.parser, extra)
    return run_command(args)


def mergekit_yaml(argv: list[str] | None = None) -> int:
    """The ``llamix-mergekit-yaml`` console script: mergekit-yaml's argument list, llamix's merge."""
    return run_command(importlib.import_module("llamix.commands.mergekit_yaml").parse(argv))


def run_command(args) -> int:
    """Run a parsed command (args.run) with the exit-code conventions above."""
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        _check_environment()
        return int(args.run(args) or 0)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, _Terminated)
        _stderr_line(f"llamix {args.command}: {'terminated' if terminated else 'interrupted'}")
        return 143 if terminated else 130
    except BrokenPipeError:
        # the reader of our output is gone: say nothing more, and don't let the interpreter's
        # final flush fail on the same pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, OSError, KeyError) as e:
        _stderr_line(f"llamix {args.command}: error: {_message(e)}")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_environment() -> None:
    """A bad LLAMIX_ISA / LLAMIX_THREADS / LLAMIX_QUIET is said before any work or output (the
    kernels would read the first two at their first use, after the prompt was printed)."""
    cpu_info()
    quiet_requested()


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _message(e: BaseException) -> str:
    if isinstance(e, KeyError):  # str(KeyError) is the key's repr
        return f"missing {e.args[0]!r}" if e.args else "missing key"
    if isinstance(e, OSError) and e.filename is not None and e.strerror:  # not "[Errno 2] ..."
        return f"{e.filename}: {e.strerror}"
    return cli_message(e)


def _stderr_line(msg: str) -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    print(msg, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
