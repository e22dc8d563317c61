"""Loading a Hugging Face model folder (config.json + safetensors) of the architectures llamix runs:
``model_type`` llama, mistral, qwen2, qwen3, gemma3_text, gemma3 (the text model of a
Gemma3ForConditionalGeneration folder) and phi3.

The config is read as transformers reads it (4.x and 5.x spellings; a field left out takes the
config class's default, as published Gemma-3 folders rely on); tensors are renamed to GGUF's
names per architecture (formats/names.py), q/k rows (and q/k biases and norms) permuted from
rotate-half to adjacent-pair order, phi3's fused q/k/v and gate/up split, Gemma's norm weights
w stored as the 1 + w its RMSNorm multiplies by (as GGUF files hold them).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, architecture_defaults
from ..formats.names import (HF_TEXT_LAYOUTS, file_shapes, file_tensor_names, fused_parts, hf_name, hf_norm_offset,
                             hf_rows_to_gguf)
import re

from ..errors import ConfigError, FormatError, describe, parse_json
from ..formats.safetensors import SafetensorsCheckpoint
from ..tokenizer import Tokenizer
from .checkpoint import MAX_LAYERS, Checkpoint, Progress, check_layer_count, check_shape, float_weight, norm_weight

SUPPORTED_HF_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text", "gemma3", "phi3")

# llama.cpp's architecture of each model_type (Mistral is a llama with a sliding window)
_ARCHITECTURE = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3_text": "gemma3",
                 "phi3": "phi3"}

_LLAMA = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
              num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6, rope_theta=10000.0,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, hidden_act="silu")
_QWEN = dict(_LLAMA, vocab_size=151936, intermediate_size=22016, max_position_embeddings=32768, bos_token_id=None,
             eos_token_id=None, use_sliding_window=False, sliding_window=4096, max_window_layers=28)
# transformers' config class defaults of the fields read here (a config.json may leave any out)
_DEFAULTS: dict[str, dict] = {
    "llama": _LLAMA,
    "mistral": dict(_LLAMA, intermediate_size=14336, num_key_value_heads=8, max_position_embeddings=131072,
                    sliding_window=4096),
    "qwen2": _QWEN,
    "qwen3": dict(_QWEN, head_dim=128),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=256, max_position_embeddings=131072,
                        rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0,
                        tie_word_embeddings=True, bos_token_id=2, eos_token_id=1,
                        hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=256, sliding_window=4096,
                        sliding_window_pattern=6),
    "phi3": dict(_LLAMA, vocab_size=32064, hidden_size=3072, intermediate_size=8192, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, eos_token_id=32000, sliding_window=None),
}
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_new")  # transformers' activations computing GELU's tanh form



def read_hf_config(folder: Path) -> dict:
    """config.json of a Hugging Face folder as a dict (FormatError naming the file otherwise)."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        if (folder / "adapter_config.json").is_file():   # a PEFT adapter given as the model
            raise FileNotFoundError(f"{folder}: a PEFT LoRA adapter folder (adapter_config.json), not a model; it is "
                                    "given with --lora FNAME (beside the base model's -m), llamix.load(model, "
                                    "lora=...), or as model+lora in a merge")
        raise FileNotFoundError(f"{folder}: no config.json (not a Hugging Face model folder)")
    return parse_json(cfg_path.read_bytes(), str(cfg_path))


def _text_config(cfg: dict, source: str) -> tuple[str, dict]:
    """(model_type, the fields of the text model with transformers' defaults filled in). A
    ``gemma3`` config (image and text) gives its ``text_config``; the end-of-sequence ids and tied
    head of the whole model apply where the text config does not set them."""
    mtype = cfg.get("model_type")
    if mtype not in SUPPORTED_HF_TYPES:
        raise ConfigError(f"{source}: model_type {mtype!r} is not supported (expected one of {SUPPORTED_HF_TYPES})")
    if mtype == "gemma3":
        text = cfg.get("text_config") or {}
        if not isinstance(text, dict):
            raise ConfigError(f"{source}: text_config must be a JSON object, got {type(text).__name__}")
        if text.get("model_type", "gemma3_text") != "gemma3_text":
            raise ConfigError(f"{source}: text_config.model_type {text.get('model_type')!r} is not gemma3_text")
        outer = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "tie_word_embeddings") if k in cfg}
        return "gemma3_text", {**_DEFAULTS["gemma3_text"], **outer, **text}
    return mtype, {**_DEFAULTS[mtype], **cfg}


