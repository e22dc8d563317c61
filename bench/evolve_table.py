"""Evolutionary merge search throughput: candidates evaluated per hour by ``llamix evolve`` and by
mergekit-evolve (transformers backend) on the same CPUs, the same models and the same task.

Models: a base and two fine-tunes (base + noise; random weights, which is fine for throughput)
of two shapes: stories260K's (dim 64, 5 layers, vocab 512) and TinyLlama-1.1B's (dim 2048, 22
layers, vocab 32000), bf16 Hugging Face folders made once (bench/merge_models.py). The search:
task_arithmetic, one weight per fine-tune in [0, 1]. The task: QUESTIONS two-choice questions
scored by the log-likelihood of each choice (llamix: objective.tasks; mergekit-evolve: the same
JSONL as an lm-eval ``multiple_choice`` task). llamix evaluates in Q8_0 (its default); mergekit
in bf16 (transformers on the CPU).

Each tool runs with 1 and with 2 Ray workers on a Ray instance of 2 CPUs (llamix: 1 worker gets
both CPUs as threads, 2 workers one each). Time is the search itself, after Ray has started
(Ray's start-up is reported apart). Run under the bench lock:

    flock /work/bench.lock python bench/evolve_table.py [--shapes stories,tinyllama] [--workers 1,2]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "python"))
from merge_models import make_models  # noqa: E402

ASSETS = ROOT.parent / "shared" / "assets"
SHAPES = {
    "stories": (dict(hidden=64, layers=5, ffn=172, vocab=512, heads=8, kv_heads=4), ASSETS / "stories260K" / "tok512.model"),
    "tinyllama": (dict(hidden=2048, layers=22, ffn=5632, vocab=32000, heads=32, kv_heads=4),
                  ASSETS / "llama_tokenizer" / "tokenizer.model"),
}
QUESTIONS = 8
CACHE = Path(os.environ.get("LLAMIX_BENCH_CACHE", Path.home() / ".cache" / "llamix-bench-evolve"))


def models(shape: str) -> list[Path]:
    dims, tok = SHAPES[shape]
    folders = make_models(CACHE / shape, 2, dims, noise=0.1)
    for f in folders:
        shutil.copy(tok, f / "tokenizer.model")
        cfg = json.loads((f / "config.json").read_text())
        cfg.update(bos_token_id=1, eos_token_id=2)
        (f / "config.json").write_text(json.dumps(cfg, indent=2))
        (f / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                                                             "eos_token": "</s>", "unk_token": "<unk>",
                                                             "add_bos_token": True, "add_eos_token": False}))
    return folders


def write_tasks(path: Path) -> Path:
    words = (ROOT / "tests" / "data" / "stories_eval.txt").read_text().split()
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(QUESTIONS):
        at, other = (int(x) for x in rng.integers(12, len(words) - 8, 2))
        lines.append(json.dumps({"context": " ".join(words[at - 12:at]),
                                 "choices": [" ".join(words[at:at + 3]), " ".join(words[other:other + 3])], "answer": 0}))
    path.write_text("\n".join(lines) + "\n")
    return path


def run_llamix(folders, tasks: Path, workers: int, generations: int, population: int, work: Path) -> dict:
    import ray
    import llamix
    t = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    startup = time.perf_counter() - t
    base, ft1, ft2 = (str(f) for f in folders)
    cfg = {"base_model": base, "models": [ft1, ft2], "merge_method": "task_arithmetic",
           "parameters": {"weight": [0.0, 1.0]}, "objective": {"tasks": str(tasks), "qtype": "q8_0"},
           "budget": {"generations": generations, "population": population}, "seed": 0}
    try:
        t = time.perf_counter()
        r = llamix.evolve(cfg, work / f"llamix_{folders[0].parent.name}_w{workers}", workers=workers, out_type=None)
        seconds = time.perf_counter() - t
    finally:
        ray.shutdown()
    return {"seconds": seconds, "fevals": r.evaluated, "ray_startup": startup}


def run_mergekit(folders, tasks: Path, workers: int, fevals: int, population: int, work: Path) -> dict:
    base, ft1, ft2 = (str(f) for f in folders)
    task_dir = work / "lm_eval_tasks"
    task_dir.mkdir(exist_ok=True)
    (task_dir / "llamix_bench_mc.yaml").write_text(yaml.safe_dump({
        "task": "llamix_bench_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(tasks)}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{context}}",
        "doc_to_choice": "{{choices}}", "doc_to_target": "{{answer}}", "metric_list": [{"metric": "acc"}]}))
    genome = work / f"genome_{folders[0].parent.name}_w{workers}.yml"
    genome.write_text(yaml.safe_dump({
        "genome": {"models": [ft1, ft2], "merge_method": "task_arithmetic", "base_model": base},
        "tasks": [{"name": "llamix_bench_mc", "metric": "acc,none"}],
        "apply_chat_template": False, "fewshot_as_multiturn": False}))
    storage = work / f"mergekit_{folders[0].parent.name}_w{workers}"
    env = dict(os.environ, HF_DATASETS_CACHE=str(work / "hf_datasets"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    p = subprocess.run([sys.executable, str(HERE / "_mergekit_evolve_child.py"), str(genome), str(storage),
                        str(task_dir), str(workers), str(fevals), str(population)],
                       capture_output=True, text=True, env=env, timeout=3600)
    for line in reversed(p.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="stories,tinyllama")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--generations", default="stories:4,tinyllama:1", help="per shape")
    ap.add_argument("--peer-shapes", default="stories",
                    help="shapes mergekit-evolve is tried on (it stops at the same place on every shape: see "
                         "_mergekit_evolve_child.py)")
    args = ap.parse_args()
    gens = dict((k, int(v)) for k, v in (x.split(":") for x in args.generations.split(",")))
    rows = []
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="evolve_bench_") as d:
        work = Path(d)
        tasks = write_tasks(work / "tasks.jsonl")
        for shape in args.shapes.split(","):
            folders = models(shape)
            for w in (int(x) for x in args.workers.split(",")):
                g = gens.get(shape, 1)
                ours = run_llamix(folders, tasks, w, g, args.population, work)
                peer = run_mergekit(folders, tasks, w, g * args.population, args.population, work) \
                    if shape in args.peer_shapes.split(",") else {"error": "not tried on this shape"}
                row = {"shape": shape, "workers": w, "llamix": ours, "mergekit": peer}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (at the start: {load0})")
    print("| model | Ray workers | llamix evolve (Q8_0) cand./h | mergekit-evolve (bf16) cand./h | ratio |")
    print("|---|---|---|---|---|")
    for r in rows:
        ours = 3600 * r["llamix"]["fevals"] / r["llamix"]["seconds"]
        peer = r["mergekit"]
        theirs = 3600 * peer["fevals"] / peer["seconds"] if "seconds" in peer else None
        print(f"| {r['shape']} | {r['workers']} | {ours:.0f} | "
              f"{f'{theirs:.0f}' if theirs else 'did not run'} | {f'{ours / theirs:.1f}x' if theirs else '-'} |")
    for r in rows:
        if "error" in r["mergekit"] and r["shape"] in args.peer_shapes.split(","):
            print(f"\nmergekit-evolve, {r['shape']}, {r['workers']} worker(s): {r['mergekit']['error'].splitlines()[-1]}")
    for r in rows:
        print(f"Ray start-up (llamix run, {r['shape']}, {r['workers']} workers): {r['llamix']['ray_startup']:.1f} s")


if __name__ == "__main__":
    main()
