"""Model merging with mergekit's YAML and semantics: config (schema and validation), params
(scalars, gradients, filters, precedence), methods/ (one file per method, explicit registry),
plan (inputs and parameters per output tensor), executor (streaming), output (HF folder).

``llamix.merge`` is both this package and the function ``llamix.merge(config, out_dir)``: the
module is callable, so ``import llamix.merge.plan`` and ``llamix.merge(...)`` both work (a plain
function of the same name would hide the package from ``import llamix.merge.x as y``)."""
import sys
import types

from .api import merge
from .config import ConfigError, load_config
from .methods import METHODS

__all__ = ["ConfigError", "METHODS", "load_config", "merge"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return merge(*args, **kwargs)

    __call__.__doc__ = merge.__doc__


sys.modules[__name__].__class__ = _CallableModule
