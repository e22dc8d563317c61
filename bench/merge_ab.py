"""Merges of two llamix builds in lockstep: which one merges faster on this machine now.

    python bench/merge_ab.py BASE_PYTHONPATH NEW_PYTHONPATH [--methods linear,model_stock] [--rounds 9]

Each PYTHONPATH is a folder holding a `llamix` package (a copy of python/llamix with its _C
extension, e.g. one built from main), optionally followed by environment settings for its runs
(`python,LLAMIX_MERGE_CACHE_MB=0`). Each merge is a fresh process, as in bench_merge.py (its
configs in --configs, written there by a bench_merge.py run), timed as a user times it (the whole
process, less the child's settling pause) and inside (the merge). The builds take turns, the order
swapped every round, so load that changes over seconds on a shared 2-core machine cancels out in
the per-round ratios new/base, whose median and quartiles are printed. Both builds are
byte-compiled first (compile_llamix), and their outputs must be the same bytes (sha256 of every
file, compared first).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTLE_S = 0.5  # bench/_merge_child.py's pause after its imports


def compile_llamix(pythonpath: str | None = None) -> Path:
    """Byte-compile the llamix package the children import (into its __pycache__ folders), as pip
    does when it installs a package: mergekit, numpy and yaml load compiled bytecode from
    site-packages, while a llamix run from its source tree with PYTHONDONTWRITEBYTECODE set (as in
    this project's sessions) would compile its ~60 modules again in every timed process."""
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else None
    code = "import compileall, pathlib, llamix; p = pathlib.Path(llamix.__file__).parent; " \
           "compileall.compile_dir(p, quiet=1); print(p)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return Path(res.stdout.strip().splitlines()[-1])


def run(build: str, cfg: Path, out: Path, threads: int) -> dict:
    """build: a PYTHONPATH, optionally followed by ,NAME=VALUE settings of the child's environment."""
    shutil.rmtree(out, ignore_errors=True)
    pythonpath, *settings = build.split(",")
    env = {**os.environ, "LLAMIX_QUIET": "1", "PYTHONPATH": pythonpath, **dict(s.split("=", 1) for s in settings)}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, str(HERE / "_merge_child.py"), "llamix", str(cfg), str(out), str(threads)],
                         capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        raise RuntimeError(f"{build}: merge failed:\n{res.stderr[-3000:]}")
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["process_s"] = wall - SETTLE_S
    return info


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def quartiles(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return f"{q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("new")
    ap.add_argument("--methods", default="linear")
    ap.add_argument("--configs", default="/dev/shm/llamix-bench-out")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    root = Path(args.configs)
    builds = {"base": args.base, "new": args.new}
    for build in builds.values():
        compile_llamix(build.split(",")[0])
    for method in args.methods.split(","):
        cfg = root / f"{method}.yml"
        outs = {k: root / f"{method}-ab-{k}" for k in builds}
        for k, path in builds.items():  # untimed: warms the page cache and checks the bytes
            run(path, cfg, outs[k], args.threads)
        same = digest(outs["base"]) == digest(outs["new"])
        times = {k: [] for k in builds}
        for r in range(args.rounds):
            order = list(builds) if r % 2 == 0 else list(builds)[::-1]
            for k in order:
                times[k].append(run(builds[k], cfg, outs[k], args.threads))
        for out in outs.values():
            shutil.rmtree(out, ignore_errors=True)
        line = [f"{method}: outputs {'identical' if same else 'DIFFER'}"]
        for what in ("process_s", "merge_s"):
            ratios = [n[what] / b[what] for b, n in zip(times["base"], times["new"])]
            med = {k: statistics.median(t[what] for t in v) for k, v in times.items()}
            line.append(f"{what[:-2]} base {med['base']:.3f} s, new {med['new']:.3f} s, new/base {quartiles(ratios)}")
        print("; ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