def _number(cfg: dict, key: str, kind: type, source: str, *, positive: bool = True, optional: bool = False):
    """``cfg[key]`` checked: an int (``kind`` int) or a finite number, positive unless told."""
    v = cfg.get(key)
    if v is None and optional:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if kind is int:  # sizes and counts: a model's fit in 32 bits, a larger one is a corrupt file
        ok = ok and float(v).is_integer() and abs(v) < 1 << 31
    if not ok or (positive and v <= 0):
        want = "a positive " if positive else "a "
        raise ConfigError(f"{source}: {key} must be {want}{'integer below 2^31' if kind is int else 'number'}, "
                          f"got {describe(v)}")
    return kind(v)


def _flag(c: dict, key: str, source: str) -> bool:
    v = c.get(key)
    if v is not None and not isinstance(v, bool):
        raise ConfigError(f"{source}: {key} must be true or false, got {describe(v)}")
    return bool(v)


def _object(c: dict, key: str, source: str) -> dict:
    """``c[key]`` as a dict: a JSON object, or empty for null/absent."""
    v = c.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ConfigError(f"{source}: {key} must be an object or null, got {describe(v)}")
    return dict(v)


def config_from_hf(cfg: dict[str, Any], source: str = "config.json") -> ModelConfig:
    """The hyper-parameters in a transformers config.json dict (4.x ``rope_theta`` / ``rope_scaling`` /
    ``rope_local_base_freq`` / ``sliding_window_pattern`` / ``torch_dtype`` or 5.x ``rope_parameters``
    / ``layer_types`` / ``dtype``). Which layers slide follows transformers: Mistral and Phi-3 every
    layer; Qwen2/Qwen3 the layers from ``max_window_layers`` on, when ``use_sliding_window``; Gemma-3
    all but every ``sliding_window_pattern``-th; ``layer_types`` when given. ValueError naming the
    field for anything llamix would compute differently."""
    mtype, c = _text_config(cfg, source)
    arch = _ARCHITECTURE[mtype]
    dim = _number(c, "hidden_size", int, source)
    n_heads = _number(c, "num_attention_heads", int, source)
    n_layers = _number(c, "num_hidden_layers", int, source)
    if n_layers > MAX_LAYERS:  # a corrupt count: refused before anything is built per layer
        raise ConfigError(f"{source}: num_hidden_layers = {n_layers} is not a model's layer count (at most {MAX_LAYERS})")
    kw = dict(dim=dim, n_layers=n_layers, n_heads=n_heads,
              n_kv_heads=_number(c, "num_key_value_heads", int, source, optional=True) or n_heads,
              hidden_dim=_number(c, "intermediate_size", int, source),
              vocab_size=_number(c, "vocab_size", int, source),
              head_dim=_number(c, "head_dim", int, source, optional=True) or dim // n_heads,
              context_length=_number(c, "max_position_embeddings", int, source),
              rms_eps=_number(c, "rms_norm_eps", float, source),
              tie_embeddings=_flag(c, "tie_word_embeddings", source),
              bos_token_id=_first_int(c.get("bos_token_id"), 1, source),
              eos_token_id=_first_int(c.get("eos_token_id"), 2, source))
    kw.update(architecture_defaults(arch, dim))
    _check_unsupported(mtype, c, source)
    theta, scaling, local = _rope(mtype, c, source)
    kw.update(rope_theta=theta, rope_scaling=scaling)
    if arch == "gemma3":
        kw["rope_theta_local"] = local
        scalar = _number(c, "query_pre_attn_scalar", float, source)
        if scalar != kw["head_dim"]:  # transformers: scores times query_pre_attn_scalar ** -0.5, in float32
            kw["attn_scale"] = float(np.float32(scalar ** -0.5))
    kw.update(_sliding(mtype, c, n_layers, kw["context_length"], source))
    config = ModelConfig(**kw, source=source)
    config.extra.setdefault("dtype", cfg.get("dtype") or cfg.get("torch_dtype"))
    config.validate(source)
    return config


def _check_unsupported(mtype: str, c: dict, source: str) -> None:
    if mtype == "gemma3_text":
        act = c.get("hidden_activation") or c.get("hidden_act")
        if act not in _GELU_TANH:
            raise ConfigError(f"{source}: hidden_activation {act!r} is not supported (gelu_pytorch_tanh)")
        for key in ("final_logit_softcapping", "attn_logit_softcapping"):
            if c.get(key) is not None:
                raise ConfigError(f"{source}: {key} is not supported (Gemma-3 has none)")
        if c.get("use_bidirectional_attention"):
            raise ConfigError(f"{source}: use_bidirectional_attention is not supported (a causal LM only)")
    else:
        act = c.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"{source}: hidden_act {act!r} is not supported (only silu)")
    if mtype != "qwen2" and (c.get("attention_bias") or c.get("mlp_bias")):
        raise ConfigError(f"{source}: attention_bias / mlp_bias are not supported for model_type {mtype}")


