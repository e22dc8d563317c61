"""Hyper-parameters of a LLaMA-family model and the RoPE frequencies they imply (the loaders fill
them from a GGUF file, a Hugging Face config.json or a llama2.c header).

Beside ``llama`` (and Mistral, a llama with a sliding window), the architectures llama.cpp calls
``qwen2`` (q/k/v biases), ``qwen3`` (per-head q/k RMSNorm), ``gemma3`` (q/k norm, norms after
attention and FFN, GELU(tanh), scaled embeddings, 5 sliding-window layers in every 6 with their
own RoPE base) and ``phi3`` (fused q/k/v and gate/up in files; the loaders split them). Each
difference is a field whose default keeps llama's forward pass; :func:`architecture_defaults`
gives an architecture's values. Which layers slide is a pattern (``sliding_window_pattern``) or,
for Hugging Face configs whose ``layer_types`` follow none (Qwen2's ``max_window_layers``), one
flag per layer (``sliding_layers``); a sliding layer takes the local RoPE base whatever its window.

RoPE: Su et al. 2021, "RoFormer" (https://arxiv.org/abs/2104.09864); Llama-3 frequency scaling as
in transformers' ``_compute_llama3_parameters`` and llama.cpp's ``rope_freqs`` tensor.
"""
from __future__ import annotations

import math
from dataclasses import InitVar, asdict, dataclass, field, replace

import numpy as np

from .errors import ConfigError, check_value, describe

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
    architecture: str = "llama"   # llama.cpp's general.architecture (HF "mistral" is "llama" there)
    attn_bias: bool = False       # q, k and v projections have biases (qwen2)
    qk_norm: bool = False         # per-head RMSNorm of q and k before RoPE (qwen3, gemma3)
    post_norms: bool = False      # RMSNorm of the attention and FFN outputs before the residual adds (gemma3)
    activation: str = "silu"      # the gated FFN's activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    embed_scale: float = 1.0      # token embeddings are multiplied by this (gemma3: sqrt(dim))
    attn_scale: float | None = None  # attention scores' scale; None: 1/sqrt(head_dim)
    sliding_window: int = 0       # keys a sliding-window layer sees: p - j < window (0: none)
    sliding_window_pattern: int = 1  # 1: every layer slides; n > 1: layer i slides unless i % n == n - 1 (gemma3: 6)
    sliding_layers: tuple | None = None  # per layer, whether it slides (instead of the pattern; HF layer_types)
    rope_theta_local: float | None = None  # RoPE base of the sliding layers, unscaled (gemma3: 1e4); None: rope_theta
    extra: dict = field(default_factory=dict)
    # the file these values came from, named by validation errors (not a field: not stored or compared)
    source: InitVar[str] = "config"

    def __post_init__(self, source: str = "config") -> None:
        if not self.head_dim and isinstance(self.dim, int) and isinstance(self.n_heads, int) and self.n_heads > 0:
            self.head_dim = self.dim // self.n_heads
        if isinstance(self.sliding_layers, list):
            self.sliding_layers = tuple(self.sliding_layers)
        self.validate(source)

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def rope_neox(self) -> bool:
        """Whether files of this architecture keep q/k rows in rotate-half (NEOX) order, as
        llama.cpp's ``llama_model_rope_type`` says; llamix computes in adjacent-pair order."""
        return self.architecture in NEOX_ARCHITECTURES

    def layer_is_sliding(self, i: int) -> bool:
        """Whether layer ``i`` is a sliding-window layer (``sliding_layers``, else the pattern). Such
        a layer rotates with ``rope_theta_local`` even when the window covers the whole context."""
        if self.sliding_layers is not None:
            return bool(self.sliding_layers[i])
        n = self.sliding_window_pattern
        return n <= 1 or i % n < n - 1

    def layer_window(self, i: int) -> int:
        """The sliding window of layer ``i`` (0: it sees every earlier position)."""
        return self.sliding_window if self.sliding_window and self.layer_is_sliding(i) else 0

    def layer_rope_table(self, i: int) -> int:
        """Which row of :meth:`rope_tables` layer ``i`` rotates with."""
        return 1 if self.rope_theta_local is not None and self.layer_is_sliding(i) else 0

    def validate(self, source: str = "config") -> None:
        """Check every field's type and range; ConfigError naming ``source`` and the field."""
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"{source}: architecture {self.architecture!r} is not supported "
                              f"(supported: {', '.join(ARCHITECTURES)})")
        if self.activation not in ("silu", "gelu_tanh"):
            raise ConfigError(f"{source}: activation {self.activation!r} is not supported (silu, gelu_tanh)")
        for name in ("sliding_window", "sliding_window_pattern"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (1 if name.endswith("pattern") else 0):
                raise ConfigError(f"{source}: {name} must be a {'positive' if name.endswith('pattern') else 'non-negative'}"
                                  f" integer, got {v!r}")
        for name in ("embed_scale", "attn_scale", "rope_theta_local"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float, np.floating)) and not isinstance(v, bool)
                                      and math.isfinite(v) and v > 0):
                raise ConfigError(f"{source}: {name} must be a positive number, got {v!r}")
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "vocab_size", "head_dim", "context_length"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{source}: {name} must be a positive integer, got {v!r}")
        layers = self.sliding_layers
        if layers is not None and (not isinstance(layers, tuple) or len(layers) != self.n_layers
                                   or not all(isinstance(v, (bool, np.bool_)) for v in layers)):
            raise ConfigError(f"{source}: sliding_layers must be None or one boolean per layer ({self.n_layers}), "
                             f"got {layers!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"{source}: n_heads ({self.n_heads}) is not a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"{source}: head_dim ({self.head_dim}) must be even for RoPE")
        for name in ("rms_eps", "rope_theta"):
            v = check_value(getattr(self, name), float, f"{source}: {name}", lo=0.0)
            if not v > 0:
                raise ConfigError(f"{source}: rms_eps and rope_theta must be positive ({name} = {v!r})")
        for name in ("bos_token_id", "eos_token_id"):
            check_value(getattr(self, name), int, f"{source}: {name}", lo=-1, hi=2**31 - 1)
        if self.rope_scaling is not None:
            check_rope_scaling(self.rope_scaling, source)

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
                raise ConfigError(f"rope_freqs has {freq_factors.size} entries, expected {inv_freq.size}")
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

    def rope_tables(self, freq_factors: np.ndarray | None = None) -> np.ndarray:
        """(1 or 2, head_dim / 2) float32 inverse frequencies: row 0 for the full-attention layers
        (scaling and ``freq_factors`` applied), row 1, when ``rope_theta_local`` is set, for the
        sliding layers (that base, unscaled, as llama.cpp's ``rope_freq_scale_train_swa = 1``)."""
        tables = [self.rope_inv_freq(freq_factors)]
        if self.rope_theta_local is not None:
            tables.append(replace(self, rope_theta=self.rope_theta_local, rope_scaling=None).rope_inv_freq())
        return np.ascontiguousarray(np.stack(tables), dtype=np.float32)

    def llama3_rope_factors(self) -> np.ndarray | None:
        """Llama-3 scaling as llama.cpp stores it (GGUF ``rope_freqs.weight``): per-frequency
        divisors of the plain frequencies; None for other scalings."""
        if not self.rope_scaling or self.rope_scaling.get("rope_type") != "llama3":
            return None
        plain = replace(self, rope_scaling=None).rope_inv_freq()
        return (plain / self.rope_inv_freq()).astype(np.float32)


