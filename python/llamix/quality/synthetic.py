"""Random-weight LLaMA models written straight to GGUF, for tests and size/speed measurements.

Weights are Gaussian (std 0.02, norms 1), generated tensor by tensor from a seed keyed by the
tensor name, so any shape can be written without holding the model in memory.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

# Shapes people run (hidden sizes and layer counts as their config.json files give them).
SHAPES = {
    "tiny": dict(dim=256, hidden_dim=768, n_layers=2, n_heads=4, n_kv_heads=2),
    "tinyllama": dict(dim=2048, hidden_dim=5632, n_layers=22, n_heads=32, n_kv_heads=4),  # TinyLlama-1.1B
}


def random_llama_gguf(path, tokenizer, *, dim: int, hidden_dim: int, n_layers: int, n_heads: int, n_kv_heads: int,
                      dtype: str = "f16", context_length: int = 2048, seed: int = 0, tied: bool = False) -> Path:
    """Write a random-weight LLaMA GGUF (``dtype`` f32 or f16) with ``tokenizer``'s vocabulary."""
    from ..formats.gguf import GGUFWriter
    from ..model.config import ModelConfig
    from ..model.weights import expected_shapes, tensor_names
    from ..tokenizer import Tokenizer
    from .export import llama_metadata

    tok = tokenizer if isinstance(tokenizer, Tokenizer) else Tokenizer.from_file(tokenizer)
    config = ModelConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads, hidden_dim=hidden_dim,
                         vocab_size=tok.vocab_size, context_length=context_length, tie_embeddings=tied)
    np_dtype = {"f32": np.float32, "f16": np.float16}[dtype]
    shapes = expected_shapes(config)
    w = GGUFWriter(path)
    for key, value, vtype, *elem in llama_metadata(config, tok, name=Path(path).stem, file_type_id=0 if dtype == "f32" else 1):
        w.add(key, value, vtype, *elem)

    def make(name, shape):
        def produce():
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            if len(shape) == 1:
                return np.ones(shape, np.float32)
            return (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(np_dtype)
        return produce

    for name in tensor_names(config):
        shape = shapes[name]
        w.add_tensor(name, make(name, shape), "F32" if len(shape) == 1 or dtype == "f32" else "F16", shape)
    w.write()
    return Path(path)
