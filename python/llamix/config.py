"""Hyper-parameters of a LLaMA-family model and the RoPE frequencies they imply (the loaders fill
them from a GGUF file, a Hugging Face config.json or a llama2.c header).

RoPE: Su et al. 2021, "RoFormer" (https://arxiv.org/abs/2104.09864); Llama-3 frequency scaling as
in transformers' ``_compute_llama3_parameters`` and llama.cpp's ``rope_freqs`` tensor.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
import numpy as np

@dataclass
class ModelConfig:
    """The hyper-parameters the forward pass needs (names follow llama.cpp's GGUF keys)."""
    dim: int                      # embedding_length / hidden_size
    n_layers: int                 # block_count / num_hidden_layers
    n_heads: int                  # attention.head_count
    n_kv_heads: int               # attention.head_count_kv (grouped-query attention when < n_heads)
    hidden_dim: int               # feed_forward_length / intermediate_size
    vocab_size: int
    head_dim: int = 0             # 0 -> dim // n_heads
    context_length: int = 2048    # the training context (max_position_embeddings)
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "linear"|"llama3", "factor": ..., ...}
    tie_embeddings: bool = False
    bos_token_id: int = 1
    eos_token_id: int = 2
    architecture: str = "llama"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.head_dim:
            self.head_dim = self.dim // max(self.n_heads, 1)
        self.validate()

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def validate(self, source: str = "config") -> None:
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "head_dim", "context_length"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"{source}: {name} must be a positive integer, got {v!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{source}: n_heads ({self.n_heads}) is not a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"{source}: head_dim ({self.head_dim}) must be even for RoPE")
        if not (self.rms_eps > 0 and self.rope_theta > 0):
            raise ValueError(f"{source}: rms_eps and rope_theta must be positive")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type")
            if kind not in ("linear", "llama3"):
                raise ValueError(f"{source}: rope scaling type {kind!r} is not supported (default, linear, llama3)")

    def to_dict(self) -> dict:
        return asdict(self)

    # --- RoPE ---
    def rope_inv_freq(self, freq_factors: np.ndarray | None = None) -> np.ndarray:
        """(head_dim / 2) float32 inverse frequencies, computed in float32 as transformers does.

        ``freq_factors`` (GGUF ``rope_freqs.weight``) divide the frequencies (llama.cpp's form of
        Llama-3 scaling); otherwise ``rope_scaling`` is applied here.
        """
        hd = self.head_dim
        exponent = np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / np.float32(hd)
        inv_freq = (np.float32(1.0) / (np.float32(self.rope_theta) ** exponent)).astype(np.float32)
        if freq_factors is not None:
            freq_factors = np.asarray(freq_factors, dtype=np.float32).reshape(-1)
            if freq_factors.shape != inv_freq.shape:
                raise ValueError(f"rope_freqs has {freq_factors.size} entries, expected {inv_freq.size}")
            return (inv_freq / freq_factors).astype(np.float32)
        s = self.rope_scaling
        if s is None:
            return inv_freq
        if s["rope_type"] == "linear":
            return (inv_freq / np.float32(s["factor"])).astype(np.float32)
        # llama3: long wavelengths divided by factor, short ones kept, smooth blend between
        factor = float(s["factor"])
        low, high = float(s.get("low_freq_factor", 1.0)), float(s.get("high_freq_factor", 4.0))
        old_ctx = float(s.get("original_max_position_embeddings", 8192))
        low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
        wavelen = np.float32(2 * math.pi) / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / np.float32(factor), inv_freq).astype(np.float32)
        smooth = ((np.float32(old_ctx) / wavelen - np.float32(low)) / np.float32(high - low)).astype(np.float32)
        smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)

    def llama3_rope_factors(self) -> np.ndarray | None:
        """Llama-3 scaling as llama.cpp stores it (GGUF ``rope_freqs.weight``): per-frequency
        divisors of the plain frequencies; None for other scalings."""
        if not self.rope_scaling or self.rope_scaling.get("rope_type") != "llama3":
            return None
        plain = replace(self, rope_scaling=None).rope_inv_freq()
        return (plain / self.rope_inv_freq()).astype(np.float32)
