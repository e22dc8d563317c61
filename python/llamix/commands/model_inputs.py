"""The model and the text a command works on: -m/--model or --random, -p/-f. Apart from
common.py so that commands without a model (merge, quantize, ...) never import the model stack."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from ..chat_format import format_names
from ..loaders import load_checkpoint, random_checkpoint
from ..loaders.lora import apply_lora
from ..model import Model
from ..tokenizer import check_text
from .common import UsageError, kv_cache_kwargs, lora_of


def add_chat_template(p) -> None:
    """The chat format: llamix's --chat-format NAME, llama.cpp's --chat-template NAME_OR_JINJA and
    --chat-template-file FILE (one of them), and llama.cpp's --jinja (always so here)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--chat-format", metavar="NAME", choices=format_names(aliases=True),
                   help=f"a built-in chat format instead of the model's template ({', '.join(format_names())})")
    g.add_argument("--chat-template", metavar="NAME_OR_JINJA",
                   help="llama.cpp's flag: a built-in format's name (as --chat-format) or a Jinja chat template "
                        "(text) instead of the model's")
    g.add_argument("--chat-template-file", metavar="FILE", help="a Jinja chat template file instead of the model's "
                                                                "template (llama.cpp's flag)")
    p.add_argument("--jinja", action="store_true", dest="_jinja",
                   help="accepted as llama.cpp's flag: llamix always renders chat templates with Jinja")


def chat_template_of(args) -> tuple[str, str] | None:
    """The chat template of --chat-template / --chat-template-file as (Jinja text, where it came
    from), or None; a built-in format's name given to --chat-template becomes ``args.chat_format``."""
    given = getattr(args, "chat_template", None)
    if getattr(args, "chat_template_file", None):
        path = args.chat_template_file
        return read_text_file(path, "--chat-template-file"), f"--chat-template-file {path}"
    if given is None:
        return None
    if given.lower() in format_names(aliases=True):
        args.chat_format = given.lower()
        return None
    if "{{" in given or "{%" in given:
        return check_text(given, "--chat-template"), "--chat-template"
    raise UsageError(f"--chat-template {given!r}: neither a built-in format ({', '.join(format_names())}; also "
                     f"{', '.join(format_names(aliases=True)[len(format_names()):])}) nor a Jinja template")


def open_model(args, slots: int = 1, **kw) -> Model:
    """The model of -m/--model or --random SHAPE (which says on stderr that its text is
    meaningless), with the -c (0: the model's training context; with ``slots``, split evenly
    between them, as llama-server does) / -t / --qtype / --kv-cache / -ctk / -ctv / --tokenizer / --lora flags; UsageError when
    it has no tokenizer. For a command with a chat format (``args.chat_format``): --chat-template /
    --chat-template-file applied, and the template parsed now (FormatError naming where it came
    from when it does not)."""
    template = chat_template_of(args)
    lora = lora_of(args)   # before the model loads: a second adapter or a missing one is said at once
    if "chat_format" in kw:
        kw["chat_format"] = args.chat_format
    if getattr(args, "random", None):
        print(f"[llamix: random-weight '{args.random}' model, no download: the text below is meaningless]",
              file=sys.stderr)
        ck = random_checkpoint(args.random, args.qtype or "q4_0")
        if lora is not None:
            apply_lora(ck, *lora)
    else:
        ck = load_checkpoint(args.model, tokenizer=args.tokenizer, qtype=args.qtype, lora=lora and lora[0],
                             lora_scale=lora[1] if lora else 1.0)
    n_ctx = args.ctx_size
    if n_ctx == 0:   # llama.cpp's -c 0: the context the model was trained with
        n_ctx = ck.config.context_length
    if n_ctx is not None and slots > 1:   # the server's -c: all the slots' positions, split evenly
        if n_ctx < slots:
            raise UsageError(f"-c/--ctx-size {n_ctx}: must give each of the {slots} slots at least one position")
        n_ctx //= slots
    m = Model(ck, n_ctx=n_ctx, n_threads=args.threads, **kv_cache_kwargs(args), **kw)
    if m.tokenizer is None:
        raise UsageError(f"{m.source}: the model has no tokenizer; give one with --tokenizer FILE")
    kept = m.checkpoint.kept_quantized
    if args.qtype and kept:   # --qtype converts float weights only: say where it did not apply
        print(f"llamix: warning: --qtype {args.qtype} converts float weights only; {len(kept)} of {m.source}'s "
              f"matrices are {', '.join(sorted({t.upper() for t in kept.values()}))} already and run as stored "
              "(llamix quantize --allow-requantize converts them)", file=sys.stderr)
    if template is not None:
        m.checkpoint.chat_template, m.checkpoint.chat_template_source = template
        m.__dict__.pop("_chat_formats", None)
    if hasattr(args, "chat_format"):
        m.chat_formatter(args.chat_format).compile()
    return m


_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"'": b"'", b'"': b'"', b"\\": b"\\"}


def process_escapes(text: str) -> str:
    """llama.cpp's string_process_escapes, which its -e/--escape (on by default) applies to -p and
    the stop strings: \\n \\r \\t \\' \\" \\\\ and \\xHH (a byte); any other backslash stays as
    written. Bytes that are not UTF-8 come back as lone surrogates, as a non-UTF-8 argument does
    (check_text refuses them, naming the flag)."""
    def one(m: re.Match) -> bytes:
        e = m.group(1)
        return bytes([int(e[1:], 16)]) if len(e) == 3 else _ESCAPES.get(e, b"\\" + e)

    raw = text.encode("utf-8", "surrogateescape")
    return re.sub(rb"\\(x[0-9a-fA-F]{2}|.)", one, raw, flags=re.S).decode("utf-8", "surrogateescape")


def read_prompt(args) -> str:
    """The prompt of -p TEXT, -f FILE (``-`` reads standard input) or the positional PROMPT; with
    ``args.escape`` (generate's -e/--escape, llama.cpp's default) escapes in -p/PROMPT are processed."""
    positional = getattr(args, "prompt_text", None)
    given = [x for x in (args.prompt, args.file, positional) if x is not None]
    if len(given) > 1:
        raise UsageError("give the prompt once: -p/--prompt, -f/--file or a positional PROMPT")
    if args.file is not None:
        return read_text_file(args.file, "-f/--file")
    text = args.prompt if args.prompt is not None else positional
    if text is None:
        raise UsageError("no prompt: give -p/--prompt TEXT or -f/--file FILE")
    flag = "-p/--prompt" if args.prompt is not None else "PROMPT"
    if getattr(args, "escape", False):
        text = process_escapes(text)
    # an argument that was not UTF-8 reaches Python as lone surrogates (surrogateescape)
    return check_text(text, flag)


def read_text_file(path: str, flag: str) -> str:
    """The UTF-8 text of ``path`` (``-``: standard input); UsageError naming the flag and the file
    when it is missing, unreadable or not UTF-8."""
    if path == "-":
        try:
            return check_text(sys.stdin.read(), f"{flag} - (standard input)")
        except UnicodeDecodeError as e:
            raise UsageError(f"{flag} - (standard input): not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{flag} {path}: is a folder, not a text file") from None
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot be read ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{flag} {path}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})") from None
