"""What the subcommands share: llama.cpp's spelling of the common flags, type names in any case,
the prompt from -p / -f / stdin, and progress bars (tqdm: drawn on a terminal's stderr only)."""
from __future__ import annotations

import argparse
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .._runtime import max_threads
from ..errors import ArgumentError

MODEL_HELP = "GGUF file, Hugging Face folder or llama2.c .bin"
TOKENIZER_HELP = "tokenizer file (tokenizer.model, tokenizer.json or GGUF) instead of the model's own"


class UsageError(ArgumentError):
    """A flag's value is wrong; the message names the flag."""


def add_threads(p) -> None:
    p.add_argument("-t", "--threads", type=int, default=None, metavar="N",
                   help="compute threads (default, or <= 0 as in llama.cpp: one per physical core)")


class _NoEffectOnCpu(argparse.Action):
    """A llama.cpp GPU flag typed from habit: accepted with a warning, as llama.cpp's CPU-only
    builds accept it, rather than misread by argparse as -n gl (-ngl) or -f a (-fa)."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} has no effect: llamix runs on the CPU", file=sys.stderr)


def add_gpu_flags(p) -> None:
    """llama.cpp's -ngl/--n-gpu-layers, -fa/--flash-attn and -nkvo: no effect here (CPU only)."""
    p.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", action=_NoEffectOnCpu, metavar="N", dest="_ngl",
                   help="accepted as llama.cpp's flag, no effect (CPU only)")
    p.add_argument("-fa", "--flash-attn", action=_NoEffectOnCpu, nargs="?", choices=("on", "off", "auto", "1", "0"),
                   dest="_fa", help="accepted as llama.cpp's flag, no effect (llamix's attention is always a "
                                    "tiled, flash-attention style one)")
    # llama-cli's bare -nkvo and llama-bench's -nkvo 0|1 (argparse read them as -n kvo)
    p.add_argument("-nkvo", "--no-kv-offload", action=_NoEffectOnCpu, nargs="?", choices=("0", "1"), dest="_nkvo",
                   help="accepted as llama.cpp's flag, no effect (the KV cache is in RAM)")


def add_llama_cpp_loading(p, batch: bool = True) -> None:
    """llama.cpp's loading flags, accepted with llamix's meaning: --no-mmap / --mlock (llamix maps
    model files and reads the weights it runs as stored in place) and, with ``batch``, -b."""
    if batch:
        p.add_argument("-b", "--batch-size", type=int, metavar="N", dest="_batch_size",
                       help="accepted as llama.cpp's flag, no effect: prompts are evaluated 512 tokens per forward "
                            "pass")
    p.add_argument("--no-mmap", action="store_true", dest="_no_mmap",
                   help="accepted as llama.cpp's flag, no effect: llamix always maps the model file (weights stored "
                        "in a type it runs are read in place, others are converted into memory)")
    p.add_argument("--mlock", action="store_true", dest="_mlock",
                   help="accepted as llama.cpp's flag, no effect: llamix does not lock the model in RAM")


def add_ctx(p, default: int | None = None, what: str = "context size in tokens (default: the model's, at most 2048)") -> None:
    p.add_argument("-c", "--ctx-size", type=int, default=default, metavar="N", dest="ctx_size",
                   help=f"{what}; 0: the model's training context, as in llama.cpp")
    for old in ("--ctx", "--n-ctx"):  # earlier spellings, kept working
        p.add_argument(old, type=int, dest="ctx_size", help=argparse.SUPPRESS)


def check_ctx(args, minimum: int = 1) -> None:
    """-c/--ctx-size: 0 (the model's training context, llama.cpp's meaning) or at least ``minimum``."""
    if args.ctx_size is not None:
        check(args.ctx_size == 0 or args.ctx_size >= minimum, "-c/--ctx-size",
              f"must be {'positive' if minimum == 1 else f'at least {minimum}'} (or 0: the model's training "
              f"context), got {args.ctx_size}")


