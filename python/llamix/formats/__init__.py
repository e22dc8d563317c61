"""File formats: safetensors, GGUF, llama2.c checkpoints (memory-mapped, lazy)."""
