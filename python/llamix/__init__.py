"""llamix: LLaMA-family models in 4 bits on the CPU, and model merging, on SIMD C++ kernels.

Layers, each importing only those below it (held by an import-linter contract in the tests):
``commands``/``cli`` -> ``eval`` -> ``export`` -> ``model`` | ``merge`` -> ``loaders`` -> ``formats``
-> ``config``, ``tokenizer``, ``quant``, ``_runtime`` (and the C++ module ``_C``) -> ``errors``.
"""
from __future__ import annotations

from ._runtime import cpu_info, set_isa, set_threads
from .errors import ArgumentError, ConfigError, FormatError, LlamixError
from . import merge
from .config import ModelConfig
from .eval import PerplexityResult, SoupResult, perplexity, soup
from .eval import EvolveResult, evolve
from .export import ExportReport, export_gguf, merge_to_gguf
from .loaders import Checkpoint, load_checkpoint, random_checkpoint
from .chat_format import ChatFormat
from .model import ChatSession, Model, load
from .quant import QuantizedTensor, matmul, matmul_many, quantize
from .tokenizer import Tokenizer

__version__ = "0.1.0"  # the package's one version: pyproject.toml reads it from here

__all__ = [
    # kernels and runtime
    "QuantizedTensor", "cpu_info", "matmul", "matmul_many", "quantize", "set_isa", "set_threads",
    # inference
    "Checkpoint", "Model", "ModelConfig", "Tokenizer", "load", "load_checkpoint", "random_checkpoint",
    # chat
    "ChatFormat", "ChatSession",
    # errors: LlamixError (a ValueError) and its kinds
    "ArgumentError", "ConfigError", "FormatError", "LlamixError",
    # merging
    "merge",
    # quantize, export, quality
    "ExportReport", "PerplexityResult", "SoupResult", "export_gguf", "merge_to_gguf", "perplexity", "soup",
    "__version__",
    # evolutionary merge search (the 'evolve' extra)
    "EvolveResult", "evolve",
]
