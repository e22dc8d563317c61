"""One layer's causal attention (`_C.attention_causal`), old tree against new in lockstep: each
round runs both trees, each in its own process (order swapped every round), and reports the
median of the per-round time ratios new / old with quartiles. Default shape: TinyLlama-1.1B's
(32 query heads on 4 KV heads, head_dim 64), 512 queries at depth 4096, f16 cache (--cache-type), float32
products.

    python bench/attn_layer_ab.py OLD_PYTHONPATH NEW_PYTHONPATH [--n 512] [--depth 4096] [--threads 2] [--rounds 5]
    python bench/attn_layer_ab.py --child [--n ...]     (one tree: prints the median seconds)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def child(args) -> None:
    import numpy as np

    import llamix
    from llamix import _C

    llamix.set_threads(args.threads)
    rng = np.random.default_rng(0)
    n, pos, nh, nkv, hd = args.n, args.depth, args.heads, args.kv_heads, args.head_dim
    q = rng.standard_normal((n, nh, hd)).astype(np.float32)
    k = rng.standard_normal((pos + n, nkv * hd)).astype(np.float32)
    v = rng.standard_normal((pos + n, nkv * hd)).astype(np.float32)
    scale = hd ** -0.5
    _C.attention_causal(q, k, v, pos, nkv, 0, scale, args.cache_type, args.cache_type)  # warm-up
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        _C.attention_causal(q, k, v, pos, nkv, 0, scale, args.cache_type, args.cache_type)
        times.append(time.perf_counter() - t)
    print(statistics.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="*")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--depth", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cache-type", default="f16", choices=["f32", "f16", "q8_0", "q4_0"],
                    help="the cache's type, keys and values (default f16)")
    args = ap.parse_args()
    if args.child:
        child(args)
        return 0
    old, new = args.trees
    flags = [f"--n={args.n}", f"--depth={args.depth}", f"--heads={args.heads}", f"--kv-heads={args.kv_heads}",
             f"--head-dim={args.head_dim}", f"--threads={args.threads}", f"--reps={args.reps}",
             f"--cache-type={args.cache_type}"]

    def run(tree):
        env = dict(os.environ, PYTHONPATH=tree)
        out = subprocess.run([sys.executable, __file__, "--child", *flags], env=env, capture_output=True, text=True,
                             check=True)
        return float(out.stdout.split()[-1])

    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    ratios, t_old, t_new = [], [], []
    for r in range(args.rounds):
        if r % 2:
            b, a = run(new), run(old)
        else:
            a, b = run(old), run(new)
        t_old.append(a)
        t_new.append(b)
        ratios.append(b / a)
        print(f"round {r}: old {a * 1e3:.1f} ms, new {b * 1e3:.1f} ms, new/old {b / a:.3f}", flush=True)
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    print(f"old {statistics.median(t_old) * 1e3:.1f} ms, new {statistics.median(t_new) * 1e3:.1f} ms; "
          f"new/old median {statistics.median(ratios):.3f} (quartiles {q[0]:.3f}-{q[2]:.3f}); "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
