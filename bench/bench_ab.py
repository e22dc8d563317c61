"""Prompt processing and generation of two llamix builds and of llama.cpp, on the same file, in lockstep.

    python bench/bench_ab.py BASE_PYTHONPATH NEW_PYTHONPATH -m FILE [-p 512] [-n 0] [-t 2] [--rounds 3]

Each PYTHONPATH is a folder holding a `llamix` package with its _C extension (e.g. a copy of
python/llamix built from main). Every round runs `llamix bench -r 1` of each build and
`llama-bench -r 1` (bench/llama_cpp_tools.py's build; f16 cache, flash attention off, its
defaults), each a process of its own that times after one untimed warm-up run, in an order
rotated every round, so load that drifts over minutes (other sessions on a shared machine) hits
all three alike. The ratios new/base and new/llama.cpp are taken per round; their medians and the
median tokens/s are printed. llama.cpp's output head and llamix's may differ in what they compute
(llama-bench's pp takes the last token's logits only), as in bench/infer_table.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_cpp_tools import tool  # noqa: E402


def tokens_per_s(records: list[dict]) -> dict[str, float]:
    """{"pp": t/s, "tg": t/s} from llama-bench style JSON records."""
    return {("pp" if r["n_prompt"] else "tg"): float(r["avg_ts"]) for r in records}


def run_llamix(pythonpath: str, args) -> dict[str, float]:
    cmd = [sys.executable, "-m", "llamix", "bench", "-m", args.model, "-p", str(args.p), "-n", str(args.n),
           "-t", str(args.threads), "-r", "1", "--kv-cache", "f16", "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": pythonpath})
    return tokens_per_s(json.loads(out.stdout))


def run_llama_cpp(exe, args) -> dict[str, float]:
    cmd = [str(exe), "-m", args.model, "-p", str(args.p), "-n", str(args.n), "-t", str(args.threads), "-r", "1",
           "-o", "json"]
    return tokens_per_s(json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="PYTHONPATH of the base build")
    ap.add_argument("new", help="PYTHONPATH of the new build")
    ap.add_argument("-m", "--model", required=True, help="a GGUF file both engines read")
    ap.add_argument("-p", type=int, default=512, help="prompt tokens (0: skip)")
    ap.add_argument("-n", type=int, default=0, help="generated tokens (0: skip)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    exe = tool("llama-bench")
    if exe is None:
        raise SystemExit("llama-bench is not built (python bench/llama_cpp_tools.py)")
    runs = {"base": lambda: run_llamix(args.base, args), "new": lambda: run_llamix(args.new, args),
            "llama.cpp": lambda: run_llama_cpp(exe, args)}
    print(f"{args.model}: pp{args.p} / tg{args.n}, {args.threads} threads, {args.rounds} rounds; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    ts = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:
            ts[name].append(runs[name]())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v}" for k, v in ((k, ts[k][-1]) for k in names)), flush=True)
    for test in ts["new"][0]:
        col = {name: np.array([s[test] for s in ts[name]]) for name in names}
        print(f"{test}: base {np.median(col['base']):.1f} t/s, new {np.median(col['new']):.1f} t/s, "
              f"llama.cpp {np.median(col['llama.cpp']):.1f} t/s; new/base {np.median(col['new'] / col['base']):.2f}, "
              f"new/llama.cpp {np.median(col['new'] / col['llama.cpp']):.2f}, "
              f"base/llama.cpp {np.median(col['base'] / col['llama.cpp']):.2f}")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
