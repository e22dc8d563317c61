"""Loading a Hugging Face model folder (config.json + safetensors, transformers' llama/mistral
layout): tensors renamed to GGUF's names, q/k rows permuted to adjacent-pair RoPE order."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..formats.names import expected_shapes, hf_name, hf_rows_to_gguf, tensor_names
from ..formats.safetensors import SafetensorsCheckpoint
from ..tokenizer import Tokenizer
from .checkpoint import Checkpoint, Progress, check_shape, float_weight, norm_weight

SUPPORTED_HF_TYPES = ("llama", "mistral")


def read_hf_config(folder: Path) -> dict:
    """config.json of a Hugging Face folder as a dict (ValueError naming the file otherwise)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a Hugging Face model folder)")
    try:
        raw = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path}: invalid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def config_from_hf(cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """The hyper-parameters in a transformers config.json dict (4.x ``rope_theta``/``rope_scaling``/``torch_dtype``
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
            architecture="llama",  # llama.cpp's name for both (Mistral: a llama with a sliding window)
        )
    except KeyError as e:
        raise ValueError(f"{source}: required field {e.args[0]!r} is missing") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: invalid value ({e})") from None
    if cfg.get("sliding_window") and mtype == "mistral" and int(cfg["sliding_window"]) < kw["context_length"]:
        kw["sliding_window"] = int(cfg["sliding_window"])  # on every layer
    params = cfg.get("rope_parameters")  # transformers 5.x
    if isinstance(params, dict) and "rope_theta" in params and not any(isinstance(v, dict) for v in params.values()):
        theta, scaling = params.get("rope_theta", 10000.0), params
    else:
        theta, scaling = cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling")
    kw["rope_theta"] = float(theta)
    kw["rope_scaling"] = _normalise_scaling(scaling, source)
    c = ModelConfig(**kw)
    c.extra.setdefault("dtype", cfg.get("dtype") or cfg.get("torch_dtype"))
    c.validate(source)
    return c



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


def load_hf(folder: Path, qtype: str | None, progress: Progress | None = None,
            tokenizer: Tokenizer | bool | None = None) -> Checkpoint:
    """``tokenizer``: used instead of the folder's own, which is then not read (``False``: no
    tokenizer); otherwise tokenizer.model (SentencePiece) or, without one, tokenizer.json."""
    config = config_from_hf(read_hf_config(folder), str(folder / "config.json"))
    st = SafetensorsCheckpoint(folder)
    if config.tie_embeddings is False and "lm_head.weight" not in st:
        config.tie_embeddings = True  # some exports omit the head when it equals the embedding
    shapes = expected_shapes(config)
    tensors = {}
    names = tensor_names(config)
    for i, name in enumerate(names):
        src_name = hf_name(name)
        if src_name not in st:
            raise ValueError(f"{folder}: tensor {src_name!r} is missing")
        w, src = st.get(src_name), st.dtype(src_name)
        if src not in ("f32", "f16", "bf16"):
            raise ValueError(f"{folder}: tensor {src_name!r} has dtype {src}, expected F32, F16 or BF16")
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
    return Checkpoint(config, tensors, tok, None, str(folder), keep_alive=st, chat_template=hf_chat_template(folder))


def hf_chat_template(folder: Path) -> str | None:
    """A Hugging Face folder's chat template, where transformers looks for it: ``chat_template.jinja``,
    then ``chat_template.json``, then ``tokenizer_config.json``'s ``chat_template`` (a string, or a
    list of named templates of which the one named ``default`` is taken). None when there is none."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            value = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"{f}: invalid JSON ({e})") from None
        if isinstance(value, list):  # [{"name": ..., "template": ...}]
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default")
        if isinstance(value, str) and value:
            return value
    return None
