"""A loaded model: forward pass (C++), KV cache, sampling, generation. Sees a Checkpoint (config +
tensor lookup + tokenizer), nothing of files."""
from .batch import BatchEngine, EngineStopped, Job, QueueFull
from .chat import ChatSession
from .engine import Request, Step
from .model import Llama, Model, load
from .sampling import Sampler

__all__ = ["BatchEngine", "ChatSession", "EngineStopped", "Job", "Llama", "QueueFull", "Model", "Request", "Sampler", "Step", "load"]