def _rope(mtype: str, c: dict, source: str) -> tuple[float, dict | None, float | None]:
    """(base, scaling of the full-attention layers, base of Gemma-3's sliding layers)."""
    params = c.get("rope_parameters")  # transformers 5.x: one dict, or one per layer type
    local = None
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        full, local = dict(params.get("full_attention") or {}), params.get("sliding_attention")
    elif isinstance(params, dict) and params:
        full = dict(params)
    else:
        full = _object(c, "rope_scaling", source)
    theta = full.pop("rope_theta", None)
    if theta is None:
        theta = c.get("rope_theta", _DEFAULTS[mtype]["rope_theta"])
    theta = _number({"rope_theta": theta}, "rope_theta", float, source)
    partial = full.pop("partial_rotary_factor", c.get("partial_rotary_factor"))
    if partial is not None and partial != 1.0:
        raise ConfigError(f"{source}: partial_rotary_factor {partial!r} is not supported (RoPE over the whole head)")
    kind = full.get("rope_type") or full.get("type")
    if kind in ("longrope", "su", "yarn") and mtype == "phi3":
        raise ConfigError(f"{source}: Phi-3 long-context RoPE ({kind}, LongRoPE) is not supported")
    scaling = _normalise_scaling(full, source)
    local_theta = None
    if mtype == "gemma3_text":
        local = dict(local or {})
        lt = local.pop("rope_theta", None)
        local_theta = _number({"rope_local_base_freq": c.get("rope_local_base_freq") if lt is None else lt},
                              "rope_local_base_freq", float, source)
        if (local.get("rope_type") or "default") != "default":
            raise ConfigError(f"{source}: RoPE scaling of the sliding-window layers "
                             f"({local.get('rope_type')!r}) is not supported")
    return theta, scaling, local_theta


def _sliding(mtype: str, c: dict, n_layers: int, context: int, source: str) -> dict:
    """The sliding-window fields (``sliding_window``, ``sliding_layers``) of a config, from
    transformers' rules for which layers slide."""
    window = c.get("sliding_window")
    if mtype in ("qwen2", "qwen3") and not c.get("use_sliding_window"):
        window = None
    if window is not None:
        window = _number(c, "sliding_window", int, source)
    types = c.get("layer_types")
    if types is not None:
        if (not isinstance(types, list) or len(types) != n_layers
                or any(t not in ("sliding_attention", "full_attention") for t in types)):
            raise ConfigError(f"{source}: layer_types must list 'sliding_attention' or 'full_attention' for each of "
                             f"the {n_layers} layers")
        flags = [t == "sliding_attention" for t in types]
    elif mtype in ("qwen2", "qwen3"):
        first = _number(c, "max_window_layers", int, source, positive=False)
        flags = [window is not None and i >= first for i in range(n_layers)]
    elif mtype == "gemma3_text":
        n = _number(c, "sliding_window_pattern", int, source)
        flags = [(i + 1) % n != 0 for i in range(n_layers)]
    elif mtype in ("mistral", "phi3"):
        flags = [True] * n_layers
    else:
        flags = [False] * n_layers
    out: dict = {"sliding_window": window if window is not None and window < context else 0}
    pattern = 6 if mtype == "gemma3_text" else 1
    if flags != [pattern <= 1 or i % pattern < pattern - 1 for i in range(n_layers)]:
        if not any(flags) and mtype != "gemma3_text":
            out["sliding_window"] = 0
        else:
            out["sliding_layers"] = tuple(flags)
    return out


def _first_int(v, default: int, source: str) -> int:
    if isinstance(v, list):
        v = v[0] if v else None
    if v is None:
        return default
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ConfigError(f"{source}: token ids must be non-negative integers, got {v!r}")
    return v


def _normalise_scaling(s, source: str, where: str = "rope_scaling") -> dict | None:
    if s is None or s == {}:
        return None
    if not isinstance(s, dict):
        raise ConfigError(f"{source}: {where} must be an object or null, got {describe(s)}")
    s = dict(s)
    kind = s.pop("rope_type", None) or s.pop("type", None) or "default"
    s.pop("type", None)
    s.pop("rope_theta", None)
    if kind == "default":
        return None
    if kind not in ("linear", "llama3"):
        raise ConfigError(f"{source}: rope scaling type {kind!r:.60} is not supported (default, linear, llama3)")
    if s.get("factor") is None:
        raise ConfigError(f"{source}: rope scaling {kind!r} needs a 'factor'")
    return {"rope_type": kind, **{k: v for k, v in s.items() if v is not None}}  # checked by ModelConfig


