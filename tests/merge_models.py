"""Tiny LLaMA-shaped Hugging Face folders made on the fly (fixed seeds) for merge tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from merge_oracle import f32_to_bf16

LAYER_TENSORS = {
    "self_attn.q_proj.weight": lambda h, f: (h, h),
    "self_attn.k_proj.weight": lambda h, f: (h // 2, h),
    "self_attn.v_proj.weight": lambda h, f: (h // 2, h),
    "self_attn.o_proj.weight": lambda h, f: (h, h),
    "mlp.gate_proj.weight": lambda h, f: (f, h),
    "mlp.up_proj.weight": lambda h, f: (f, h),
    "mlp.down_proj.weight": lambda h, f: (h, f),
    "input_layernorm.weight": lambda h, f: (h,),
    "post_attention_layernorm.weight": lambda h, f: (h,),
}


def tiny_tensors(seed: int, layers: int = 3, hidden: int = 16, ffn: int = 24, vocab: int = 40) -> dict:
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden)).astype(np.float32)}
    for i in range(layers):
        for name, shape in LAYER_TENSORS.items():
            t[f"model.layers.{i}.{name}"] = (rng.standard_normal(shape(hidden, ffn)) * 0.2).astype(np.float32)
    t["model.norm.weight"] = (1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)
    t["lm_head.weight"] = rng.standard_normal((vocab, hidden)).astype(np.float32)
    return t


def perturbed(tensors: dict, seed: int, scale: float = 0.02) -> dict:
    rng = np.random.default_rng(seed)
    return {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in tensors.items()}


def write_model(folder: Path, tensors: dict, dtype: str = "float32", layers: int = 3, hidden: int = 16,
                vocab: int = 40) -> Path:
    """A Hugging Face folder written with the `safetensors` package (independent of llamix)."""
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    if dtype == "bfloat16":
        # the safetensors package cannot write bf16 from numpy: lay the file out by hand
        data = {k: f32_to_bf16(v) for k, v in tensors.items()}
        header, offset = {}, 0
        for k, v in data.items():
            header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [offset, offset + v.nbytes]}
            offset += v.nbytes
        raw = json.dumps(header).encode()
        with open(folder / "model.safetensors", "wb") as f:
            f.write(len(raw).to_bytes(8, "little") + raw)
            for v in data.values():
                f.write(v.tobytes())
    else:
        save_file({k: v.astype(dtype) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
              "hidden_size": hidden, "intermediate_size": 24, "num_hidden_layers": layers,
              "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": dtype}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 64, "source": folder.name}))
    return folder


def read_model(folder: Path) -> dict:
    """Every tensor of a (sharded) output folder as float64 (parsed here, independent of llamix)."""
    out = {}
    files = sorted(folder.glob("*.safetensors"))
    for f in files:
        raw = f.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        for name, e in header.items():
            b, end = e["data_offsets"]
            buf = raw[8 + n + b: 8 + n + end]
            if e["dtype"] == "BF16":
                v = (np.frombuffer(buf, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                v = np.frombuffer(buf, {"F32": np.float32, "F16": np.float16}[e["dtype"]])
            out[name] = v.astype(np.float64).reshape(e["shape"])
    return out
