"""Parameter values per tensor: scalars, layer gradients and filtered lists, resolved with
mergekit's precedence (a source's own `parameters` > the slice's > the global ones > the method's
default).

- gradient ``[v0, ..., vK-1]``: for layer i of a slice of L layers, ``t = i / (L - 1)`` (1 when
  L = 1; 0 for tensors outside the layers), ``s = t (K - 1)``, value ``(1 - frac s) v[floor s] +
  frac s v[floor s + 1]``;
- filtered ``[{filter: self_attn, value: ...}, ..., {value: ...}]``: the first entry whose filter is
  a substring of the tensor name (or has no filter, or is ``*``) gives the value;
- a scope that yields nothing falls through to the next one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from .config import ConfigError


@dataclass(frozen=True)
class Param:
    """A parameter a method declares. scope: "global" (one value per tensor), "input" (per input
    model, base included) or "non_base" (per input model except the base)."""
    name: str
    kind: type  # float, bool or int
    scope: str = "global"
    default: Any = None
    required: bool = False
    lo: Optional[float] = None  # the range of a number's values (None: unbounded)
    hi: Optional[float] = None

    def convert(self, value, where: str):
        """Validate one resolved value (type, a finite number, the range); errors name the field."""
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 1e-3 as a string
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, int) and abs(value) > 2**53:
            raise ConfigError(f"{where}: {value!r} is too large")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ConfigError(f"{where}: {value!r} is out of range [{self.lo}, {self.hi}]")
        return int(value) if self.kind is int else float(value)


def evaluate(setting, tensor_name: str, t: float, param: Param, where: str):
    """The value of one setting for a tensor at layer position t, or None if no filter matches."""
    if isinstance(setting, list) and setting and isinstance(setting[0], dict):
        for entry in setting:
            flt = entry["filter"]
            if flt is None or flt == "*" or (tensor_name and flt in tensor_name):
                return evaluate(entry["value"], tensor_name, t, param, where)
        return None
    if isinstance(setting, list):
        values = [param.convert(v, where) for v in setting]
        if param.kind is bool:
            return values[int(t * (len(values) - 1))]
        s = t * (len(values) - 1)
        i0 = int(s)
        i1 = min(len(values) - 1, i0 + 1)
        frac = s - i0
        return param.convert((1 - frac) * values[i0] + frac * values[i1], where)
    return param.convert(setting, where)


def resolve(param: Param, scopes: Iterable[tuple[Optional[dict], str]], tensor_name: str, t: float,
            what: str = ""):
    """First scope (highest precedence first) that sets the parameter wins; then the default.
    scopes: (parameters dict or None, its field path)."""
    for params, where in scopes:
        if params and param.name in params:
            value = evaluate(params[param.name], tensor_name, t, param, f"{where}.{param.name}")
            if value is not None:
                return value
    if param.required:
        raise ConfigError(f"parameters.{param.name}: required by this merge method but not set for "
                          f"{what or tensor_name}")
    return param.default


def layer_t(index: int, n_layers: int) -> float:
    """Gradient position of layer `index` within a slice of n_layers."""
    return index / (n_layers - 1) if n_layers > 1 else 1.0