def _rounded(x: float, dtype: str) -> float:
    """float32 ``x`` rounded to ``dtype`` (bf16: to nearest even; f16) and back."""
    x32 = np.float32(x)
    if dtype == "f16":
        return float(np.float16(x32))
    if dtype == "bf16":
        u = int(np.array(x32).view(np.uint32))
        return float(np.array(((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16, np.uint32).view(np.float32))
    return float(x32)


def _text_layout(st: SafetensorsCheckpoint, folder: Path) -> tuple[str, str]:
    """(prefix, head name) of the folder's text model (see names.HF_TEXT_LAYOUTS)."""
    for prefix, head in HF_TEXT_LAYOUTS:
        if prefix + "embed_tokens.weight" in st:
            return prefix, head
    looked = ", ".join(p + "embed_tokens.weight" for p, _ in HF_TEXT_LAYOUTS)
    raise ConfigError(f"{folder}: no text model found (none of the tensors {looked})")


def load_hf(folder: Path, qtype: str | None, progress: Progress | None = None,
            tokenizer: Tokenizer | bool | None = None) -> Checkpoint:
    """``tokenizer``: used instead of the folder's own, which is then not read (``False``: no
    tokenizer); otherwise tokenizer.model (SentencePiece) or, without one, tokenizer.json."""
    config = config_from_hf(read_hf_config(folder), str(folder / "config.json"))
    st = SafetensorsCheckpoint(folder)
    prefix, head = _text_layout(st, folder)
    layer_key = re.compile(re.escape(prefix) + r"layers\.(\d+)\.")
    present = {int(m.group(1)) for k in st.keys() if (m := layer_key.match(k))}
    if not present.issuperset(range(config.n_layers)):  # layers beyond it are refused as unknown tensors below
        check_layer_count(folder / "config.json", "num_hidden_layers", config.n_layers, present, "the safetensors files")
    arch = config.architecture
    if config.tie_embeddings is False and head not in st:
        config.tie_embeddings = True  # some exports omit the head when it equals the embedding
    if arch == "gemma3":  # transformers: sqrt(hidden) cast to the embedding's dtype
        config.embed_scale = _rounded(config.embed_scale, st.dtype(prefix + "embed_tokens.weight"))
    offset = np.float32(hf_norm_offset(arch))
    shapes = file_shapes(config)
    names = file_tensor_names(config)
    tensors, used = {}, set()
    for i, name in enumerate(names):
        src_name = hf_name(name, arch, prefix, head)
        if src_name not in st:
            raise FormatError(f"{folder}: tensor {src_name!r} is missing")
        w, src = st.get(src_name), st.dtype(src_name)
        if src not in ("f32", "f16", "bf16"):
            raise FormatError(f"{folder}: tensor {src_name!r} has dtype {src}, expected F32, F16 or BF16")
        check_shape(str(folder), src_name, w.shape, shapes[name])
        used.add(src_name)
        if w.ndim == 1:
            v = norm_weight(w, src)
            if offset and name.endswith("norm.weight"):
                v = v + offset  # Gemma computes x * (1 + w) in float32
            tensors[name] = hf_rows_to_gguf(name, v, config)
        else:
            for part, a, b in fused_parts(name, config) or [(name, 0, w.shape[0])]:
                rows = w if (a, b) == (0, w.shape[0]) else w[a:b]
                tensors[part] = float_weight(hf_rows_to_gguf(part, rows, config), src, qtype)
        if progress is not None:
            progress(i + 1, len(names), name)
    extra = [n for n in st.keys() if n.startswith(prefix + "layers.") and n not in used
             and not n.endswith("rotary_emb.inv_freq")]
    if extra:
        raise ConfigError(f"{folder}: tensor {extra[0]!r} is not part of a {arch} model as llamix runs it"
                         f"{f' ({len(extra)} such tensors)' if len(extra) > 1 else ''}")
    own = tokenizer is None or tokenizer is True
    tok = None if own or tokenizer is False else tokenizer
    if own and any((folder / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        tok = Tokenizer.from_file(folder)
    template, template_source = hf_chat_template(folder)
    return Checkpoint(config, tensors, tok, None, str(folder), keep_alive=st, chat_template=template,
                      chat_template_source=template_source)


def hf_chat_template(folder: Path) -> tuple[str | None, str | None]:
    """A Hugging Face folder's chat template, where transformers looks for it: ``chat_template.jinja``,
    then ``chat_template.json``, then ``tokenizer_config.json``'s ``chat_template`` (a string, or a
    list of named templates of which the one named ``default`` is taken), and where it was found
    (``folder/tokenizer_config.json: chat_template``). (None, None) when there is none."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8"), str(jinja)
    for name in ("chat_template.json", "tokenizer_config.json"):
        f = folder / name
        if not f.is_file():
            continue
        try:
            value = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ConfigError(f"{f}: invalid JSON ({e})") from None
        if isinstance(value, list):  # [{"name": ..., "template": ...}]
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default")
            field_name = "chat_template 'default'"
        else:
            field_name = "chat_template"
        if isinstance(value, str) and value:
            return value, f"{f}: {field_name}"
    return None, None
