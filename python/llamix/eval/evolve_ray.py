"""Candidates evaluated in parallel Ray tasks (the ``evolve`` extra: ray, cmaes, matplotlib).

With no address, a local Ray instance sized to the machine is started (no dashboard, quiet) and
shut down at the end; with an address, the pool joins that cluster and leaves it running; when
Ray is already initialised (e.g. by the caller), the pool uses it as it is. A task receives only
a merge recipe and paths: each worker reads the models, text and questions from the paths itself,
so no model bytes go through Ray's object store (on a cluster, the paths must be readable on
every node: a shared file system or copies at the same place). Each task asks Ray for
``cpus_per_task`` CPUs and runs llamix on exactly those. A task whose worker process dies is
retried (``MAX_RETRIES``) on another worker; an error raised by the evaluation itself (a bad
config) is not retried and is raised in the driver as it was raised in the worker.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

import ray

from ..errors import LlamixError
from .objective import Objective, score_merge
from .soup import group_perplexity

MAX_RETRIES = 3


def _task_threads() -> int:
    """The CPUs Ray gave the running task."""
    return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))


@ray.remote
def _score_merge_task(merge_config: dict, objective: Objective, seed: int) -> dict:
    return score_merge(merge_config, objective, seed=seed, n_threads=_task_threads()).as_dict()


@ray.remote
def _soup_task(refs: list, tokens: list, qtype: str, n_ctx: int, tokenizer) -> float:
    return group_perplexity(refs, tokens, qtype, n_ctx, tokenizer=tokenizer, n_threads=_task_threads())


def _task_error(e: Exception, i: int) -> Exception:
    """What a failed task raises in the driver: the evaluation's own error (a bad config, a missing
    file) as it was raised in the worker; anything else (a worker that died more than MAX_RETRIES
    times, a node without llamix) as one LlamixError line."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, (ValueError, OSError)) and not isinstance(cause, ray.exceptions.RayError):
        return cause
    text = str(cause if isinstance(cause, Exception) else e).strip().splitlines()
    msg = f"Ray could not evaluate candidate {i}: {type(cause or e).__name__}: {text[0] if text else ''}"
    if "No module named 'llamix'" in str(e):
        msg += " (install llamix, the same version, on every node of the Ray cluster)"
    return LlamixError(msg)


def machine_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class RayPool:
    """``workers`` concurrent evaluations (default: one per CPU Ray has, at most ``max_workers``),
    each with an equal share of the CPUs."""

    def __init__(self, workers: int | None = None, address: str | None = None, max_workers: int | None = None):
        self.started = False
        if not ray.is_initialized():
            quiet = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(address="local", num_cpus=max(machine_cpus(), workers or 1), **quiet)
                self.started = True
        total = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.workers = max(1, workers or min(total, max_workers or total))
        self.cpus_per_task = max(1, total // self.workers)

    def close(self) -> None:
        if self.started:
            ray.shutdown()
            self.started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _run(self, submit: Callable, items: Sequence, done: Callable | None = None) -> list:
        """``submit(item)`` for every item, at most ``workers`` in flight; the results in item
        order. ``done(i, result)`` is called as each finishes."""
        results: list = [None] * len(items)
        pending: dict = {}
        nxt = 0
        try:
            while nxt < len(items) or pending:
                while nxt < len(items) and len(pending) < self.workers:
                    pending[submit(items[nxt])] = nxt
                    nxt += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        raise _task_error(e, i) from None
                    if done is not None:
                        done(i, results[i])
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        return results

    def score_merges(self, merge_configs: Sequence[dict], objective: Objective, seed: int,
                     done: Callable | None = None) -> list[dict]:
        """:func:`llamix.eval.objective.score_merge` of each config, in parallel."""
        task = _score_merge_task.options(num_cpus=self.cpus_per_task, max_retries=MAX_RETRIES, retry_exceptions=False)
        return self._run(lambda cfg: task.remote(cfg, objective, seed), merge_configs, done)

    def soup_evaluator(self, qtype: str, tokenizer=None) -> Callable:
        """An ``evaluate_groups`` for :func:`llamix.soup`: each group's perplexity in its own task
        (the token ids go through the object store once per round, the models by path)."""
        task = _soup_task.options(num_cpus=self.cpus_per_task, max_retries=MAX_RETRIES, retry_exceptions=False)
        tok = str(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer

        def evaluate(groups: Sequence[Sequence[str]], tokens: list, n_ctx: int) -> list[float]:
            tokens_ref = ray.put([int(t) for t in tokens])
            return self._run(lambda g: task.remote(list(g), tokens_ref, qtype, n_ctx, tok), groups)
        return evaluate