def lower_choice(choices) -> Callable[[str], str]:
    """An argparse type: a name from ``choices`` in any case (``Q4_K_M`` == ``q4_k_m``)."""
    def parse(s: str) -> str:
        v = s.lower()
        if v not in choices:
            raise argparse.ArgumentTypeError(f"{s!r} is not one of {', '.join(choices)}")
        return v
    parse.__name__ = "type name"
    return parse


def add_qtype(p, choices=("q4_0", "q8_0", "f16"), help: str = "convert float weights to this type while loading") -> None:
    p.add_argument("--qtype", type=lower_choice(choices), metavar="TYPE", help=f"{help} ({', '.join(choices)})")
    p.add_argument("--quant", type=lower_choice(choices), dest="qtype", help=argparse.SUPPRESS)


def lower_choice_list(choices) -> Callable[[str], list[str]]:
    """An argparse type for llama-bench's value lists: ``f16,q8_0``, each a name from ``choices``
    in any case."""
    one = lower_choice(choices)

    def parse(s: str) -> list[str]:
        return [one(item.strip()) for item in s.split(",")]
    parse.__name__ = "type names"
    return parse


def add_kv_cache(p, lists: bool = False) -> None:
    """The KV cache's types: llama.cpp's -ctk/--cache-type-k and -ctv/--cache-type-v, and
    --kv-cache for both. ``lists``: -ctk / -ctv take llama-bench's value lists (``-ctk f16,q8_0``,
    repeatable: one test per value), each parsed to a list of names."""
    types = ("f32", "f16", "q8_0", "q4_0")
    p.add_argument("--kv-cache", type=lower_choice(types), default="f32", metavar="TYPE",
                   help=f"KV cache type of keys and values ({', '.join(types)})")
    many = dict(type=lower_choice_list(types), action="extend", metavar="TYPE[,TYPE...]") if lists \
        else dict(type=lower_choice(types), metavar="TYPE")
    each = "; a list measures each" if lists else ""
    p.add_argument("-ctk", "--cache-type-k", help=f"KV cache type of the keys (default: --kv-cache){each}", **many)
    p.add_argument("-ctv", "--cache-type-v", help=f"KV cache type of the values (default: --kv-cache){each}", **many)
    precisions = ("auto", "f32", "bf16")
    p.add_argument("--attn-precision", type=lower_choice(precisions), default="auto", metavar="P",
                   help="the attention's arithmetic: auto (bf16 on CPUs with AMX tiles, else f32), f32, or bf16 "
                        "(bf16 inputs, float32 sums)")


def add_lora(p, help: str = "LoRA adapter applied to the model's weights: a GGUF adapter file (llama.cpp's) or a "
             "PEFT adapter folder (adapter_config.json + adapter_model.safetensors); one adapter") -> None:
    """A LoRA adapter folded into the weights as they load: llama.cpp's --lora / --lora-scaled."""
    # appended, so that a second adapter (llama.cpp applies every --lora given) is refused by name
    # rather than silently replacing the first
    p.add_argument("--lora", metavar="FNAME", action="append", help=help)
    p.add_argument("--lora-scaled", nargs=2, metavar=("FNAME", "SCALE"), action="append",
                   help="the same, its update scaled by SCALE (llama.cpp's FNAME:SCALE is taken too)")


