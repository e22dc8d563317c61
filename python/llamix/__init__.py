"""llamix: LLaMA-family models in 4 bits on the CPU, and model merging, on SIMD C++ kernels."""
from __future__ import annotations

from ._runtime import cpu_info, set_isa, set_threads
from .quant import QuantizedTensor, matmul, quantize

__version__ = "0.1.0"

__all__ = ["QuantizedTensor", "cpu_info", "matmul", "quantize", "set_isa", "set_threads", "__version__"]

# Each area adds its public names in its own block below (kept apart so branches merge cleanly).

# --- inference (issue 3) ---
from .model import Model, ModelConfig, load  # noqa: E402
from .tokenizer import Tokenizer  # noqa: E402

__all__ += ["Model", "ModelConfig", "Tokenizer", "load"]


# --- merging (issue 4) ---
from .merge import ConfigError, merge  # noqa: E402

__all__ += ["ConfigError", "merge"]


# --- quantize, export, quality (issue 5) ---
from .quality.export import export_gguf  # noqa: E402
from .quality.perplexity import PerplexityResult, perplexity  # noqa: E402

__all__ += ["PerplexityResult", "export_gguf", "perplexity"]
