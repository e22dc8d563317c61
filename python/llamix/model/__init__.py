"""LLaMA-family models: config, weights loading, forward pass (C++), sampling, generation."""
from .config import ModelConfig
from .model import Model, load
from .sampling import Sampler

__all__ = ["Model", "ModelConfig", "Sampler", "load"]
