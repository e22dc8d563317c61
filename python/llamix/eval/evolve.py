"""Evolutionary merge search: CMA-ES over merge parameters, candidates scored in parallel Ray tasks.

Reference: Akiba et al. 2024, "Evolutionary Optimization of Model Merging Recipes"
(https://arxiv.org/abs/2403.13187), and mergekit-evolve, which searches mergekit parameters with
CMA-ES (Hansen 2016, "The CMA Evolution Strategy: A Tutorial", https://arxiv.org/abs/1604.00772).
The optimizer is ``cmaes.CMA`` (bounded: the search runs in the unit cube, each coordinate mapped to
its parameter's ``[lo, hi]``). Each candidate is merged, quantized (Q8_0 by default) and scored in
one streaming pass in memory by a Ray task (see objective.py, candidate.py, evolve_ray.py).

A run lives in OUT_DIR: ``evolve.yml`` (the config, paths resolved), ``state.json`` (after each
generation: the history of every candidate and the optimizer's mean and step size),
``history.csv``, ``progress.png``, and at the end ``best.yml`` (the best candidate as a mergekit
config) and the merged model. Resuming rebuilds the optimizer by replaying the recorded
generations through a new ``CMA`` with the same seed: CMA-ES is deterministic given its seed and
the scores it is told, and a candidate's score is a deterministic function of its parameters, so
a resumed run reaches exactly what an uninterrupted one reaches (the replay checks that every
recorded candidate is asked again).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from ..errors import ArgumentError, LlamixError
from ..export import merge_to_gguf
from ..export.gguf import check_file_type
from ..merge import merge as merge_models
from ..merge.config import load_config
from ..merge.plan import build_plan
from .evolve_config import EvolveConfig, load_evolve_config

STATE_FORMAT = "llamix-evolve-1"
INSTALL = "pip install 'llamix[evolve]'"
Progress = Callable[[float, float, str], None]  # progress(done_candidates, total_candidates, note)


def require_extra():
    """The ``evolve`` extra's modules (ray, cmaes) or an ArgumentError saying how to install them."""
    try:
        import cmaes
        import matplotlib  # noqa: F401 - progress.png; checked before hours of search, not after
        from .evolve_ray import RayPool
    except ImportError as e:
        raise ArgumentError(f"this needs the 'evolve' extra (Ray, cmaes, matplotlib); {e.name or e} is not installed: "
                            f"{INSTALL}") from None
    return cmaes, RayPool


@dataclass
class EvolveResult:
    best: dict                  # parameter values of the best candidate (history.csv's column names)
    loss: float                 # its loss: ln(ppl) - task metric
    ppl: float | None
    acc: float | None
    generations: int
    evaluated: int              # candidates scored, this run and the resumed ones
    out_dir: Path
    best_config: Path           # OUT_DIR/best.yml
    model: Path | None = None   # the merged best model
    history: list = field(default_factory=list)

    def report(self) -> str:
        lines = []
        for g in range(self.generations):
            rows = [r for r in self.history if r["generation"] == g]
            if rows:
                lines.append(f"generation {g}: best loss {min(r['loss'] for r in rows):.6f} of {len(rows)}")
        lines.append(f"best recipe: {self.best_config}" + (f"; merged model: {self.model}" if self.model else ""))
        score = f"best: loss {self.loss:.6f}"
        if self.ppl is not None:
            score += f"  ppl {self.ppl:.4f}"
        if self.acc is not None:
            score += f"  acc {self.acc:.4f}"
        lines.append(score)
        return "\n".join(lines)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _start(config, out: Path, resume: bool) -> EvolveConfig:
    """The run's config: a new OUT_DIR gets evolve.yml; a resumed one is checked against it."""
    saved = out / "evolve.yml"
    if resume:
        if not (out / "state.json").is_file() or not saved.is_file():
            raise ArgumentError(f"{out}: no run to resume (state.json and evolve.yml are written after the first "
                                "generation)")
        cfg = load_evolve_config(saved)
        if config is not None:
            given = load_evolve_config(config)
            if given.fingerprint() != cfg.fingerprint():
                diff = [k for k in sorted(set(given.data) | set(cfg.data)) if given.data.get(k) != cfg.data.get(k)]
                raise ArgumentError(f"{given.source}: differs from the run in {out} ({', '.join(diff)}); resume with "
                                    "the same config, or without one")
        return cfg
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ArgumentError(f"{out}: exists and is not an empty folder (--resume continues a run)")
    cfg = load_evolve_config(config)
    out.mkdir(parents=True, exist_ok=True)
    return cfg


