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
import gc
import importlib
import os
import re
import signal
import sys
import warnings

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
    """The parser with ``command``'s flags (every command is listed; only ``command``'s module is
    imported, None imports none): each command module imports its own stack (model, server, merge,
    ...), and a merge should not pay ~0.3 s to import the server's and the model's, nor
    ``llamix --help`` ~0.5 s to import them all."""
    # allow_abbrev=False: as llama.cpp, a flag is spelled whole (--n-gpu is not --n-gpu-layers)
    parser = argparse.ArgumentParser(prog="llamix", allow_abbrev=False,
                                     description="LLaMA-family models in 4 bits on the CPU, and model merging.")
    parser.add_argument("--version", action="version", version=f"llamix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=_Formatter, allow_abbrev=False)
        if command == name:
            mod = importlib.import_module(f"llamix.commands.{name.replace('-', '_')}")
            p.set_defaults(run=mod.run, parser=p)
            mod.add_arguments(p)
    return parser


# llama.cpp's single-dash multi-letter flags that llamix has not (or has under another command), and
# what to do instead. argparse would read "-hf org/m" as -h (help) and "-sys" as "-s ys".
_LLAMA_CPP_SHORT = {
    "-sys": "a system prompt needs a conversation: llamix chat -sys TEXT",
    "-cnv": "llamix chat holds the conversation (generate never does)",
    "-hf": "llamix reads local files: download the GGUF (e.g. hf download ORG/NAME FILE.gguf) and pass -m FILE "
           "(in Python: llamix.Llama.from_pretrained(repo_id, filename))",
    "-hfr": "llamix reads local files: download the GGUF (e.g. hf download ORG/NAME FILE.gguf) and pass -m FILE",
    "-hff": "llamix reads local files: download the GGUF (e.g. hf download ORG/NAME FILE.gguf) and pass -m FILE",
    "-md": "llamix has no speculative decoding (no draft model)",
    "-tb": "llamix uses -t/--threads for prompt processing too",
    "-cb": "llamix serve always batches continuously",
    "-nocb": "llamix serve always batches continuously (-cb is accepted)",
}
# llama.cpp's flags that llamix has in another command
_ELSEWHERE = {
    "--chat-template": "chat templates apply in llamix chat and llamix serve; generate continues the raw prompt",
    "--chat-template-file": "chat templates apply in llamix chat and llamix serve; generate continues the raw prompt",
    "--system-prompt": "a system prompt needs a conversation: llamix chat -sys TEXT",
    "--conversation": "llamix chat holds the conversation (generate never does)",
    "--hf-repo": _LLAMA_CPP_SHORT["-hfr"],
    "--model-draft": _LLAMA_CPP_SHORT["-md"],
    "--threads-batch": _LLAMA_CPP_SHORT["-tb"],
    "--cont-batching": _LLAMA_CPP_SHORT["-cb"],
}
# single-letter flags a command has not, where argparse would take them as the start of a longer
# one (-f as -fa, whatever allow_abbrev says), and what to do instead
_SINGLE_LETTER = {
    "-f": "-f/--file (a prompt from a file) is llamix generate's and llamix chat's",
    "-p": "-p/--prompt is llamix generate's and llamix chat's",
}
_MULTI_LETTER = re.compile(r"(-[A-Za-z][A-Za-z0-9-]+)(=.*)?", re.S)
_ATTACHED_NUMBER = re.compile(r"(-[A-Za-z])-?[0-9][0-9.eE+-]*")


def _refuse_multi_letter_short(sub: argparse.ArgumentParser, argv: list[str]) -> None:
    """llama.cpp's multi-letter short flags (-sys, -hf, -cb, ...): one the command does not have
    is a usage error naming it whole (argparse would read -sys as -s with the value 'ys', and
    -hf as -h), with what llamix does instead where it has it."""
    known = {o for a in sub._actions for o in a.option_strings}
    for arg in argv:
        if arg == "--":
            break
        if re.fullmatch(r"-[A-Za-z]", arg) and arg not in known and any(o.startswith(arg) for o in known):
            hint = _SINGLE_LETTER.get(arg)
            sub.error(f"unknown option {arg}" + (f": {hint}" if hint else ""))
        m = _MULTI_LETTER.fullmatch(arg)
        if m is None or m.group(1) in known:
            continue
        attached = _ATTACHED_NUMBER.fullmatch(arg)   # -c4096, -t4: argparse's attached value, kept working
        if attached is not None and attached.group(1) in known:
            continue
        flag = m.group(1)
        hint = _LLAMA_CPP_SHORT.get(flag)
        if hint is None:
            visible = [o for a in sub._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
            close = difflib.get_close_matches(flag, visible, n=1)
            hint = f"did you mean {close[0]}?" if close else None
        sub.error(f"unknown option {flag}" + (f": {hint}" if hint else ""))


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _refuse_unknown(sub: argparse.ArgumentParser, extra: list[str]) -> None:
    """An unknown flag is the subcommand's usage error, with the nearest flag it has."""
    known = [o for a in sub._actions for o in a.option_strings if a.help != argparse.SUPPRESS]
    hints = []
    for arg in extra:
        name = arg.split("=")[0]
        close = difflib.get_close_matches(name, known, n=1) if arg.startswith("-") else []
        if name in _ELSEWHERE:
            hints.append(f"{arg} ({_ELSEWHERE[name]})")
        else:
            hints.append(f"{arg} (did you mean {close[0]}?)" if close else arg)
    sub.error("unrecognized arguments: " + " ".join(hints))


class _Terminated(KeyboardInterrupt):
    """SIGTERM, unwinding like Ctrl-C so that writers remove their temporary files on the way out."""


def _terminate(signum, frame):
    raise _Terminated


def _freeze_startup_objects(own_process: bool) -> None:
    """The command's modules are imported: the objects they made live until the process exits.
    gc.freeze() keeps the cyclic collector from walking them again in every full collection and at
    interpreter exit (measured: ~0.1 s less per process on a loaded 2-core machine, a fifth of a
    small merge's fixed cost). Only when the command line is the process's own (the console
    scripts), never inside a caller's process (main(argv) from Python or the tests)."""
    if own_process:
        gc.freeze()


def main(argv: list[str] | None = None) -> int:
    own_process = argv is None
    argv = sys.argv[1:] if argv is None else argv
    try:   # a command imports its stack (numpy, the kernels, ...): Ctrl-C may come during it
        parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    except KeyboardInterrupt:
        _stderr_line("llamix: interrupted")
        return 130
    sub = _subparser(parser, argv[0]) if argv and argv[0] in COMMANDS else None
    if sub is not None:
        _refuse_multi_letter_short(sub, argv[1:])
    elif argv and argv[0].startswith("-") and ({"-m", "--model"} & set(argv)):
        # llama-cli's form, llamix -m MODEL -p TEXT: argparse would call MODEL an invalid choice of COMMAND
        parser.error(f"no command before {argv[0]}: e.g. llamix generate {' '.join(argv)} (commands: "
                     f"{', '.join(COMMANDS)})")
    args, extra = parser.parse_known_args(_lora_scaled_pairs(argv))
    if not args.command:
        parser.print_help()
        return 2
    if extra:
        _refuse_unknown(args.parser, extra)
    _freeze_startup_objects(own_process)
    return run_command(args)


def _lora_scaled_pairs(argv: list[str]) -> list[str]:
    """llama.cpp's current ``--lora-scaled FNAME:SCALE[,FNAME:SCALE...]`` (one argument) rewritten
    as the two-argument ``--lora-scaled FNAME SCALE`` (its older spelling, which argparse reads),
    one flag per adapter of a list. A value that is not that form, or one followed by a number (the
    older spelling of a FNAME holding ':'), is left as it is."""
    def pairs(value: str) -> list[tuple[str, str]] | None:
        out = []
        for item in value.split(","):
            fname, sep, scale = item.rpartition(":")
            if not sep or not fname or not _is_number(scale):
                return None
            out.append((fname, scale))
        return out

    out, i = [], 0
    while i < len(argv):
        tok, value = argv[i], None
        if tok == "--":
            out += argv[i:]
            break
        if tok.startswith("--lora-scaled="):
            value = tok.split("=", 1)[1]
        elif tok == "--lora-scaled" and i + 1 < len(argv) and not _is_number(argv[i + 2] if i + 2 < len(argv) else ""):
            value = argv[i + 1]
        found = pairs(value) if value is not None else None
        if found is None:
            out.append(tok)
        else:
            for fname, scale in found:
                out += ["--lora-scaled", fname, scale]
            i += 0 if tok.startswith("--lora-scaled=") else 1
        i += 1
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def mergekit_yaml(argv: list[str] | None = None) -> int:
    """The ``llamix-mergekit-yaml`` console script: mergekit-yaml's argument list, llamix's merge."""
    args = importlib.import_module("llamix.commands.mergekit_yaml").parse(argv)
    _freeze_startup_objects(argv is None)
    return run_command(args)


def run_command(args) -> int:
    """Run a parsed command (args.run) with the exit-code conventions above."""
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        with warnings.catch_warnings():
            # a warning is one line, as an error is (not Python's "file:line: UserWarning:" form)
            warnings.showwarning = lambda message, *_, **__: _stderr_line(f"{_prog(args)}: warning: {message}")
            _check_environment()
            return int(args.run(args) or 0)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, _Terminated)
        _stderr_line(f"{_prog(args)}: {'terminated' if terminated else 'interrupted'}")
        return 143 if terminated else 130
    except BrokenPipeError:
        # the reader of our output is gone: say nothing more, and don't let the interpreter's
        # final flush fail on the same pipe
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, OSError, KeyError) as e:
        _stderr_line(f"{_prog(args)}: error: {_message(e)}")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _prog(args) -> str:
    """The program's name in messages: ``llamix COMMAND``, or a console script's own name."""
    return getattr(args, "prog", None) or f"llamix {args.command}"


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
