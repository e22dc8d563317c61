"""OpenBLAS's spinning workers against llamix's threads: one-token decode speed (weight GB/s) when
idle and right after a numpy matrix-vector product (numpy's OpenBLAS workers then spin for about
0.3 s), with llamix's guard (llamix._runtime.idle_blas_threads, run by Model.eval) and without it.

    python bench/blas_spin.py [--threads 2] [--reps 9]

Uses the random-weight TinyLlama-1.1B Q4_0 file of infer_table.py. OPENBLAS_* variables are
left as the environment has them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llamix  # noqa: E402
import llamix.model.model as model_module  # noqa: E402
from infer_common import decode_bytes_per_token, model_file  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    m = llamix.load(model_file("1b", "q4_0"), threads=args.threads, n_ctx=64, tokenizer=False)
    gb = decode_bytes_per_token(m) / 1e9
    a = np.random.default_rng(0).standard_normal((2048, 2048))
    x = np.ones(2048)
    guard = model_module.idle_blas_threads

    def step(after_numpy: bool) -> float:
        m.reset()
        m.eval([5])
        time.sleep(0.5)  # any OpenBLAS spin from before has ended
        if after_numpy:
            a @ x
        t = time.perf_counter()
        m.eval([6])
        return gb / (time.perf_counter() - t)

    res = {"idle": [], "after numpy matvec, guard on": [], "after numpy matvec, guard off": []}
    step(False)
    for _ in range(args.reps):
        res["idle"].append(step(False))
        res["after numpy matvec, guard on"].append(step(True))
        model_module.idle_blas_threads = lambda: None
        try:
            res["after numpy matvec, guard off"].append(step(True))
        finally:
            model_module.idle_blas_threads = guard
    print(f"one-token decode of random 1b Q4_0, {args.threads} threads, weight GB/s, median of {args.reps}")
    print("| case | GB/s | vs idle |")
    print("|---|---:|---:|")
    idle = statistics.median(res["idle"])
    for k, v in res.items():
        print(f"| {k} | {statistics.median(v):.1f} | {statistics.median(v) / idle:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
