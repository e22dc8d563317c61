"""Model merging with mergekit's YAML and semantics: config (schema and validation), params
(scalars, gradients, filters, precedence), methods/ (one file per method, explicit registry),
plan (inputs and parameters per output tensor), executor (streaming), output (HF folder)."""
from .api import merge
from .config import ConfigError, load_config
from .methods import METHODS

__all__ = ["ConfigError", "METHODS", "load_config", "merge"]