def lora_of(args) -> tuple[str, float] | None:
    """(adapter folder, scale) of --lora / --lora-scaled, or None; UsageError for more than one
    adapter (the flags repeated, or both given), or a SCALE that is not a number."""
    # llama.cpp's --lora takes a comma-separated list of adapters
    plains = [f for given in getattr(args, "lora", None) or [] for f in given.split(",")]
    scaleds = getattr(args, "lora_scaled", None) or []
    if len(plains) + len(scaleds) > 1:
        given = " ".join([f"--lora {f}" for f in plains] + [f"--lora-scaled {f} {s}" for f, s in scaleds])
        raise UsageError(f"{given}: give one adapter (llamix applies one; several at once are not supported yet)")
    plain, scaled = (plains or [None])[0], (scaleds or [None])[0]
    if scaled:
        try:
            scale = float(scaled[1])
        except ValueError:
            raise UsageError(f"--lora-scaled {scaled[0]} {scaled[1]}: SCALE must be a number") from None
        if not math.isfinite(scale):
            raise UsageError(f"--lora-scaled {scaled[0]} {scaled[1]}: SCALE must be a finite number")
    else:
        scale = 1.0
    path = scaled[0] if scaled else plain
    if path is not None and not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such LoRA adapter file or folder")
    return None if path is None else (path, scale)


def kv_cache_kwargs(args) -> dict:
    """The KV cache flags (and the attention's precision over the cache) as keyword arguments of Model / load."""
    return dict(kv_cache=args.kv_cache, kv_cache_k=args.cache_type_k, kv_cache_v=args.cache_type_v,
                attn_precision=getattr(args, "attn_precision", "auto"))


def add_sampling(p) -> None:
    """llama-cli's sampling flags, with its defaults."""
    p.add_argument("--temp", type=float, default=0.8, help="temperature (<= 0: greedy)")
    p.add_argument("--temperature", type=float, dest="temp", help=argparse.SUPPRESS)
    p.add_argument("--top-k", type=int, default=40, help="top-k sampling (<= 0: off)")
    p.add_argument("--top-p", type=float, default=0.95, help="top-p sampling (1.0: off, 0: greedy)")
    p.add_argument("--min-p", type=float, default=0.05, help="min-p sampling (0.0: off)")
    p.add_argument("--repeat-last-n", type=int, default=64, metavar="N",
                   help="last N tokens the penalties look at (0: off, -1: the whole context)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="penalty of the last N tokens (1.0: off)")
    p.add_argument("--presence-penalty", type=float, default=0.0,
                   help="subtracted once from the logit of each token among the last N (0.0: off)")
    p.add_argument("--frequency-penalty", type=float, default=0.0,
                   help="subtracted from a token's logit per occurrence among the last N (0.0: off)")
    p.add_argument("-s", "--seed", type=int, help="sampling seed (default, or -1: random)")
    p.add_argument("--stop", "-r", "--reverse-prompt", action="append", metavar="STR", dest="stop",
                   help="stop before this string (repeatable; -r/--reverse-prompt: llama-cli's spelling)")


def check_sampling(args) -> None:
    check(math.isfinite(args.temp), "--temp", f"must be a finite number, got {args.temp}")
    check(0 <= args.top_p <= 1, "--top-p", f"must be in [0, 1] (0: greedy), got {args.top_p}")
    check(0 <= args.min_p <= 1, "--min-p", f"must be in [0, 1], got {args.min_p}")
    check(args.repeat_penalty > 0, "--repeat-penalty", f"must be positive, got {args.repeat_penalty}")
    check(args.repeat_last_n >= -1, "--repeat-last-n", f"must be >= 0 (or -1: the whole context), got {args.repeat_last_n}")
    for flag, v in (("--presence-penalty", args.presence_penalty), ("--frequency-penalty", args.frequency_penalty)):
        check(math.isfinite(v), flag, f"must be a finite number, got {v}")
    if args.seed is not None:
        check(args.seed >= -1, "-s/--seed", f"must be >= 0 (or -1: random), got {args.seed}")


def sampling_kwargs(args) -> dict:
    """The sampling flags as keyword arguments of Model.stream / ChatSession.send."""
    return dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n, seed=args.seed, stop=args.stop,
                presence_penalty=args.presence_penalty, frequency_penalty=args.frequency_penalty)


def check(cond: bool, flag: str, msg: str) -> None:
    if not cond:
        raise UsageError(f"{flag} {msg}")


