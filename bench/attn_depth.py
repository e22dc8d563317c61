"""pp512 at depth 0 against pp512 after N tokens in the KV cache, per attention precision, in one
process: the ratio issue 16 bounds ("pp512 at depth 4096 no more than 1.5x slower than at depth
0"). Each repetition times both depths back to back (two models of the same weights; the deep
one's cache filled once, untimed, and rewound to the depth), so a shared machine's load falls on
both alike; wall time and the process's CPU time (all threads) are reported, medians of --reps.

    python bench/attn_depth.py [--shape 1b] [--depth 4096] [--reps 5] [--threads 2] [--precisions f32,bf16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import llamix


def timed(m, ids, start):
    m.rewind(start)
    w, c = time.perf_counter(), time.process_time()
    m.eval(ids)
    return time.perf_counter() - w, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="1b")
    ap.add_argument("--depth", type=int, default=4096)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="f32,bf16")
    ap.add_argument("-ctk", default="f16")
    ap.add_argument("-ctv", default="f16")
    args = ap.parse_args()
    ck = llamix.random_checkpoint(args.shape, "q4_0")
    rng = np.random.default_rng(0)
    fill = rng.integers(3, ck.config.vocab_size, size=args.depth).tolist()
    prompt = rng.integers(3, ck.config.vocab_size, size=args.p).tolist()
    print(f"random {args.shape} Q4_0, {args.threads} threads, K {args.ctk} V {args.ctv}, pp{args.p}, medians of "
          f"{args.reps}; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"| attention | pp{args.p} d0 t/s | pp{args.p} d{args.depth} t/s | slowdown (wall) | slowdown (CPU time) |")
    print("|---|---:|---:|---:|---:|")
    for precision in args.precisions.split(","):
        models = {d: llamix.Model(ck, n_ctx=d + args.p, n_threads=args.threads, kv_cache_k=args.ctk,
                                  kv_cache_v=args.ctv, attn_precision=precision) for d in (0, args.depth)}
        models[args.depth].eval(fill)
        walls, cpus = {0: [], args.depth: []}, {0: [], args.depth: []}
        for d, m in models.items():
            timed(m, prompt, d)  # warm-up
        for _ in range(args.reps):
            for d, m in models.items():
                w, c = timed(m, prompt, d)
                walls[d].append(w)
                cpus[d].append(c)
        w0, wd = statistics.median(walls[0]), statistics.median(walls[args.depth])
        c0, cd = statistics.median(cpus[0]), statistics.median(cpus[args.depth])
        print(f"| {models[0].attn_precision} | {args.p / w0:.1f} | {args.p / wd:.1f} | {wd / w0:.2f} | {cd / c0:.2f} |", flush=True)
        del models
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
