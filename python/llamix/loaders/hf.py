"""Loading a Hugging Face model folder (config.json + safetensors, transformers' llama/mistral
layout): tensors renamed to GGUF's names, q/k rows permuted to adjacent-pair RoPE order."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import REQUIRED, ConfigError, FormatError, check_value, describe, get_field, parse_json
from ..formats.names import expected_shapes, hf_name, hf_rows_to_gguf, tensor_names
from ..formats.safetensors import SafetensorsCheckpoint
from ..tokenizer import Tokenizer
from .checkpoint import MAX_LAYERS, Checkpoint, Progress, check_layer_count, check_shape, float_weight, norm_weight

SUPPORTED_HF_TYPES = ("llama", "mistral")
_BIG = 1 << 31
_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def read_hf_config(folder: Path) -> dict:
    """config.json of a Hugging Face folder as a dict (FormatError naming the file otherwise)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a Hugging Face model folder)")
    return parse_json(cfg_path.read_bytes(), str(cfg_path))


def config_from_hf(cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """The hyper-parameters in a transformers config.json dict (4.x ``rope_theta``/``rope_scaling``/``torch_dtype``
    or 5.x ``rope_parameters``/``dtype``/``head_dim``)."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {describe(cfg)}")
    mtype = cfg.get("model_type")
    if mtype not in SUPPORTED_HF_TYPES:
        raise ConfigError(f"{source}: model_type {mtype!r:.60} is not supported (expected one of "
                          f"{SUPPORTED_HF_TYPES})")
    if cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise ConfigError(f"{source}: attention_bias / mlp_bias are not supported")
    act = get_field(cfg, "hidden_act", str, source, "silu")
    if act != "silu":
        raise ConfigError(f"{source}: hidden_act {act!r} is not supported (only silu)")

    def field(key: str, kind: type, default: Any = REQUIRED, **kw) -> Any:
        return get_field(cfg, key, kind, source, default, **kw)

    dim, n_heads = field("hidden_size", int, lo=1, hi=_BIG), field("num_attention_heads", int, lo=1, hi=_BIG)
    kw = dict(
        dim=dim, n_layers=field("num_hidden_layers", int, lo=1, hi=MAX_LAYERS), n_heads=n_heads,
        n_kv_heads=field("num_key_value_heads", int, 0, lo=0, hi=n_heads) or n_heads,
        hidden_dim=field("intermediate_size", int, lo=1, hi=_BIG), vocab_size=field("vocab_size", int, lo=1, hi=_BIG),
        head_dim=field("head_dim", int, 0, lo=0, hi=_BIG) or dim // n_heads,
        context_length=field("max_position_embeddings", int, 2048, lo=1, hi=_BIG),
        rms_eps=field("rms_norm_eps", float, 1e-6, lo=0.0, hi=1.0),
        tie_embeddings=field("tie_word_embeddings", bool, False),
        bos_token_id=_first_int(cfg, "bos_token_id", 1, source),
        eos_token_id=_first_int(cfg, "eos_token_id", 2, source),
        architecture="llama",  # llama.cpp's name for both (Mistral: a llama with a sliding window)
    )
    window = field("sliding_window", int, 0, lo=0, hi=_BIG)
    if window and mtype == "mistral" and window < kw["context_length"]:
        kw["sliding_window"] = window  # on every layer
    params = cfg.get("rope_parameters")  # transformers 5.x
    if isinstance(params, dict) and "rope_theta" in params and not any(isinstance(v, dict) for v in params.values()):
        theta, scaling, where = params.get("rope_theta"), params, "rope_parameters"
    else:
        theta, scaling, where = cfg.get("rope_theta"), cfg.get("rope_scaling"), "rope_scaling"
    kw["rope_theta"] = 10000.0 if theta is None else check_value(theta, float, f"{source}: rope_theta", lo=0.0)
    kw["rope_scaling"] = _normalise_scaling(scaling, source, where)
    c = ModelConfig(**kw, source=source)
    c.extra.setdefault("dtype", cfg.get("dtype") or cfg.get("torch_dtype"))
    return c


def _first_int(cfg: dict, key: str, default: int, source: str) -> int:
    """A token id, or the first of a list of them (``eos_token_id: [128001, 128009]``)."""
    v = cfg.get(key)
    if isinstance(v, list):
        v = v[0] if v else None
        key += "[0]"
    return default if v is None else check_value(v, int, f"{source}: {key}", lo=-1, hi=_BIG - 1)


def _normalise_scaling(s, source: str, where: str = "rope_scaling") -> dict | None:
    if s is None or s == {}:
        return None
    if not isinstance(s, dict):
        raise ConfigError(f"{source}: {where} must be an object or null, got {describe(s)}")
    s = dict(s)
    kind = s.pop("rope_type", None) or s.pop("type", None) or "default"
    s.pop("rope_theta", None)
    if kind == "default":
        return None
    if kind not in ("linear", "llama3"):
        raise ConfigError(f"{source}: rope scaling type {kind!r:.60} is not supported (default, linear, llama3)")
    if s.get("factor") is None:
        raise ConfigError(f"{source}: rope scaling {kind!r} needs a 'factor'")
    return {"rope_type": kind, **{k: v for k, v in s.items() if v is not None}}  # checked by ModelConfig


def load_hf(folder: Path, qtype: str | None, progress: Progress | None = None,
            tokenizer: Tokenizer | bool | None = None) -> Checkpoint:
    """``tokenizer``: used instead of the folder's own, which is then not read (``False``: no
    tokenizer); otherwise tokenizer.model (SentencePiece) or, without one, tokenizer.json."""
    config = config_from_hf(read_hf_config(folder), str(folder / "config.json"))
    st = SafetensorsCheckpoint(folder)
    layers = {int(m.group(1)) for name in st.keys() if (m := _LAYER.match(name))}
    check_layer_count(folder / "config.json", "num_hidden_layers", config.n_layers, layers, str(folder))
    if config.tie_embeddings is False and "lm_head.weight" not in st:
        config.tie_embeddings = True  # some exports omit the head when it equals the embedding
    shapes = expected_shapes(config)
    tensors = {}
    names = tensor_names(config)
    for i, name in enumerate(names):
        src_name = hf_name(name)
        if src_name not in st:
            raise FormatError(f"{folder}: tensor {src_name!r} is missing")
        w, src = st.get(src_name), st.dtype(src_name)
        if src not in ("f32", "f16", "bf16"):
            raise FormatError(f"{folder}: tensor {src_name!r} has dtype {src}, expected F32, F16 or BF16")
        check_shape(str(folder), src_name, w.shape, shapes[name])
        if w.ndim == 1:
            tensors[name] = norm_weight(w, src)
        else:
            tensors[name] = float_weight(hf_rows_to_gguf(name, w, config), src, qtype)
        if progress is not None:
            progress(i + 1, len(names), name)
    own = tokenizer is None or tokenizer is True
    tok = None if own or tokenizer is False else tokenizer
    if own and any((folder / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        tok = Tokenizer.from_file(folder)
    return Checkpoint(config, tensors, tok, None, str(folder), keep_alive=st)