def check_threads(args) -> None:
    if args.threads is not None:
        if args.threads < 0:   # llama.cpp's -t: a value <= 0 is its default (-1 in its help)
            args.threads = 0
        check(args.threads <= max_threads(), "-t/--threads",
              f"at most {max_threads()} (8 per CPU this process may use), got {args.threads}")


def add_force(p) -> None:
    p.add_argument("--force", action="store_true", help="replace OUT if it exists (never an input)")


# the files a model folder's readers open (config.json, weights, index, tokenizer files)
_FOLDER_INPUTS = (".json", ".safetensors", ".model", ".bin", ".txt", ".yml", ".yaml")


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def check_output(out: str, inputs: Iterable, force: bool, flag: str = "OUT", file: bool = False) -> None:
    """The one rule for outputs: an existing OUT is replaced only with ``--force``, and never when
    it is one of the inputs (a file given, or a file an input folder's readers open) or holds one
    (a folder being replaced that contains an input). ``file``: OUT is a file whose folder must
    exist (as llama-quantize and llama-imatrix require; a mistyped folder is not created)."""
    target = Path(out).resolve()
    if file and not target.parent.is_dir():
        raise UsageError(f"{flag} {out}: the folder {target.parent} does not exist")
    if file and target.is_dir():   # --force cannot replace a folder with a file
        raise UsageError(f"{flag} {out}: is a folder; give the output file's path")
    for given in inputs:
        if given is None:
            continue
        inp = Path(given).resolve()
        if target == inp or (inp.is_dir() and target.is_file() and _is_within(target, inp)
                             and target.suffix in _FOLDER_INPUTS) or (target.is_dir() and _is_within(inp, target)):
            raise UsageError(f"{flag} {out}: is or holds an input ({given}); write the output elsewhere")
    empty_folder = target.is_dir() and not any(target.iterdir())
    if Path(out).exists() and not force and not empty_folder:
        kind = "folder" if Path(out).is_dir() else "file"
        raise UsageError(f"{flag} {out}: the {kind} already exists (pass --force to replace it)")


def warn(command: str, message: str) -> None:
    """One warning line on stderr, as the CLI's errors are printed."""
    print(f"llamix {command}: warning: {message}", file=sys.stderr)


def warn_ctx(command: str, n_ctx: int | None, config) -> None:
    """Warn when -c/--ctx-size goes beyond the context the model was trained with."""
    if n_ctx is not None and n_ctx > config.context_length:
        warn(command, f"-c/--ctx-size {n_ctx} is beyond the model's training context ({config.context_length}): "
                      "past it the output degrades")


def quiet_requested(args=None) -> bool:
    """-q/--quiet, or LLAMIX_QUIET=1 (0 or unset: bars on a terminal); another value is an error."""
    value = os.environ.get("LLAMIX_QUIET", "")
    if value.strip().lower() not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ArgumentError(f"LLAMIX_QUIET={value}: expected 1 (no progress bars) or 0")
    return value.strip().lower() in ("1", "true", "yes", "on") or bool(getattr(args, "quiet", False))


@contextmanager
def progress_bar(desc: str, unit: str = "B", quiet: bool = False) -> Iterator[Callable[[float, float, str], None]]:
    """A progress callback ``(done, total, note)`` for the library, drawing a tqdm bar on stderr
    when it is a terminal (never when piped or ``quiet``); ``unit="B"`` shows bytes and an ETA."""
    bar = None
    disable = quiet or not sys.stderr.isatty()

    def update(done: float, total: float, note: str = "") -> None:
        nonlocal bar
        if disable:
            return
        if bar is None:
            # tqdm is imported only when a bar is drawn: its import (importlib.metadata, email,
            # logging) costs more than a whole small merge's start-up, for nothing under -q or a pipe
            from tqdm import tqdm
            bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", unit_divisor=1024 if unit == "B" else 1000,
                       leave=False, file=sys.stderr, dynamic_ncols=True)
        bar.update(done - bar.n)
        if note:
            bar.set_postfix_str(note[:40], refresh=False)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
