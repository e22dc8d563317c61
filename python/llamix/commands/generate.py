"""``llamix generate -m MODEL -p PROMPT``: stream a completion to stdout (llama-cli's flags)."""
from __future__ import annotations

import argparse
import sys
import time

from ..loaders import SHAPES, random_checkpoint
from ..model import Model, load
from .common import (MODEL_HELP, TOKENIZER_HELP, UsageError, add_ctx, add_qtype, add_threads, check, check_threads,
                     quiet_requested, read_prompt, warn_ctx)


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help=MODEL_HELP)
    src.add_argument("--random", metavar="SHAPE", choices=list(SHAPES),
                     help=f"no download: a random-weight model of this shape ({', '.join(SHAPES)}); its text is gibberish")
    p.add_argument("-p", "--prompt", help="the text to continue")
    p.add_argument("-f", "--file", help="read the prompt from this file ('-': standard input)")
    p.add_argument("prompt_text", nargs="?", metavar="PROMPT", help="the prompt, if -p/-f are not given")
    p.add_argument("-n", "--n-predict", type=int, default=128, metavar="N",
                   help="tokens to generate (-1: until end-of-sequence or the context is full)")
    p.add_argument("--max-tokens", type=int, dest="n_predict", help=argparse.SUPPRESS)
    add_ctx(p)
    add_threads(p)
    p.add_argument("--temp", type=float, default=0.8, help="temperature (0: greedy)")
    p.add_argument("--temperature", type=float, dest="temp", help=argparse.SUPPRESS)
    p.add_argument("--top-k", type=int, default=40, help="top-k sampling (0: off)")
    p.add_argument("--top-p", type=float, default=0.95, help="top-p sampling (1.0: off)")
    p.add_argument("--min-p", type=float, default=0.05, help="min-p sampling (0.0: off)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="penalty of the last 64 tokens (1.0: off)")
    p.add_argument("-s", "--seed", type=int, help="sampling seed (default: random)")
    p.add_argument("--stop", action="append", metavar="STR", help="stop before this string (repeatable)")
    p.add_argument("--tokenizer", help=TOKENIZER_HELP)
    add_qtype(p)
    p.add_argument("--kv-cache", choices=["f32", "f16"], default="f32", help="KV cache type (keys and values)")
    p.add_argument("--stats", action="store_true", help="print prompt and generation speed to stderr at the end")


def _check(args) -> None:
    check_threads(args)
    check(args.n_predict >= -1, "-n/--n-predict", f"must be >= -1, got {args.n_predict}")
    if args.ctx_size is not None:
        check(args.ctx_size > 0, "-c/--ctx-size", f"must be positive, got {args.ctx_size}")
    check(args.temp >= 0, "--temp", f"must be >= 0, got {args.temp}")
    check(args.top_k >= 0, "--top-k", f"must be >= 0, got {args.top_k}")
    check(0 < args.top_p <= 1, "--top-p", f"must be in (0, 1], got {args.top_p}")
    check(0 <= args.min_p <= 1, "--min-p", f"must be in [0, 1], got {args.min_p}")
    check(args.repeat_penalty > 0, "--repeat-penalty", f"must be positive, got {args.repeat_penalty}")


def run(args) -> int:
    _check(args)
    prompt = read_prompt(args)
    if args.random:
        print(f"[llamix: random-weight '{args.random}' model, no download: the text below is meaningless]",
              file=sys.stderr)
        m = Model(random_checkpoint(args.random, args.qtype or "q4_0"), n_ctx=args.ctx_size, n_threads=args.threads,
                  kv_cache=args.kv_cache)
    else:
        m = load(args.model, tokenizer=args.tokenizer, qtype=args.qtype, n_threads=args.threads, n_ctx=args.ctx_size,
                 kv_cache=args.kv_cache)
    if m.tokenizer is None:
        raise UsageError(f"{m.source}: the model has no tokenizer; give one with --tokenizer FILE")
    warn_ctx("generate", args.ctx_size, m.config)
    n_prompt = len(m.tokenize(prompt))
    if n_prompt + max(args.n_predict, 0) > m.n_ctx:
        raise UsageError(f"-n/--n-predict: the prompt ({n_prompt} tokens) plus {args.n_predict} tokens exceed the "
                         f"context (-c/--ctx-size {m.n_ctx})")
    out = sys.stdout
    out.write(prompt)
    out.flush()
    t0 = time.perf_counter()
    try:
        for piece in m.stream(prompt, max_tokens=args.n_predict, temperature=args.temp, top_k=args.top_k,
                              top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty, seed=args.seed,
                              stop=args.stop):
            out.write(piece)
            out.flush()
    finally:  # Ctrl-C or an error: what was generated stays, the terminal gets its newline
        out.write("\n")
        out.flush()
        if args.stats and not quiet_requested(args):
            _print_timings(m, time.perf_counter() - t0)
    return 0


def _print_timings(m: Model, total_s: float) -> None:
    """Timings in llama.cpp's words (llama_perf_context_print)."""
    t = m.timings
    def line(what: str, seconds: float, n: int, unit: str) -> str:
        ms = seconds * 1e3
        per = ms / n if n else 0.0
        tps = n / seconds if seconds > 0 else 0.0
        return (f"{what:>16} = {ms:10.2f} ms / {n:5d} {unit} ({per:8.2f} ms per token, {tps:8.2f} tokens per second)")
    print(line("prompt eval time", t.prompt_s, t.prompt_tokens, "tokens"), file=sys.stderr)
    print(line("eval time", t.eval_s, t.eval_tokens, "runs  "), file=sys.stderr)
    print(f"{'total time':>16} = {total_s * 1e3:10.2f} ms / {t.prompt_tokens + t.eval_tokens:5d} tokens", file=sys.stderr)
