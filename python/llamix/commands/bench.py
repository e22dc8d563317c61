"""``llamix bench``: prompt processing and generation speed, like llama-bench.

``pp``: one forward pass over ``-p`` prompt tokens; ``tg``: ``-n`` single-token decodes; both
after ``-d/--n-depth`` tokens already in the cache (llama-bench's ``-d``; filled once, untimed,
and rewound to that depth before each repetition). Reported in tokens/s, median over ``-r`` repetitions (after one
warm-up). ``--shape 1b|7b|tiny`` measures a synthesized random-weight LLaMA (no download).
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from .._runtime import cpu_info
from ..loaders import SHAPES, random_checkpoint
from ..model import Model, load
from .common import (MODEL_HELP, add_gpu_flags, add_kv_cache, add_qtype, add_threads, check, check_threads,
                     kv_cache_kwargs, warn)


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-m", "--model", help=MODEL_HELP)
    src.add_argument("--shape", choices=list(SHAPES), help="a random-weight model of this shape (no download)")
    add_qtype(p, help="weight type (default: as stored; q4_0 for --shape)")
    p.add_argument("-p", "--n-prompt", type=int, default=512, metavar="N", help="prompt tokens (pp test; 0: skip)")
    p.add_argument("-n", "--n-gen", type=int, default=128, metavar="N", help="generated tokens (tg test; 0: skip)")
    add_threads(p)
    add_gpu_flags(p)
    p.add_argument("-r", "--repetitions", type=int, default=3, metavar="N", help="repetitions of each test (median)")
    p.add_argument("-d", "--n-depth", type=int, default=0, metavar="N",
                   help="tokens already in the KV cache when pp and tg are measured (llama-bench's -d)")
    add_kv_cache(p)
    p.add_argument("-o", "--output", choices=["md", "json"], default="md",
                   help="md: a Markdown table (default); json: one JSON object (llama-bench's -o)")
    p.add_argument("--json", action="store_true", help="the same as -o json")


def measure(m: Model, n_prompt: int, n_gen: int, reps: int, n_depth: int = 0) -> dict:
    """Median tokens/s for prompt processing and generation on a loaded Model, after ``n_depth``
    tokens already in its cache."""
    rng = np.random.default_rng(0)
    vocab = m.config.vocab_size
    depth = rng.integers(3, vocab, n_depth).tolist()
    prompt = rng.integers(3, vocab, n_prompt).tolist() if n_prompt else []
    gen = rng.integers(3, vocab, max(n_gen, 1)).tolist()

    def at_depth() -> None:
        if m.n_past < n_depth:
            m.reset()
            if n_depth:
                m.eval(depth)
        m.rewind(n_depth)

    def pp() -> float:
        at_depth()
        t = time.perf_counter()
        m.eval(prompt)
        return n_prompt / (time.perf_counter() - t)

    def tg() -> float:
        at_depth()
        t = time.perf_counter()
        for tok in gen[:n_gen]:
            m.eval([tok])
        return n_gen / (time.perf_counter() - t)

    out = {}
    if n_prompt:
        pp()  # warm-up (first touch of the weights)
        out["pp"] = statistics.median(pp() for _ in range(reps))
    if n_gen:
        if not n_prompt:
            tg()
        out["tg"] = statistics.median(tg() for _ in range(reps))
    return out


def run(args) -> int:
    check_threads(args)
    check(args.n_prompt >= 0, "-p/--n-prompt", f"must be >= 0, got {args.n_prompt}")
    check(args.n_gen >= 0, "-n/--n-gen", f"must be >= 0, got {args.n_gen}")
    check(args.repetitions >= 1, "-r/--repetitions", f"must be >= 1, got {args.repetitions}")
    check(args.n_depth >= 0, "-d/--n-depth", f"must be >= 0, got {args.n_depth}")
    check(args.n_prompt > 0 or args.n_gen > 0, "-p/-n", "nothing to measure: both -p and -n are 0")
    n_ctx = args.n_depth + max(args.n_prompt, args.n_gen, 1)
    if args.shape:
        qtype = args.qtype or "q4_0"
        m = Model(random_checkpoint(args.shape, qtype), n_ctx=n_ctx, n_threads=args.threads,
                  **kv_cache_kwargs(args))
        name = f"random {args.shape} {qtype}"
    else:
        m = load(args.model, qtype=args.qtype, n_threads=args.threads, n_ctx=n_ctx, **kv_cache_kwargs(args))
        name = m.source
    if n_ctx > m.config.context_length:
        warn("bench", f"-d {args.n_depth} plus the test's tokens ({n_ctx}) go beyond the model's training context "
                      f"({m.config.context_length}): the speed is measured, the text would degrade")
    res = measure(m, args.n_prompt, args.n_gen, args.repetitions, args.n_depth)
    info = cpu_info()
    gb = m.nbytes / 1e9
    out = {"model": name, "size_gb": round(gb, 3), "threads": info["threads"], "isa": info["isa"],
           "kv_cache": args.kv_cache, "type_k": m.kv_cache_k, "type_v": m.kv_cache_v,
           "attn_precision": m.attn_precision, "n_depth": args.n_depth,
           "n_prompt": args.n_prompt, "n_gen": args.n_gen, "repetitions": args.repetitions,
           **{k: round(v, 2) for k, v in res.items()}}
    if args.json or args.output == "json":
        print(json.dumps(out))
        return 0
    at = f" @ d{args.n_depth}" if args.n_depth else ""  # llama-bench's label
    print("| model | size | threads | isa | test | t/s |")
    print("|---|---:|---:|---|---|---:|")
    if "pp" in res:
        print(f"| {name} | {gb:.2f} GB | {info['threads']} | {info['isa']} | pp{args.n_prompt}{at} | {res['pp']:.2f} |")
    if "tg" in res:
        print(f"| {name} | {gb:.2f} GB | {info['threads']} | {info['isa']} | tg{args.n_gen}{at} | {res['tg']:.2f} |")
        print(f"(tg reads {gb * res['tg']:.1f} GB/s of weights)", file=sys.stderr)
    return 0
