"""The config of an evolutionary merge search (``llamix evolve``), validated before any work, and
the mergekit config of each candidate.

```yaml
base_model: ./base              # as in merge configs: a Hugging Face folder or repo id
models: [./ft_a, ./ft_b]        # or [{model: ./ft_a, parameters: {weight: [0.2, 0.8], density: 0.5}, name: a}]
merge_method: ties              # any llamix merge method
parameters:                     # [lo, hi]: searched (per model for per-model parameters); a scalar: fixed
  weight: [0.0, 1.0]
  density: [0.1, 1.0]
layer_groups: 1                 # >1: the layers split into that many consecutive groups, searched apart
objective: {perplexity: heldout.txt, n_ctx: 128}   # and/or tasks: tasks.jsonl (see objective.py)
budget: {generations: 4, population: 6}
sigma: 0.25                     # CMA-ES's initial step, in units of each parameter's range
seed: 0
```

A searched parameter is one coordinate of the search space, mapped from CMA-ES's unit cube to
its ``[lo, hi]``; a per-model parameter (``weight``, ``density``, ...) gives one coordinate per
model (and per layer group), a global one (slerp's ``t``, ``lambda``) one per layer group. Every
problem raises :class:`ConfigError` naming the file and the field (``models[1].parameters.weight``).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..merge.methods import get_method
from ..merge.plan import open_model
from .objective import Objective, parse_objective

TOP_LEVEL = {"base_model", "models", "merge_method", "parameters", "layer_groups", "dtype", "objective", "budget",
             "sigma", "seed"}


@dataclass(frozen=True)
class Dim:
    """One searched coordinate: parameter ``param`` of model ``model`` (None: a global parameter)
    in layer group ``group``, between ``lo`` and ``hi``."""
    name: str
    param: str
    lo: float
    hi: float
    model: int | None = None
    group: int = 0


@dataclass
class EvolveConfig:
    merge_method: str
    models: list[str]                        # resolved references (absolute paths where local)
    labels: list[str]                        # each model's name (default: its reference as written): column names
    base_model: str | None
    dims: list[Dim]
    fixed: dict                              # global parameters not searched
    fixed_per_model: list[dict]              # per model: parameters not searched
    layer_groups: list[tuple[int, int]]      # [start, end) of each group; one group: every layer
    objective: Objective
    generations: int
    population: int
    sigma: float = 0.25
    seed: int = 0
    dtype: str | None = None
    source: str = "evolve config"
    data: dict = field(default_factory=dict)  # the normalized config (paths resolved): saved with a run

    def values(self, x) -> dict[str, float]:
        """A point of the unit cube -> each coordinate's parameter value (rounded to 6 decimals, so
        the value written in best.yml and history.csv is the one evaluated)."""
        return {d.name: round(d.lo + float(xi) * (d.hi - d.lo), 6) for d, xi in zip(self.dims, x)}

    def merge_config(self, values: dict[str, float]) -> dict:
        """The mergekit config (a dict) of one candidate."""
        def params(model: int | None, group: int) -> dict:
            out = dict(self.fixed if model is None else self.fixed_per_model[model])
            out.update({d.param: values[d.name] for d in self.dims if d.model == model and d.group == group})
            return out

        cfg: dict[str, Any] = {"merge_method": self.merge_method}
        if self.base_model is not None:
            cfg["base_model"] = self.base_model
        if len(self.layer_groups) == 1:
            cfg["models"] = [{"model": m, **({"parameters": p} if (p := params(i, 0)) else {})}
                             for i, m in enumerate(self.models)]
            if p := params(None, 0):
                cfg["parameters"] = p
        else:
            cfg["slices"] = []
            for g, (a, b) in enumerate(self.layer_groups):
                sources = [{"model": m, "layer_range": [a, b], **({"parameters": p} if (p := params(i, g)) else {})}
                           for i, m in enumerate(self.models)]
                if self.base_model is not None and self.base_model not in self.models:
                    sources.append({"model": self.base_model, "layer_range": [a, b]})
                sl: dict[str, Any] = {"sources": sources}
                searched = {d.param: values[d.name] for d in self.dims if d.model is None and d.group == g}
                if searched:
                    sl["parameters"] = searched
                cfg["slices"].append(sl)
            if self.fixed:
                cfg["parameters"] = dict(self.fixed)
        if self.dtype:
            cfg["dtype"] = self.dtype
        return cfg

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()


def load_evolve_config(config) -> EvolveConfig:
    """An :class:`EvolveConfig` from a YAML path or a dict (relative paths: from the current
    folder, then from the config file's folder)."""
    source, base_dir = "evolve config", Path.cwd()
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: evolve config not found")
        source, base_dir = str(path), path.resolve().parent
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    elif isinstance(config, dict):
        data = config
    else:
        raise ConfigError(f"the evolve config must be a path or a dict, not {type(config).__name__}")
    try:
        return _parse(data, source, base_dir)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _resolve(ref: str, base_dir: Path) -> str:
    """A local path made absolute (the current folder first, then the config's); anything else
    (a Hub repo id, ``model+lora``) as written."""
    for folder in (Path.cwd(), base_dir):
        p = folder / ref
        if p.exists():
            return str(p.resolve())
    return ref


def _number(v, where: str, kind=float, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
        raise ConfigError(f"{where}: expected {'an integer' if kind is int else 'a number'}, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{where}: {v!r} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
    return kind(v)


def _parse(data: Any, source: str, base_dir: Path) -> EvolveConfig:
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping (base_model, models, merge_method, parameters, objective, budget)")
    for key in data:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{key}: unknown field (known: {', '.join(sorted(TOP_LEVEL))})")
    for key in ("models", "merge_method", "parameters", "objective", "budget"):
        if data.get(key) is None:
            raise ConfigError(f"{key}: required")
    method = get_method(data["merge_method"]) if isinstance(data["merge_method"], str) else None
    if method is None:
        raise ConfigError("merge_method: expected a method name")
    base = data.get("base_model")
    if base is not None and (not isinstance(base, str) or not base):
        raise ConfigError("base_model: expected a model folder or Hugging Face repo id")
    models_raw = data["models"]
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError("models: expected a non-empty list of models")
    refs, labels, own_params = [], [], []
    for i, m in enumerate(models_raw):
        if isinstance(m, str) and m:
            refs.append(m)
            labels.append(m)
            own_params.append({})
        elif isinstance(m, dict) and isinstance(m.get("model"), str) and set(m) <= {"model", "parameters", "name"}:
            name = m.get("name", m["model"])
            if not isinstance(name, str) or not name:
                raise ConfigError(f"models[{i}].name: expected a non-empty string")
            refs.append(m["model"])
            labels.append(name)
            p = m.get("parameters") or {}
            if not isinstance(p, dict):
                raise ConfigError(f"models[{i}].parameters: expected a mapping")
            own_params.append(p)
        else:
            raise ConfigError(f"models[{i}]: expected a model path or {{model: PATH, parameters: {{...}}, name: NAME}}")
    if len(set(labels)) != len(labels):
        raise ConfigError("models: a model (or name) is listed twice")
    params = data["parameters"]
    if not isinstance(params, dict):
        raise ConfigError("parameters: expected a mapping of parameter names to [lo, hi] ranges or values")

    known = {p.name: p for p in method.parameters}
    groups_n = _number(data.get("layer_groups", 1), "layer_groups", int, lo=1)
    models = [_resolve(m, base_dir) for m in refs]
    base_ref = _resolve(base, base_dir) if base is not None else None
    layer_groups = [(0, 0)]
    if groups_n > 1:
        first = base_ref or models[0]
        n_layers = open_model(first, base_dir, "base_model" if base_ref else "models[0]").num_layers()
        if groups_n > n_layers:
            raise ConfigError(f"layer_groups: {groups_n} groups of {n_layers} layers")
        edges = [round(g * n_layers / groups_n) for g in range(groups_n + 1)]
        layer_groups = list(zip(edges[:-1], edges[1:]))

    def setting(name, value, where):
        """(lo, hi) for a range, or the fixed value."""
        if name not in known:
            raise ConfigError(f"{where}: not a parameter of {method.name} (its parameters: "
                              f"{', '.join(sorted(known)) or 'none'})")
        p = known[name]
        if isinstance(value, list):
            if len(value) != 2 or p.kind is bool:
                raise ConfigError(f"{where}: a searched parameter is a range [lo, hi] of numbers, got {value!r}")
            lo, hi = (_number(v, where, lo=p.lo, hi=p.hi) for v in value)
            if not lo < hi:
                raise ConfigError(f"{where}: the range [{lo}, {hi}] is empty (lo must be below hi)")
            return (lo, hi)
        if isinstance(value, bool) or (isinstance(value, (int, float)) and p.kind is not bool):
            return p.convert(value, where)
        raise ConfigError(f"{where}: expected a range [lo, hi] or a value, got {value!r}")

    dims: list[Dim] = []
    fixed: dict = {}
    fixed_per_model: list[dict] = [{} for _ in models]
    names_in_order = list(params) + [n for p in own_params for n in p if n not in params]
    for name in dict.fromkeys(names_in_order):
        if name not in known:
            where = f"parameters.{name}" if name in params else \
                f"models[{next(i for i, p in enumerate(own_params) if name in p)}].parameters.{name}"
            setting(name, None, where)  # raises: not a parameter of the method
        scope = known[name].scope
        top = setting(name, params[name], f"parameters.{name}") if name in params else None
        if scope == "global":
            for i, p in enumerate(own_params):
                if name in p:
                    raise ConfigError(f"models[{i}].parameters.{name}: {name} is one value for all models in "
                                      f"{method.name}; set it under parameters")
            if isinstance(top, tuple):
                for g, (a, b) in enumerate(layer_groups):
                    dims.append(Dim(_dim_name(name, None, layer_groups, g), name, *top, group=g))
            else:
                fixed[name] = top
            continue
        for i, label in enumerate(labels):
            s = setting(name, own_params[i][name], f"models[{i}].parameters.{name}") if name in own_params[i] else top
            if isinstance(s, tuple):
                for g in range(len(layer_groups)):
                    dims.append(Dim(_dim_name(name, label, layer_groups, g), name, *s, model=i, group=g))
            elif s is not None:
                fixed_per_model[i][name] = s
    if not dims:
        raise ConfigError("parameters: nothing to search (give at least one parameter a range [lo, hi])")

    budget = data["budget"]
    if not isinstance(budget, dict) or set(budget) - {"generations", "population"}:
        raise ConfigError("budget: expected {generations: N, population: N}")
    generations = _number(budget.get("generations"), "budget.generations", int, lo=1)
    population = _number(budget.get("population"), "budget.population", int, lo=2)
    sigma = _number(data.get("sigma", 0.25), "sigma", lo=1e-6, hi=1.0)
    seed = _number(data.get("seed", 0), "seed", int, lo=0, hi=2**31 - 1)
    dtype = data.get("dtype")
    if dtype is not None and dtype not in ("float32", "float16", "bfloat16"):
        raise ConfigError(f"dtype: expected float32, float16 or bfloat16, got {dtype!r}")
    objective = parse_objective(data["objective"], base_dir, _resolve)

    normalized = dict(data)
    normalized["base_model"] = base_ref
    normalized["models"] = [{"model": m, "name": label, **({"parameters": p} if p else {})}
                            for m, label, p in zip(models, labels, own_params)]
    normalized["objective"] = objective.as_dict()
    normalized.update(budget={"generations": generations, "population": population}, sigma=sigma, seed=seed)
    return EvolveConfig(method.name, models, labels, base_ref, dims, fixed, fixed_per_model,
                        layer_groups if groups_n > 1 else [(0, 0)], objective, generations, population, sigma, seed,
                        dtype, source, normalized)


def _dim_name(param: str, label: str | None, groups: list[tuple[int, int]], g: int) -> str:
    name = param if label is None else f"{label}:{param}"
    if len(groups) > 1:
        a, b = groups[g]
        name += f"@{a}-{b}"
    return name