def _replay(opt, cfg: EvolveConfig, history: list) -> int:
    """Feed the recorded generations to a fresh optimizer; the number of generations replayed."""
    done = 0
    while True:
        rows = [r for r in history if r["generation"] == done]
        if len(rows) < cfg.population:
            return done
        xs = [opt.ask() for _ in range(cfg.population)]
        for x, r in zip(xs, rows):
            if not np.array_equal(x, np.asarray(r["x"])):
                raise LlamixError(f"state.json: generation {done} does not replay (the cmaes version or the config "
                                  "changed since it was written)")
        opt.tell([(x, _finite(r["loss"])) for x, r in zip(xs, rows)])
        done += 1


def _finite(loss) -> float:
    return float(loss) if loss is not None and math.isfinite(loss) else 1e30


def _history_csv(cfg: EvolveConfig, history: list) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["generation", "candidate", *[d.name for d in cfg.dims], "ppl", cfg.objective.metric, "loss"])
    for r in history:
        w.writerow([r["generation"], r["candidate"], *[repr(r["values"][d.name]) for d in cfg.dims],
                    "" if r["ppl"] is None else repr(r["ppl"]), "" if r["acc"] is None else repr(r["acc"]),
                    repr(r["loss"])])
    return buf.getvalue().encode()


def _loss_label(cfg: EvolveConfig) -> str:
    o = cfg.objective
    parts = (["ln perplexity"] if o.perplexity else []) + ([f"- {o.metric}"] if o.tasks else [])
    return "loss (" + " ".join(parts).lstrip("- ") + ")" if o.perplexity else f"loss (-{o.metric})"


def _progress_png(history: list, label: str) -> bytes:
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state
    from matplotlib.ticker import MaxNLocator
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    gens = [r["generation"] for r in history]
    losses = [r["loss"] if math.isfinite(r["loss"]) else np.nan for r in history]
    ax.scatter(gens, losses, s=12, alpha=0.6, label="candidate")
    best, run = [], math.inf
    for g in sorted(set(gens)):
        run = min([run] + [x for x, gg in zip(losses, gens) if gg == g and not np.isnan(x)])
        best.append((g, run))
    ax.plot([g for g, _ in best], [b for _, b in best], color="C1", marker="o", label="best so far")
    ax.set_xlabel("generation")
    ax.set_ylabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _checkpoint(out: Path, cfg: EvolveConfig, opt, history: list, generations_done: int) -> None:
    state = {"format": STATE_FORMAT, "fingerprint": cfg.fingerprint(), "seed": cfg.seed,
             "generations_done": generations_done, "mean": opt.mean.tolist(), "sigma": float(opt._sigma),
             "history": history}
    _write_atomic(out / "history.csv", _history_csv(cfg, history))
    _write_atomic(out / "progress.png", _progress_png(history, _loss_label(cfg)))
    _write_atomic(out / "state.json", json.dumps(state, indent=1, allow_nan=True).encode())


