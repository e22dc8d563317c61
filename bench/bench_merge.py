"""Merge benchmark: llamix vs mergekit, side by side in one run, on three synthesized ~350M
LLaMA-shaped bf16 models (a base and two fine-tunes), for linear, slerp, ties and dare_ties.

Each merge runs in its own process (peak RSS = that merge's ru_maxrss); the inputs are read once
beforehand so both tools read from the page cache. Before timing is trusted, llamix's output is
checked against mergekit's (linear: within 1 bf16 ulp; the others: statistics, see check()).

    python bench/bench_merge.py [--repeat 3] [--threads 2] [--models /tmp/llamix-bench-models]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from merge_models import make_models, n_params  # noqa: E402

METHODS = ["linear", "slerp", "ties", "dare_ties"]


def config(method: str, base: Path, ft1: Path, ft2: Path) -> dict:
    common = {"dtype": "bfloat16"}
    if method == "linear":
        return {**common, "merge_method": "linear", "models": [
            {"model": str(base), "parameters": {"weight": 0.4}}, {"model": str(ft1), "parameters": {"weight": 0.3}},
            {"model": str(ft2), "parameters": {"weight": 0.3}}]}
    if method == "slerp":
        return {**common, "merge_method": "slerp", "base_model": str(base), "parameters": {"t": [0, 0.5, 1]},
                "slices": [{"sources": [{"model": str(base), "layer_range": [0, 22]},
                                        {"model": str(ft1), "layer_range": [0, 22]}]}]}
    return {**common, "merge_method": method, "base_model": str(base), "parameters": {"density": 0.5},
            "models": [{"model": str(ft1), "parameters": {"weight": 0.6}},
                       {"model": str(ft2), "parameters": {"weight": 0.4}}]}


def run(tool: str, cfg_path: Path, out: Path, threads: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    res = subprocess.run([sys.executable, str(HERE / "_merge_child.py"), tool, str(cfg_path), str(out), str(threads)],
                         capture_output=True, text=True, env={**os.environ, "LLAMIX_QUIET": "1"})
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{res.stderr[-3000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["wall_s"] = wall
    return info


def read(folder: Path, name: str) -> np.ndarray:
    from llamix.formats.safetensors import SafetensorsCheckpoint
    a = np.asarray(SafetensorsCheckpoint(folder).get(name))
    return (a.astype(np.uint32) << 16).view(np.float32) if a.dtype == np.uint16 else a.astype(np.float32)


def check(method: str, ours: Path, theirs: Path, base: Path) -> str:
    """The answer first: llamix's output against mergekit's on a few tensors."""
    names = ["model.layers.3.mlp.up_proj.weight", "model.layers.10.self_attn.q_proj.weight", "model.norm.weight"]
    worst = []
    for name in names:
        a, b, x = read(ours, name), read(theirs, name), read(base, name)
        ulp = np.spacing(np.maximum(np.abs(b), np.abs(x))) * 2.0 ** 16  # bf16 ulp at the inputs' scale
        d = np.abs(a - b) / ulp
        if method == "linear":
            assert d.max() <= 1, (name, d.max())
        elif method == "slerp":
            assert d.max() <= 2, (name, d.max())
        elif method == "ties":
            assert np.mean(d <= 5) > 0.99, (name, np.mean(d <= 5))  # threshold ties and near-zero votes differ
        else:  # dare_ties: different random masks; same kept fraction and size of the update
            ma, mb = np.abs(a - x), np.abs(b - x)
            assert abs(ma.mean() / mb.mean() - 1) < 0.05, (name, ma.mean() / mb.mean())
        worst.append(float(np.quantile(d, 0.999)))
    return f"ok (99.9% within {max(worst):.1f} ulp)"


def memory_bandwidth_gbs() -> float:
    """Copy bandwidth (read + write) of a 256 MB buffer, best of 3."""
    a = np.ones(64 * 1024 * 1024, np.float32)
    b = np.empty_like(a)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(b, a)
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="/tmp/llamix-bench-models")
    ap.add_argument("--out", default="/dev/shm/llamix-bench-out",
                    help="outputs (default tmpfs: this VM's disk writes at ~0.2-0.3 GB/s, which would hide both tools' speed)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mergekit-repeat", type=int, default=None, help="default: --repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    root, outroot = Path(args.models), Path(args.out)
    t = time.perf_counter()
    base, ft1, ft2 = make_models(root)
    print(f"models: 3 x {n_params() / 1e6:.0f}M parameters, bf16, in {root} ({time.perf_counter() - t:.0f} s)")
    for f in (base, ft1, ft2):  # warm the page cache so both tools read from memory
        for p in f.glob("*.safetensors"):
            with open(p, "rb") as fh:
                while fh.read(1 << 26):
                    pass
    bw = memory_bandwidth_gbs()
    print(f"memory copy bandwidth: {bw:.1f} GB/s; threads: {args.threads}; repeats: {args.repeat}")
    rows = []
    for method in args.methods.split(","):
        cfg_path = outroot / f"{method}.yml"
        outroot.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(yaml.safe_dump(config(method, base, ft1, ft2)))
        from llamix.merge.config import load_config
        from llamix.merge.plan import build_plan
        in_bytes = build_plan(load_config(cfg_path)).input_bytes
        res = {"llamix": [], "mergekit": []}
        reps = {"llamix": args.repeat, "mergekit": args.mergekit_repeat or args.repeat}
        for r in range(max(reps.values())):  # the tools take turns, so both see the same machine
            for tool in ("mergekit", "llamix"):
                if r < reps[tool]:
                    res[tool].append(run(tool, cfg_path, outroot / f"{method}-{tool}", args.threads))
        verdict = check(method, outroot / f"{method}-llamix", outroot / f"{method}-mergekit", base)
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("merge_s", "wall_s", "maxrss_mb")}
               for k, v in res.items()}
        rows.append((method, in_bytes, med, verdict))
        print(f"{method}: llamix {med['llamix']['merge_s']:.2f} s, mergekit {med['mergekit']['merge_s']:.2f} s; {verdict}",
              flush=True)
        for tool in ("llamix", "mergekit"):
            shutil.rmtree(outroot / f"{method}-{tool}", ignore_errors=True)
    print()
    print("| method | input GB | llamix s | mergekit s | speed-up | llamix GB/s (of copy bw) | llamix RSS MB | "
          "mergekit RSS MB | RSS ratio | check |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, in_bytes, med, verdict in rows:
        l, m = med["llamix"], med["mergekit"]
        gbs = in_bytes / l["merge_s"] / 1e9
        print(f"| {method} | {in_bytes / 1e9:.2f} | {l['merge_s']:.2f} | {m['merge_s']:.2f} | "
              f"{m['merge_s'] / l['merge_s']:.1f}x | {gbs:.2f} ({gbs / bw:.0%}) | {l['maxrss_mb']:.0f} | "
              f"{m['maxrss_mb']:.0f} | {l['maxrss_mb'] / m['maxrss_mb']:.2f} | {verdict} |")
    print("\ntimes: median merge time inside the process (imports excluded: llamix ~0.1 s, mergekit/torch ~2-4 s); "
          "RSS: peak resident set of the merging process (VmHWM)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
