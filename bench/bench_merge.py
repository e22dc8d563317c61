"""Merge benchmark: llamix vs mergekit, side by side in one run, on three synthesized ~350M
LLaMA-shaped bf16 models (a base and two fine-tunes), for every merge method.

Each merge runs in its own process (peak RSS = that merge's VmHWM); the inputs are read once
beforehand so both tools read from the page cache. Before timing is trusted, llamix's output is
checked against mergekit's (see check()). llamix runs as a user runs it, through its command line
(`llamix merge CONFIG OUT`), mergekit through its Python entry (run_merge). Times: the merge inside the process, and the whole
process (start, imports, merge, exit; the child's 0.5 s settling pause after its imports is taken
out); both tools' modules are imported before the merge is timed and load compiled bytecode (llamix
is byte-compiled first, as pip does when it installs it). The I/O floor is measured in the same
run: reading the inputs of a method from the page cache (as the merge reads them, with pread on
the same number of threads) plus writing its output to the output folder's file system, best of 3
before the runs, and once more right before each llamix run; llamix's merge time is compared with
it both ways (median / best of 3, and the median of the per-round ratios, which one burst of load
on a shared machine does not skew).

    python bench/bench_merge.py [--repeat 3] [--threads 2] [--methods linear,ties,...]
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
from merge_ab import compile_llamix  # noqa: E402
from merge_models import make_models, n_params  # noqa: E402

METHODS = ["linear", "slerp", "nuslerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
           "breadcrumbs_ties", "della", "della_linear", "model_stock", "passthrough", "sce", "multislerp", "karcher",
           "nearswap", "arcee_fusion", "ram", "ramplus_tl"]
NEW_METHODS = ["sce", "multislerp", "karcher", "nearswap", "arcee_fusion", "ram", "ramplus_tl"]
SETTLE_S = 0.5  # the children's pause after their imports (bench/_merge_child.py), not part of a process's work


def config(method: str, base: Path, ft1: Path, ft2: Path) -> dict:
    common = {"dtype": "bfloat16"}
    two = [{"model": str(ft1)}, {"model": str(ft2)}]
    if method == "sce":
        return {**common, "merge_method": "sce", "base_model": str(base), "parameters": {"select_topk": 0.5},
                "models": two}
    if method in ("ram", "ramplus_tl", "model_stock"):
        return {**common, "merge_method": method, "base_model": str(base), "models": two}
    if method in ("multislerp", "nuslerp"):
        return {**common, "merge_method": method, "base_model": str(base),
                "models": [{"model": str(ft1), "parameters": {"weight": 0.6}},
                           {"model": str(ft2), "parameters": {"weight": 0.4}}]}
    if method == "karcher":
        return {**common, "merge_method": "karcher", "models": [{"model": str(base)}] + two}
    if method == "nearswap":
        return {**common, "merge_method": "nearswap", "base_model": str(base), "parameters": {"t": 0.001},
                "models": [{"model": str(base)}, {"model": str(ft1)}]}
    if method == "arcee_fusion":
        return {**common, "merge_method": "arcee_fusion", "base_model": str(base),
                "models": [{"model": str(base)}, {"model": str(ft1)}]}
    if method == "passthrough":
        return {**common, "merge_method": "passthrough",
                "slices": [{"sources": [{"model": str(base), "layer_range": [0, 11]}]},
                           {"sources": [{"model": str(ft1), "layer_range": [11, 22]}]}]}
    if method == "linear":
        return {**common, "merge_method": "linear", "models": [
            {"model": str(base), "parameters": {"weight": 0.4}}, {"model": str(ft1), "parameters": {"weight": 0.3}},
            {"model": str(ft2), "parameters": {"weight": 0.3}}]}
    if method == "slerp":
        return {**common, "merge_method": "slerp", "base_model": str(base), "parameters": {"t": [0, 0.5, 1]},
                "slices": [{"sources": [{"model": str(base), "layer_range": [0, 22]},
                                        {"model": str(ft1), "layer_range": [0, 22]}]}]}
    params = {"density": 0.5} if method not in ("task_arithmetic",) else {}
    return {**common, "merge_method": method, "base_model": str(base), "parameters": params,
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


# llamix against mergekit per method, on a few tensors, in bf16 ulps at the inputs' scale: the
# largest distance allowed for 99.9% of the elements ("all": for every element). mergekit computes in
# bfloat16 here (dtype: bfloat16), rounding every intermediate; llamix in float32, rounding once.
# task_arithmetic: mergekit rounds four times in bf16 (each delta, each weighted delta, their sum, base +
# sum) and a delta can be twice an input's magnitude: measured 3 ulps (llamix: within 0.5 ulp of float64)
BOUNDS = {"linear": ("all", 1), "slerp": ("all", 2), "task_arithmetic": ("all", 4), "passthrough": ("all", 0),
          "nuslerp": ("all", 7), "model_stock": ("all", 7), "nearswap": ("all", 4), "multislerp": ("all", 6),
          # decisions at a boundary (top-k ties, |d| > epsilon, near-zero votes) on bf16-rounded values
          "ties": (0.98, 5), "breadcrumbs": (0.98, 5), "breadcrumbs_ties": (0.98, 5), "sce": (0.98, 5),
          "ram": (0.98, 5), "ramplus_tl": (0.98, 5),
          }


def check(method: str, ours: Path, theirs: Path, inputs: list[Path]) -> str:
    """The answer first: llamix's output against mergekit's on a few tensors (inputs: base first)."""
    names = ["model.layers.3.mlp.up_proj.weight", "model.layers.10.self_attn.q_proj.weight",
             "model.layers.11.self_attn.v_proj.weight", "model.norm.weight"]
    if method == "passthrough":
        names = ["model.layers.3.mlp.up_proj.weight", "model.layers.15.self_attn.q_proj.weight", "model.norm.weight"]
    worst = []
    for name in names:
        a, b = read(ours, name), read(theirs, name)
        xs = [read(p, name) for p in inputs]
        x = xs[0]
        # bf16 ulp at the inputs' scale: of the largest input (or output) magnitude of each element
        ulp = np.spacing(np.maximum.reduce([np.abs(b)] + [np.abs(v) for v in xs])) * 2.0 ** 16
        d = np.abs(a - b) / ulp
        if method in BOUNDS:
            frac, bound = BOUNDS[method]
            if frac == "all":
                assert d.max() <= bound, (method, name, d.max())
            else:
                assert np.mean(d <= bound) >= frac, (method, name, np.mean(d <= bound))
        elif method == "karcher":
            # mergekit's karcher keeps its units and iterates in bfloat16 here: ten steps of bf16 noise
            # (its tangent never falls below tol) leave its mean ~1-2% (RMS) off the float32 one
            rel = float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b ** 2)))
            assert rel < 0.03, (name, rel)
        elif method == "arcee_fusion":
            # the kept fraction: mergekit estimates the threshold from 10^6 random samples and takes a
            # float32 KL divergence several percent off; entries are either x's or the base's
            ka, kb = np.mean(a != x), np.mean(b != x)
            assert abs(ka - kb) <= 0.2 * max(kb, 1e-3) + 1e-3, (name, ka, kb)
        else:  # dare_*, della*: different random masks; same kept fraction and size of the update
            ma, mb = np.abs(a - x), np.abs(b - x)
            assert abs(ma.mean() / mb.mean() - 1) < 0.05, (name, ma.mean() / mb.mean())
        worst.append(float(np.quantile(d, 0.999)))
    return f"ok (99.9% within {max(worst):.1f} ulp)"


def io_floor(plan, out_dir: Path, threads: int, reps: int = 3) -> float:
    """Seconds to read the plan's input tensors from the page cache (pread, `threads` threads, as the
    merge reads them) plus to write its output's bytes to one file in out_dir; best of `reps`."""
    from concurrent.futures import ThreadPoolExecutor
    spans = []  # (fd, offset, bytes)
    for task in plan.tensors:
        for ref, name in task.inputs:
            r = plan.models[ref].weights.ref(name)
            spans.append((r.fd, r.offset, plan.models[ref].weights.nbytes(name)))
    out_bytes = sum(int(np.prod(t.shape)) * (4 if t.out == "float32" else 2) for t in plan.tensors)
    chunk = 1 << 24
    pieces = [(fd, off + i, min(chunk, n - i)) for fd, off, n in spans for i in range(0, n, chunk)]
    bufs = [bytearray(chunk) for _ in range(threads)]

    def read(k):
        mv = memoryview(bufs[k])
        for fd, off, n in pieces[k::threads]:
            got = 0
            while got < n:
                got += os.preadv(fd, [mv[got:n]], off + got)

    best = float("inf")
    data = np.ones(chunk, np.uint8)
    target = out_dir / "io-floor.bin"
    for _ in range(reps):
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(read, range(threads)))
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        with open(target, "wb") as f:
            left = out_bytes
            while left:
                left -= f.write(memoryview(data)[: min(chunk, left)])
        t_write = time.perf_counter() - t
        target.unlink()
        best = min(best, t_read + t_write)
    return best


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
    ap.add_argument("--mergekit-repeat", type=int, default=None,
                    help="default: --repeat; 0 runs llamix alone (no ratios, no output check)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", help="also write every run's figures here")
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
    print(f"llamix byte-compiled in {compile_llamix()} (as an installed package is)")
    bw = memory_bandwidth_gbs()
    print(f"memory copy bandwidth: {bw:.1f} GB/s; threads: {args.threads}; repeats: {args.repeat}")
    from llamix.merge.config import load_config
    from llamix.merge.plan import build_plan
    rows = []
    for method in args.methods.split(","):
        cfg_path = outroot / f"{method}.yml"
        outroot.mkdir(parents=True, exist_ok=True)
        cfg_path.write_text(yaml.safe_dump(config(method, base, ft1, ft2)))
        plan = build_plan(load_config(cfg_path))
        in_bytes = plan.input_bytes
        floor = io_floor(plan, outroot, args.threads)
        res = {"llamix": [], "mergekit": []}
        reps = {"llamix": args.repeat,
                "mergekit": args.repeat if args.mergekit_repeat is None else args.mergekit_repeat}
        for r in range(max(reps.values())):  # the tools take turns, so both see the same machine
            for tool in ("mergekit", "llamix"):
                if r < reps[tool]:
                    # the floor again right before each llamix run: on a shared machine the load changes
                    # from minute to minute, and a ratio taken within one round sees one load
                    round_floor = io_floor(plan, outroot, args.threads, reps=1) if tool == "llamix" else None
                    res[tool].append(run(tool, cfg_path, outroot / f"{method}-{tool}", args.threads))
                    if round_floor is not None:
                        res[tool][-1]["floor_s"] = round_floor
        del plan
        if not res["mergekit"]:
            verdict = "not checked (no mergekit run)"
        else:
            try:
                verdict = check(method, outroot / f"{method}-llamix", outroot / f"{method}-mergekit", [base, ft1, ft2])
            except AssertionError as e:  # reported in the table, and the run goes on to the other methods
                verdict = f"MISMATCH {e}"
        med = {k: {m: statistics.median(r[m] for r in v) for m in ("merge_s", "wall_s", "maxrss_mb", "import_s")}
               for k, v in res.items() if v}
        for v in med.values():
            v["process_s"] = v["wall_s"] - SETTLE_S
        rows.append((method, in_bytes, floor, med, verdict, res))
        l, m = med["llamix"], med.get("mergekit")
        peer = (f"mergekit {m['process_s']:.2f} s (merge {m['merge_s']:.2f}, imports {m['import_s']:.2f})" if m
                else "mergekit not run")
        print(f"{method}: llamix {l['process_s']:.2f} s (merge {l['merge_s']:.2f}, imports {l['import_s']:.2f}), "
              f"{peer}; I/O floor {floor:.2f} s; {verdict}", flush=True)
        for tool in ("llamix", "mergekit"):
            shutil.rmtree(outroot / f"{method}-{tool}", ignore_errors=True)
        if args.json:  # after every method, so an interrupted run keeps what it measured
            Path(args.json).write_text(json.dumps([{"method": m, "input_bytes": b, "io_floor_s": f, "median": med,
                                                     "check": v, "runs": r} for m, b, f, med, v, r in rows], indent=1))
    print()
    print("| method | input GB | llamix process s (merge s) | mergekit process s (merge s) | speed-up (merge) | "
          "speed-up (process) | llamix GB/s | I/O floor s | llamix merge / floor (per round) | llamix RSS MB | "
          "mergekit RSS MB | RSS ratio | check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for method, in_bytes, floor, med, verdict, res in rows:
        l, m = med["llamix"], med.get("mergekit")
        per_round = statistics.median(r["merge_s"] / r["floor_s"] for r in res["llamix"])
        if m:
            peer = (f"{m['process_s']:.2f} ({m['merge_s']:.2f}) | {m['merge_s'] / l['merge_s']:.1f}x | "
                    f"{m['process_s'] / l['process_s']:.1f}x")
        else:
            peer = "- | - | -"
        print(f"| {method} | {in_bytes / 1e9:.2f} | {l['process_s']:.2f} ({l['merge_s']:.2f}) | {peer} | "
              f"{in_bytes / l['merge_s'] / 1e9:.2f} | {floor:.2f} | {l['merge_s'] / floor:.2f} "
              f"({per_round:.2f}) | {l['maxrss_mb']:.0f} | "
              + (f"{m['maxrss_mb']:.0f} | {l['maxrss_mb'] / m['maxrss_mb']:.2f}" if m else "- | -") + f" | {verdict} |")
    print(f"\nprocess: the whole merging process (start, imports, merge, exit) less the child's {SETTLE_S} s pause "
          "after its imports; merge: inside the process; I/O floor: reading the method's inputs from the page cache "
          "plus writing its output, measured in this run (best of 3; per round: the median of llamix's merge over the "
          "floor measured right before it); RSS: peak resident set of the merging process (VmHWM)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
