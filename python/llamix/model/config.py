"""Hyper-parameters of a LLaMA-family model, read from a GGUF file, a Hugging Face config.json
(transformers 4.x and 5.x spellings) or a llama2.c header, and the RoPE frequencies they imply.

RoPE: Su et al. 2021, "RoFormer" (https://arxiv.org/abs/2104.09864); Llama-3 frequency scaling as
in transformers' ``_compute_llama3_parameters`` and llama.cpp's ``rope_freqs`` tensor.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SUPPORTED_HF_TYPES = ("llama", "mistral")


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

    # --- readers ---
    @classmethod
    def from_hf(cls, cfg: dict[str, Any], source: str = "config.json") -> "ModelConfig":
        """From a transformers config.json dict (4.x ``rope_theta``/``rope_scaling``/``torch_dtype``
        or 5.x ``rope_parameters``/``dtype``/``head_dim``)."""
        mtype = cfg.get("model_type")
        if mtype not in SUPPORTED_HF_TYPES:
            raise ValueError(f"{source}: model_type {mtype!r} is not supported (expected one of {SUPPORTED_HF_TYPES})")
        if cfg.get("attention_bias") or cfg.get("mlp_bias"):
            raise ValueError(f"{source}: attention_bias / mlp_bias are not supported")
        act = cfg.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{source}: hidden_act {act!r} is not supported (only silu)")
        try:
            dim, n_heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            kw = dict(
                dim=dim, n_layers=int(cfg["num_hidden_layers"]), n_heads=n_heads,
                n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
                hidden_dim=int(cfg["intermediate_size"]), vocab_size=int(cfg["vocab_size"]),
                head_dim=int(cfg.get("head_dim") or dim // n_heads),
                context_length=int(cfg.get("max_position_embeddings", 2048)),
                rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                bos_token_id=_first_int(cfg.get("bos_token_id"), 1),
                eos_token_id=_first_int(cfg.get("eos_token_id"), 2),
                architecture=mtype,
            )
        except KeyError as e:
            raise ValueError(f"{source}: required field {e.args[0]!r} is missing") from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: invalid value ({e})") from None
        if cfg.get("sliding_window") and mtype == "mistral" and int(cfg["sliding_window"]) < kw["context_length"]:
            kw["extra"] = {"sliding_window": int(cfg["sliding_window"])}  # exact up to the window length
        params = cfg.get("rope_parameters")  # transformers 5.x
        if isinstance(params, dict) and "rope_theta" in params and not any(isinstance(v, dict) for v in params.values()):
            theta, scaling = params.get("rope_theta", 10000.0), params
        else:
            theta, scaling = cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")
        kw["rope_theta"] = float(theta)
        kw["rope_scaling"] = _normalise_scaling(scaling, source)
        c = cls(**kw)
        c.extra.setdefault("dtype", cfg.get("dtype") or cfg.get("torch_dtype"))
        c.validate(source)
        return c

    @classmethod
    def from_gguf(cls, reader, source: str | None = None) -> "ModelConfig":
        source = source or str(reader.path)
        arch = reader.require("general.architecture")
        if arch != "llama":
            raise ValueError(f"{source}: architecture {arch!r} is not supported (only 'llama')")
        g = lambda k, d=None: reader.get(f"llama.{k}", d)  # noqa: E731
        req = lambda k: reader.require(f"llama.{k}")  # noqa: E731
        dim, n_heads = int(req("embedding_length")), int(req("attention.head_count"))
        vocab = g("vocab_size")
        if vocab is None:
            tokens = reader.get("tokenizer.ggml.tokens")
            emb = reader.tensors.get("token_embd.weight")
            vocab = len(tokens) if tokens else (emb.shape[0] if emb is not None else None)
        if vocab is None:
            raise ValueError(f"{source}: cannot determine the vocabulary size (llama.vocab_size missing)")
        scaling = None
        stype = g("rope.scaling.type")
        if stype not in (None, "none") and "rope_freqs.weight" not in reader.tensors:
            if stype != "linear":
                raise ValueError(f"{source}: llama.rope.scaling.type {stype!r} is not supported")
            scaling = {"rope_type": "linear", "factor": float(g("rope.scaling.factor", 1.0))}
        head_dim = int(g("rope.dimension_count", dim // n_heads))
        if g("attention.key_length") is not None:
            head_dim = int(g("attention.key_length"))
        c = cls(
            dim=dim, n_layers=int(req("block_count")), n_heads=n_heads,
            n_kv_heads=int(g("attention.head_count_kv", n_heads)), hidden_dim=int(req("feed_forward_length")),
            vocab_size=int(vocab), head_dim=head_dim, context_length=int(g("context_length", 2048)),
            rms_eps=float(req("attention.layer_norm_rms_epsilon")), rope_theta=float(g("rope.freq_base", 10000.0)),
            rope_scaling=scaling, tie_embeddings="output.weight" not in reader.tensors,
            bos_token_id=int(reader.get("tokenizer.ggml.bos_token_id", 1)),
            eos_token_id=int(reader.get("tokenizer.ggml.eos_token_id", 2)),
        )
        if g("rope.dimension_count") is not None and int(g("rope.dimension_count")) != c.head_dim:
            raise ValueError(f"{source}: partial RoPE (rope.dimension_count {g('rope.dimension_count')} != head_dim "
                             f"{c.head_dim}) is not supported")
        c.validate(source)
        return c

    @classmethod
    def from_llama2c(cls, h: dict) -> "ModelConfig":
        return cls(dim=h["dim"], n_layers=h["n_layers"], n_heads=h["n_heads"], n_kv_heads=h["n_kv_heads"],
                   hidden_dim=h["hidden_dim"], vocab_size=h["vocab_size"], context_length=h["seq_len"],
                   rms_eps=1e-5, rope_theta=10000.0, tie_embeddings=h["shared_classifier"],
                   architecture="llama")


def _first_int(v, default: int) -> int:
    if isinstance(v, list):
        v = v[0] if v else None
    return default if v is None else int(v)


def _normalise_scaling(s: dict | None, source: str) -> dict | None:
    if not s:
        return None
    s = dict(s)
    kind = s.pop("rope_type", None) or s.pop("type", None) or "default"
    s.pop("rope_theta", None)
    if kind == "default":
        return None
    if kind not in ("linear", "llama3"):
        raise ValueError(f"{source}: rope scaling type {kind!r} is not supported (default, linear, llama3)")
    if "factor" not in s:
        raise ValueError(f"{source}: rope scaling {kind!r} needs a 'factor'")
    return {"rope_type": kind, **{k: v for k, v in s.items() if v is not None}}
