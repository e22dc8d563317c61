"""``llamix generate -m MODEL "prompt"``: stream a completion to stdout."""
from __future__ import annotations

import sys
import time


def add_arguments(p) -> None:
    p.add_argument("prompt", help="the text to continue")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help="GGUF file, Hugging Face folder or llama2.c .bin")
    src.add_argument("--random", metavar="SHAPE", choices=["tiny", "1b", "7b"],
                     help="no download: a random-weight model of this shape (tiny, 1b, 7b); its text is gibberish")
    p.add_argument("--tokenizer", help="SentencePiece .model file (if the model has none)")
    p.add_argument("--quant", choices=["q4_0", "q8_0", "f16"], help="convert float weights while loading")
    p.add_argument("-n", "--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", help="stop before this string (repeatable)")
    p.add_argument("-t", "--threads", type=int, help="compute threads (default: physical cores)")
    p.add_argument("--n-ctx", type=int)
    p.add_argument("--kv-cache", choices=["f32", "f16"], default="f32", help="KV cache precision")
    p.add_argument("--stats", action="store_true", help="print tokens/s to stderr at the end")


def run(args) -> int:
    from ..model.model import Model, load

    if args.random:
        from ..model.random import random_checkpoint

        print(f"[llamix: random-weight '{args.random}' model, no download: the text below is meaningless]",
              file=sys.stderr)
        m = Model(random_checkpoint(args.random, args.quant or "q4_0"), n_ctx=args.n_ctx, threads=args.threads,
                  kv_cache=args.kv_cache)
    else:
        m = load(args.model, tokenizer=args.tokenizer, quant=args.quant, threads=args.threads, n_ctx=args.n_ctx,
                 kv_cache=args.kv_cache)
    t0 = time.perf_counter()
    n = 0
    sys.stdout.write(args.prompt)
    for piece in m.stream(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, min_p=args.min_p, repeat_penalty=args.repeat_penalty, seed=args.seed,
                          stop=args.stop):
        sys.stdout.write(piece)
        sys.stdout.flush()
        n += 1
    sys.stdout.write("\n")
    if args.stats:
        dt = time.perf_counter() - t0
        print(f"[{n} pieces in {dt:.2f} s]", file=sys.stderr)
    return 0
