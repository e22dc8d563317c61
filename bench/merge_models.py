"""Synthetic LLaMA-shaped models for the merge benchmark: a base and fine-tunes (base + small
noise), bf16 safetensors Hugging Face folders, made once and cached."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llamix import ModelConfig
from llamix.formats.names import expected_shapes, hf_name, tensor_names
from llamix.formats.safetensors import SafetensorsWriter
from llamix.merge import kernels

# ~350M parameters: hidden 1024, 22 layers, SwiGLU 2816, vocab 32000, untied head
SHAPE = dict(hidden=1024, layers=22, ffn=2816, vocab=32000, heads=16, kv_heads=16)


def tensor_shapes(hidden, layers, ffn, vocab, heads, kv_heads):
    """(Hugging Face name, shape) of every tensor, from llamix's one name and shape table."""
    config = ModelConfig(dim=hidden, n_layers=layers, n_heads=heads, n_kv_heads=kv_heads, hidden_dim=ffn,
                         vocab_size=vocab)
    shapes = expected_shapes(config)
    for name in tensor_names(config):
        yield hf_name(name), shapes[name]


def make_models(root: Path, n_finetunes: int = 2, shape: dict = SHAPE, noise: float = 0.1) -> list[Path]:
    """[base, ft1, ...]; each fine-tune is base + noise * std(base) * N(0, 1), per tensor."""
    names = ["base"] + [f"ft{i + 1}" for i in range(n_finetunes)]
    folders = [root / n for n in names]
    if all((f / "config.json").exists() for f in folders):
        return folders
    specs = list(tensor_shapes(**shape))
    writers = []
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
        writers.append(SafetensorsWriter(f, [(n, "bf16", s) for n, s in specs]))
    rng = np.random.default_rng(0)
    for name, s in specs:
        if name.endswith("norm.weight"):
            base = 1.0 + 0.05 * rng.standard_normal(s, dtype=np.float32)
        else:
            base = 0.02 * rng.standard_normal(s, dtype=np.float32)
        std = float(np.std(base[: 4096]) if base.ndim == 1 else np.std(base[:4]))
        writers[0].write(name, kernels.scale(base, out="bfloat16"))
        for w in writers[1:]:
            ft = base + (noise * std) * rng.standard_normal(s, dtype=np.float32)
            w.write(name, kernels.scale(ft, out="bfloat16"))
            del ft
        del base
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": shape["vocab"],
              "hidden_size": shape["hidden"], "intermediate_size": shape["ffn"],
              "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
              "num_key_value_heads": shape["kv_heads"], "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    for w, f in zip(writers, folders):
        w.close()
        (f / "config.json").write_text(json.dumps(config, indent=2))
    return folders


def n_params(shape: dict = SHAPE) -> int:
    return sum(int(np.prod(s)) for _, s in tensor_shapes(**shape))
