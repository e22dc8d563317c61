"""One mergekit-evolve run (the peer of bench/evolve_table.py), in its own process:

    python _mergekit_evolve_child.py GENOME.yml STORAGE TASK_DIR WORKERS FEVALS POPULATION

prints one JSON line {"seconds": ..., "fevals": ...} (the time of mergekit-evolve's main, after
Ray has started), or {"error": "..."} with the exception that stopped it.

Two things are set up here, not changed in mergekit:

- mergekit 0.1.5 names ``lm_eval.models.vllm_causallms.VLLM`` in a class annotation and imports that
  module in every evaluator actor (``monkeypatch_lmeval_vllm`` in ``MergeActorBase.__init__``,
  even with ``--no-vllm``); lm-eval 0.4.13's module imports ``vllm``, a CUDA package that cannot
  be installed here. An empty stand-in module takes its place, in this process and in every Ray
  worker (``worker_process_setup_hook``); vLLM is never used (``--no-vllm``, the default).
- its on-disk evaluator calls ``torch.<device>.empty_cache()`` before each merge (actors.py), and
  ``torch.cpu`` has no ``empty_cache``: a no-op one is added (there is no device cache to free).
- mergekit-evolve's actors each ask Ray for one GPU (``@ray.remote(num_gpus=1)``), so Ray is
  started with WORKERS logical GPUs (Ray's resources are counters) and mergekit runs with
  ``--no-merge-cuda``: merge and transformers evaluation on the CPU.
"""
from __future__ import annotations

import json
import os
import logging
import sys
import time
import traceback


def stand_in_for_vllm_backend() -> None:
    """lm_eval.models.vllm_causallms as an empty module, torch.cpu.empty_cache a no-op (see the docstring)."""
    import types

    import lm_eval.models
    import torch
    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None
    stub = types.ModuleType("lm_eval.models.vllm_causallms")
    stub.VLLM = type("VLLM", (), {})
    sys.modules[stub.__name__] = stub
    lm_eval.models.vllm_causallms = stub


def main() -> None:
    genome, storage, task_dir, workers, fevals, population = sys.argv[1:7]
    try:
        stand_in_for_vllm_backend()
        import ray
        from mergekit.scripts.evolve import main as mergekit_evolve
        ray.init(address="local", num_cpus=int(workers), num_gpus=int(workers), include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, runtime_env={"worker_process_setup_hook": stand_in_for_vllm_backend})
        t = time.perf_counter()
        mergekit_evolve([genome, "--storage-path", storage, "--max-fevals", fevals, "--strategy", "pool",
                         os.environ.get("MERGEKIT_EVOLVE_MODE", "--no-in-memory"), "--num-gpus", workers, "--no-merge-cuda", "--task-search-path", task_dir,
                         "--no-save-final-model", "--no-reshard", "--force-population-size", population,
                         "--batch-size", "1"], standalone_mode=False)
        seconds = time.perf_counter() - t
        ray.shutdown()
        print(json.dumps({"seconds": seconds, "fevals": int(fevals)}))
    except BaseException as e:  # noqa: BLE001 - the parent reports why the peer could not run
        tb = traceback.format_exc().strip().splitlines()
        print(json.dumps({"error": f"{type(e).__name__}: {e}", "where": tb[-3:]}))


if __name__ == "__main__":
    main()