def check_rope_scaling(s, source: str, where: str = "rope scaling") -> None:
    """A ``rope_scaling`` dict as ModelConfig holds it: ``rope_type`` linear or llama3, a positive
    finite ``factor``; llama3's ``low_freq_factor`` < ``high_freq_factor`` and
    ``original_max_position_embeddings`` positive numbers when given. ConfigError otherwise."""
    if not isinstance(s, dict):
        raise ConfigError(f"{source}: {where} must be an object, got {describe(s)}")
    kind = s.get("rope_type")
    if kind not in ("linear", "llama3"):
        raise ConfigError(f"{source}: rope scaling type {kind!r} is not supported (default, linear, llama3)")
    if s.get("factor") is None:
        raise ConfigError(f"{source}: rope scaling {kind!r} needs a 'factor'")
    factor = check_value(s["factor"], float, f"{source}: {where}.factor", lo=0.0)
    if not factor > 0:
        raise ConfigError(f"{source}: {where}.factor must be positive, got {factor!r}")
    if kind == "llama3":
        low, high = (check_value(s.get(k, d), float, f"{source}: {where}.{k}", lo=0.0)
                     for k, d in (("low_freq_factor", 1.0), ("high_freq_factor", 4.0)))
        if not 0 < low < high:
            raise ConfigError(f"{source}: {where}: low_freq_factor ({low}) must be positive and below "
                              f"high_freq_factor ({high})")
        check_value(s.get("original_max_position_embeddings", 8192), float,
                    f"{source}: {where}.original_max_position_embeddings", lo=1.0)


# architectures whose files keep q/k rows in rotate-half order (llama.cpp: LLAMA_ROPE_TYPE_NEOX)
NEOX_ARCHITECTURES = ("qwen2", "qwen3", "gemma3", "phi3")
ARCHITECTURES = ("llama",) + NEOX_ARCHITECTURES


def architecture_defaults(architecture: str, dim: int) -> dict:
    """The ModelConfig fields that make ``architecture`` differ from llama (ValueError for one
    llamix does not run). ``dim`` sets gemma3's embedding scale, sqrt(dim) in float32 as both
    transformers and llama.cpp compute it."""
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture {architecture!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    out: dict = {"architecture": architecture}
    if architecture == "qwen2":
        out.update(attn_bias=True)
    elif architecture == "qwen3":
        out.update(qk_norm=True)
    elif architecture == "gemma3":
        out.update(qk_norm=True, post_norms=True, activation="gelu_tanh", embed_scale=float(np.sqrt(np.float32(dim))),
                   sliding_window_pattern=6, rope_theta_local=10000.0)
    return out
