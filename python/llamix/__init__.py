"""llamix: LLaMA-family models in 4 bits on the CPU, and model merging, on SIMD C++ kernels."""
from __future__ import annotations

from ._runtime import cpu_info, set_isa, set_threads
from . import merge
from .merge import ConfigError
from .model import Model, ModelConfig, load
from .quality.export import export_gguf
from .quality.merge_gguf import merge_to_gguf
from .quality.perplexity import PerplexityResult, perplexity
from .quality.soup import SoupResult, soup
from .quant import QuantizedTensor, matmul, matmul_many, quantize
from .tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = [
    # kernels and runtime
    "QuantizedTensor", "cpu_info", "matmul", "matmul_many", "quantize", "set_isa", "set_threads",
    # inference
    "Model", "ModelConfig", "Tokenizer", "load",
    # merging
    "ConfigError", "merge",
    # quantize, export, quality
    "PerplexityResult", "SoupResult", "export_gguf", "merge_to_gguf", "perplexity", "soup",
    "__version__",
]