def _load_state(out: Path, cfg: EvolveConfig) -> list:
    try:
        state = json.loads((out / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise LlamixError(f"{out / 'state.json'}: unreadable ({e})") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or not isinstance(state.get("history"), list):
        raise LlamixError(f"{out / 'state.json'}: not a llamix evolve state ({STATE_FORMAT})")
    if state.get("fingerprint") != cfg.fingerprint():
        raise LlamixError(f"{out / 'state.json'}: written for another config than {out / 'evolve.yml'}")
    return state["history"]


def evolve(config, out_dir, *, workers: int | None = None, ray_address: str | None = None, resume: bool = False,
           out_type: str | None = "hf", progress: Progress | None = None) -> EvolveResult:
    """Search merge parameters with CMA-ES, candidates evaluated in parallel Ray tasks.

    ``config``: an evolve config (YAML path or dict; see llamix.eval.evolve_config), or None with
    ``resume`` (OUT_DIR's own). ``out_dir``: a new or empty folder, or the folder of a run to
    continue with ``resume=True``. ``workers``: concurrent evaluations (default: one per CPU,
    at most the population); each gets an equal share of the CPUs. ``ray_address``: join that Ray
    cluster (default: Ray already initialised in this process, else a local instance sized to
    the machine, shut down at the end). ``out_type``: the merged best model: ``"hf"`` (a Hugging
    Face folder OUT_DIR/model), a GGUF file type (``"q4_k_m"``: OUT_DIR/model.gguf) or None.
    ``progress(done, total, note)`` after each candidate.

    Raises ArgumentError without the ``evolve`` extra (saying how to install it), ConfigError for a
    bad config (naming the file and the field), LlamixError for a broken state.json.
    """
    cmaes, RayPool = require_extra()
    if out_type is not None and out_type != "hf":
        out_type = check_file_type(out_type)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ArgumentError(f"workers must be a positive integer, got {workers!r}")
    progress = progress if callable(progress) else None
    out = Path(out_dir)
    cfg = _start(config, out, resume)
    centre = cfg.values([0.5] * len(cfg.dims))
    build_plan(load_config(cfg.merge_config(centre)))  # every merge problem found before Ray starts
    _write_atomic(out / "evolve.yml", yaml.safe_dump(cfg.data, sort_keys=False).encode())

    opt = cmaes.CMA(mean=np.full(len(cfg.dims), 0.5), sigma=cfg.sigma, bounds=np.array([[0.0, 1.0]] * len(cfg.dims)),
                    seed=cfg.seed, population_size=cfg.population)
    history = _load_state(out, cfg) if resume else []
    start = _replay(opt, cfg, history)
    history = [r for r in history if r["generation"] < start]  # a partial generation is evaluated again
    total = cfg.generations * cfg.population
    if start < cfg.generations:
        with RayPool(workers, ray_address, max_workers=cfg.population) as pool:
            for gen in range(start, cfg.generations):
                xs = [opt.ask() for _ in range(cfg.population)]
                values = [cfg.values(x) for x in xs]

                def done(i, r, gen=gen):
                    if progress is not None:
                        progress(gen * cfg.population + i + 1, total, f"gen {gen} loss {r['loss']:.4f}")
                scores = pool.score_merges([cfg.merge_config(v) for v in values], cfg.objective, cfg.seed, done)
                opt.tell([(x, _finite(s["loss"])) for x, s in zip(xs, scores)])
                history += [{"generation": gen, "candidate": i, "x": x.tolist(), "values": v, **s}
                            for i, (x, v, s) in enumerate(zip(xs, values, scores))]
                _checkpoint(out, cfg, opt, history, gen + 1)
    elif not (out / "history.csv").is_file():
        _checkpoint(out, cfg, opt, history, cfg.generations)

    best = min(history, key=lambda r: (_finite(r["loss"]), r["generation"], r["candidate"]))
    best_yml = out / "best.yml"
    merge_cfg = cfg.merge_config(best["values"])
    _write_atomic(best_yml, yaml.safe_dump(merge_cfg, sort_keys=False).encode())
    model = None
    if out_type == "hf":
        model = merge_models(best_yml, out / "model", overwrite=True, seed=cfg.seed)
    elif out_type is not None:
        model = out / "model.gguf"
        merge_to_gguf(best_yml, model, out_type, seed=cfg.seed)
    return EvolveResult(best["values"], best["loss"], best["ppl"], best["acc"], cfg.generations, len(history), out,
                        best_yml, model, history)
