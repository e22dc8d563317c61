"""llamix: LLaMA-family models in 4 bits on the CPU, and model merging, on SIMD C++ kernels.

Layers, each importing only those below it (held by an import-linter contract in the tests):
``commands``/``cli`` -> ``eval`` -> ``export`` -> ``model`` | ``merge`` -> ``loaders`` -> ``formats``
-> ``config``, ``tokenizer``, ``quant``, ``_runtime`` (and the C++ module ``_C``) -> ``errors``.
"""
from __future__ import annotations

import importlib

# Each public name and the module that defines it, imported on first use (PEP 562): a process that
# only merges never pays for the model, server or evaluation stacks, and `import llamix` costs a
# few milliseconds instead of ~0.3 s (measured; that is a tenth of a small merge's whole process).
_LAZY = {
    "cpu_info": "._runtime", "set_isa": "._runtime", "set_threads": "._runtime",
    "ArgumentError": ".errors", "ChatTemplateError": ".errors", "ConfigError": ".errors", "FormatError": ".errors",
    "LlamixError": ".errors",
    "ModelConfig": ".config",
    "PerplexityResult": ".eval", "SoupResult": ".eval", "perplexity": ".eval", "soup": ".eval",
    "EvolveResult": ".eval", "evolve": ".eval",
    "ExportReport": ".export", "export_gguf": ".export", "merge_to_gguf": ".export",
    "Checkpoint": ".loaders", "load_checkpoint": ".loaders", "random_checkpoint": ".loaders",
    "ChatFormat": ".chat_format",
    "ChatSession": ".model", "Llama": ".model", "Model": ".model", "load": ".model",
    "QuantizedTensor": ".quant", "matmul": ".quant", "matmul_many": ".quant", "quantize": ".quant",
    "Tokenizer": ".tokenizer",
}


def __getattr__(name: str):
    if name == "merge":  # the callable subpackage (llamix/merge/__init__.py)
        return importlib.import_module(".merge", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llamix' has no attribute {name!r}")


def __dir__():
    # the public names and the loaded submodules, not this file's helpers (annotations, importlib)
    return sorted(n for n in set(globals()) | set(_LAZY) | {"merge"} if n not in ("annotations", "importlib"))


__version__ = "0.1.0"  # the package's one version: pyproject.toml reads it from here

__all__ = [
    # kernels and runtime
    "QuantizedTensor", "cpu_info", "matmul", "matmul_many", "quantize", "set_isa", "set_threads",
    # inference
    "Checkpoint", "Llama", "Model", "ModelConfig", "Tokenizer", "load", "load_checkpoint", "random_checkpoint",
    # chat
    "ChatFormat", "ChatSession",
    # errors: LlamixError (a ValueError) and its kinds
    "ArgumentError", "ChatTemplateError", "ConfigError", "FormatError", "LlamixError",
    # merging
    "merge",
    # quantize, export, quality
    "ExportReport", "PerplexityResult", "SoupResult", "export_gguf", "merge_to_gguf", "perplexity", "soup",
    "__version__",
    # evolutionary merge search (the 'evolve' extra)
    "EvolveResult", "evolve",
]
