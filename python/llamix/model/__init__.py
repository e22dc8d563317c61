"""A loaded model: forward pass (C++), KV cache, sampling, generation. Sees a Checkpoint (config +
tensor lookup + tokenizer), nothing of files."""
from .chat import ChatSession
from .engine import Request, Step
from .model import Model, load
from .sampling import Sampler

__all__ = ["ChatSession", "Model", "Request", "Sampler", "Step", "load"]
