"""A loaded model: forward pass (C++), KV cache, sampling, generation. Sees a Checkpoint (config +
tensor lookup + tokenizer), nothing of files."""
from .model import Model, load
from .sampling import Sampler

__all__ = ["Model", "Sampler", "load"]
