"""One-token decoding (or, with -p N, an N-token prompt) of two llamix builds in lockstep: which one
runs faster on this machine now.

    python bench/decode_ab.py BASE_PYTHONPATH NEW_PYTHONPATH [--depths 0,4096] [-n 32] [-p 0] [--rounds 15]

Each PYTHONPATH is a folder holding a `llamix` package with its _C extension (e.g. a copy of
python/llamix built from main). Two extension modules cannot share one process, so each build runs
in a child process holding a random TinyLlama-1.1B Q4_0 (`llamix bench --shape 1b`; or the file of
`--model`) with an f16
(`--cache-type`) cache filled to each depth once; the parent tells them in turn to decode -n tokens after rewinding
to the depth (two untimed tokens first: the first ~20 ms of streaming after an idle spell run
slow on some VMs), swapping the order every round. With -p N each timing is one N-token prompt
(pp) after rewinding to the depth, after an untimed one, and each build's slowdown at depth
against depth 0 is printed too (per-round ratios, like issue 16's "pp512 at depth 4096 against
depth 0"). The ratio new/base of ms per token is taken
per round, so load that drifts over seconds cancels out; medians and quartiles are printed. Both
builds must give the same logits (checked first, bit for bit).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def worker(depths: list[int], n_gen: int, threads: int, precision: str, cpu_time: bool, model: str,
           n_prompt: int, cache_type: str = "f16") -> None:
    """Fills one cache per depth, prints a checksum line, then one ms/token line per command read
    on stdin (the command is the depth)."""
    from llamix import Model
    from llamix.loaders import load_checkpoint
    from llamix.loaders.random import random_checkpoint

    rng = np.random.default_rng(0)
    ckpt = load_checkpoint(model) if model else random_checkpoint("1b", "q4_0")
    models = {}
    for d in depths:
        m = Model(ckpt, n_ctx=d + max(n_gen + 2, n_prompt), n_threads=threads, kv_cache_k=cache_type, kv_cache_v=cache_type,
                  attn_precision=precision)
        if d:
            m.eval(rng.integers(3, m.config.vocab_size, d).tolist())
        models[d] = m
    gen = rng.integers(3, ckpt.config.vocab_size, n_gen + 2).tolist()
    prompt = rng.integers(3, ckpt.config.vocab_size, n_prompt).tolist()
    digest = hashlib.sha256()
    for d, m in models.items():
        m.rewind(d)
        digest.update(m.eval(prompt if n_prompt else gen[:1]).tobytes())
    print(digest.hexdigest(), flush=True)
    clock = time.process_time if cpu_time else time.perf_counter
    for line in sys.stdin:
        d = int(line)
        m = models[d]
        if n_prompt:
            m.rewind(d)
            m.eval(prompt)  # untimed
            m.rewind(d)
            t0 = clock()
            m.eval(prompt)
            print((clock() - t0) * 1e3 / n_prompt, flush=True)
            continue
        m.rewind(d)
        for tok in gen[:2]:  # untimed: wakes the threads and the memory
            m.eval([tok])
        m.rewind(d)
        t0 = clock()
        for tok in gen[2:]:
            m.eval([tok])
        print((clock() - t0) * 1e3 / n_gen, flush=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker([int(d) for d in sys.argv[2].split(",")], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5],
               sys.argv[6] == "1", sys.argv[7], int(sys.argv[8]), sys.argv[9])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="PYTHONPATH of the base build")
    ap.add_argument("new", help="PYTHONPATH of the new build")
    ap.add_argument("--depths", default="0,4096")
    ap.add_argument("-m", "--model", default="", help="a model file or folder (default: a random TinyLlama-1.1B Q4_0)")
    ap.add_argument("-n", type=int, default=32, help="tokens decoded per timing")
    ap.add_argument("-p", type=int, default=0, help="time one prompt of this many tokens instead of -n decodes")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--attn-precision", default="auto", choices=["auto", "f32", "bf16"])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cache-type", default="f16", choices=["f32", "f16", "q8_0", "q4_0"],
                    help="the KV cache's type, keys and values (default f16)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the process's CPU time instead of the wall clock (steadier on a shared machine "
                         "with -t 1; with more threads it counts the workers' spinning too)")
    ap.add_argument("--base-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the base child only (repeatable)")
    ap.add_argument("--new-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the new child only (repeatable)")
    args = ap.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    builds = {"base": args.base, "new": args.new}
    extra_env = {"base": args.base_env, "new": args.new_env}
    what = f"pp{args.p}" if args.p else "decode"
    print(f"{what}, {args.model or 'random TinyLlama-1.1B Q4_0'}, {args.cache_type} cache, {args.threads} threads, attn {args.attn_precision}, "
          f"{args.rounds} rounds of {args.p or args.n} tokens; load average {os.getloadavg()[0]:.1f}")
    procs = {name: subprocess.Popen([sys.executable, __file__, "--worker", args.depths, str(args.n),
                                     str(args.threads), args.attn_precision, "1" if args.cpu_time else "0",
                                     args.model, str(args.p), args.cache_type],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": path,
                                         **dict(e.split("=", 1) for e in extra_env[name])})
             for name, path in builds.items()}
    answers = {name: p.stdout.readline() for name, p in procs.items()}
    if answers["base"] != answers["new"]:
        print("WARNING: the two builds give different logits")
    ms = {(name, d): [] for name in builds for d in depths}
    for r in range(args.rounds):
        for d in depths:
            order = list(builds) if r % 2 == 0 else list(builds)[::-1]
            for name in order:
                procs[name].stdin.write(f"{d}\n")
                procs[name].stdin.flush()
                ms[name, d].append(float(procs[name].stdout.readline()))
    for p in procs.values():
        p.stdin.close()
        p.wait()
    for d in depths:
        ratios = sorted(b / a for a, b in zip(ms["base", d], ms["new", d]))
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"depth {d}: base {statistics.median(ms['base', d]):.2f} ms/token "
              f"({1e3 / statistics.median(ms['base', d]):.1f} t/s), new {statistics.median(ms['new', d]):.2f} ms/token "
              f"({1e3 / statistics.median(ms['new', d]):.1f} t/s); new/base time {statistics.median(ratios):.3f} "
              f"(quartiles {q[0]:.3f}-{q[2]:.3f})")
    if depths[0] == 0:
        for name in builds:
            for d in depths[1:]:
                slow = sorted(b / a for a, b in zip(ms[name, 0], ms[name, d]))
                print(f"{name}: depth {d} against depth 0, time x{statistics.median(slow):.3f} "
                      f"(quartiles {statistics.quantiles(slow, n=4)[0]:.3f}-{statistics.quantiles(slow, n=4)[2]:.3f})"
                      if len(slow) > 1 else f"{name}: depth {d} against depth 0, time x{slow[0]:.3f}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
