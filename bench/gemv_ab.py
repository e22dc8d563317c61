"""GEMV of two llamix builds in lockstep: which one streams a weight faster on this machine now.

    python bench/gemv_ab.py BASE_PYTHONPATH NEW_PYTHONPATH [--types q4_0,q2_k] [--threads 1] [--rounds 30]
                            [--working-set 512] [--tokens 512]

Each PYTHONPATH is a folder holding a `llamix` package (a copy of python/llamix with its _C
extension, e.g. one built from main). Two extension modules cannot share one process (pybind11
registers their types globally), so each build runs in a child process and the parent tells them
in turn to stream ~48 MiB of 4096x4096 weights (a 128 MiB working set of copies, 1-token GEMVs),
swapping the order every round. The ratio new/base is taken per round, so load that changes over
seconds (other processes on a shared 2-core machine) cancels out; the median and the quartiles
of the per-round ratios are printed. Both builds must give the same answer (checked first; with
--tolerance REL, within REL of the largest output: for a change that changes the numerics on
purpose, e.g. Q5_1 from float32 dequantized rows to packed kernels against 8-bit activations).
One thread is the steadiest measure when the machine is shared; two is the decode setting.
`--working-set 512` (MiB per build) reads from memory: the default 128 MiB is partly served by this
VM's host L3 (docs/PERFORMANCE.md, GEMV round 5), a relative measure of the kernels, not of DRAM.
Each process's memory lands where the host puts it: fresh processes can differ by 10-50% for
identical code, so repeat a run before trusting a ratio far from 1 (GEMV round 6).
`--tokens N` (N > 1) times a GEMM of N tokens against one 4096x4096 weight instead (GFLOP/s,
two calls per round after an untimed one), in the same lockstep.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STREAM_BYTES = 48 << 20
WORKING_SET_MIB = 128   # below this VM's reported L3 (480 MiB): a relative measure, not a memory stream


def worker(qtype: str, threads: int, working_set: int, tokens: int = 1) -> None:
    """Prepares the copies, prints a checksum line, then one GB/s line per line read on stdin."""
    sys.path.insert(0, str(Path(__file__).parent))
    import llamix
    from llamix import _C
    from matmul_table import weight

    llamix.set_threads(threads)
    rng = np.random.default_rng(0)
    k = rows = 4096
    qt = weight(rng.standard_normal((rows, k), dtype=np.float32), qtype, rng)
    copies = max(2, -(-working_set // qt.nbytes))
    if tokens > 1:
        w = _C.PreparedWeight(qt.data.copy(), qt.info.gguf_id, k)
        X = rng.standard_normal((tokens, k), dtype=np.float32)
        Y = np.empty((tokens, rows), np.float32)
        w.matmul(X, Y)
        print(json.dumps(Y[-1].astype(np.float64).tolist()[:64]), flush=True)
        for _ in sys.stdin:
            w.matmul(X, Y)  # untimed: wakes the threads
            t0 = time.perf_counter()
            w.matmul(X, Y)
            w.matmul(X, Y)
            print(2 * 2.0 * tokens * rows * k / (time.perf_counter() - t0) / 1e9, flush=True)
        return
    mats = [_C.PreparedWeight(qt.data.copy(), qt.info.gguf_id, k) for _ in range(copies)]
    x = rng.standard_normal((1, k), dtype=np.float32)
    y = np.empty((1, rows), np.float32)
    mats[0].matmul(x, y)
    print(json.dumps(y[0].astype(np.float64).tolist()[:64]), flush=True)
    calls, pos = max(1, max(STREAM_BYTES, working_set // 2) // qt.nbytes), 0
    for _ in sys.stdin:
        mats[pos % copies].matmul(x, y)  # untimed: wakes the threads
        t0 = time.perf_counter()
        for i in range(calls):
            mats[(pos + i) % copies].matmul(x, y)
        pos += calls
        print(qt.nbytes * calls / (time.perf_counter() - t0) / 1e9, flush=True)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) << 20, int(sys.argv[5]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="PYTHONPATH of the base build")
    ap.add_argument("new", help="PYTHONPATH of the new build")
    ap.add_argument("--types", default="q4_0,q4_k,q4_1,q2_k,q3_k,iq4_nl,iq4_xs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--working-set", type=int, default=WORKING_SET_MIB, help="MiB of weight copies per build")
    ap.add_argument("--tokens", type=int, default=1, help="tokens per matmul (> 1: a GEMM, GFLOP/s)")
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="allowed difference of the answers, relative to the largest (default: identical)")
    args = ap.parse_args()
    builds = {"base": args.base, "new": args.new}
    stream_mib = max(STREAM_BYTES >> 20, args.working_set // 2)
    if args.tokens > 1:
        print(f"GEMM {args.tokens} tokens x 4096x4096, {args.threads} thread(s), {args.rounds} rounds; "
              f"load average {os.getloadavg()[0]:.1f}")
    else:
        print(f"GEMV 4096x4096, {args.threads} thread(s), {args.rounds} rounds of ~{stream_mib} MiB per build "
              f"({args.working_set} MiB of copies); "
              f"load average {os.getloadavg()[0]:.1f}")
    unit = "GFLOP/s" if args.tokens > 1 else "GB/s"
    for qtype in args.types.split(","):
        procs = {name: subprocess.Popen([sys.executable, __file__, "--worker", qtype, str(args.threads), str(args.working_set),
                                         str(args.tokens)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": path})
                 for name, path in builds.items()}
        answers = {name: np.array(json.loads(p.stdout.readline())) for name, p in procs.items()}
        diff = np.abs(answers["base"] - answers["new"]).max()
        if diff > args.tolerance * np.abs(answers["base"]).max():
            raise SystemExit(f"{qtype}: the two builds give different answers (max difference {diff:.3g})")
        gbs = {name: [] for name in builds}
        for r in range(args.rounds):
            for name in ("base", "new") if r % 2 == 0 else ("new", "base"):
                procs[name].stdin.write("go\n")
                procs[name].stdin.flush()
                gbs[name].append(float(procs[name].stdout.readline()))
        for p in procs.values():
            p.stdin.close()
            p.wait()
        base, new = np.array(gbs["base"]), np.array(gbs["new"])
        ratio = new / base
        print(f"{qtype:7s} base {np.median(base):5.1f} {unit}  new {np.median(new):5.1f} {unit}  new/base "
              f"{np.median(ratio):.3f} (quartiles {np.percentile(ratio, 25):.2f}-{np.percentile(ratio, 75):.2f})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
