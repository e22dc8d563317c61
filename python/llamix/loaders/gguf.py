"""Loading a GGUF file of a supported architecture (``llama``, ``qwen2``, ``qwen3``, ``gemma3``,
``phi3``): config from its ``{arch}.*`` metadata (llama.cpp's key names, each checked for type and
range), tensors used in place from the memory map where their layout is already llamix's
(q/k rows of the NEOX architectures are permuted into adjacent-pair order, phi3's fused tensors
split by rows), the tokenizer built from ``tokenizer.ggml.*``."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ARCHITECTURES, ModelConfig, architecture_defaults
from ..errors import ConfigError, FormatError
from ..formats.gguf import GGUFReader, read_header
from ..formats.gguf_llama import general_entries_of, tokenizer_entries_of
from ..formats.names import file_rows_to_pairs, file_shapes, file_tensor_names, fused_parts
from ..quant import QuantizedTensor
from ..tokenizer import Tokenizer
from .checkpoint import (COMPUTE_TYPES, MAX_LAYERS, Checkpoint, Progress, check_layer_count, check_shape, float_weight,
                         norm_weight)

_REQUIRED = object()
_BLOCK = re.compile(r"^blk\.(\d+)\.")


def hparam(reader: GGUFReader, key: str, kind: type, default: Any = _REQUIRED, *, lo: float | None = None,
           hi: float | None = None, positive: bool = False) -> Any:
    """One metadata value, checked: ``kind`` int, float (an integer value is accepted), str or
    bool; numbers within [lo, hi] (``positive``: > 0). A missing key gives ``default`` (ConfigError
    when required); anything else wrong is a ConfigError naming the file and the key."""
    source = str(reader.path)
    if key not in reader.metadata:
        if default is _REQUIRED:
            raise ConfigError(f"{source}: required metadata key {key!r} is missing")
        return default
    v = reader.metadata[key]
    is_int = isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
    if kind is int:
        if not is_int:
            raise ConfigError(f"{source}: metadata {key!r} must be an integer, got {_describe(v)}")
        v = int(v)
    elif kind is float:
        if not (is_int or isinstance(v, (float, np.floating))) or not math.isfinite(float(v)):
            raise ConfigError(f"{source}: metadata {key!r} must be a finite number, got {_describe(v)}")
        v = float(v)
    elif kind is str:
        if not isinstance(v, str):
            raise ConfigError(f"{source}: metadata {key!r} must be a string, got {_describe(v)}")
        return v
    elif kind is bool:
        if not isinstance(v, (bool, np.bool_)):
            raise ConfigError(f"{source}: metadata {key!r} must be a boolean, got {_describe(v)}")
        return bool(v)
    else:
        raise TypeError(f"unsupported kind {kind!r}")
    if positive and not v > 0:
        raise ConfigError(f"{source}: metadata {key!r} = {v!r} must be positive")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ConfigError(f"{source}: metadata {key!r} = {v!r} is out of range "
                         f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]")
    return v


def _describe(v) -> str:
    if isinstance(v, (list, np.ndarray)):
        return f"an array of {len(v)}"
    s = repr(v)
    return f"{type(v).__name__} {s[:40]}"


def config_from_gguf(reader: GGUFReader) -> ModelConfig:
    """The hyper-parameters in a GGUF file's ``general.architecture`` and ``{arch}.*`` metadata."""
    source = str(reader.path)
    kind = reader.get("general.type")
    if kind in ("adapter", "imatrix"):   # not a model: say what it is and where it goes
        what, flag = (("a LoRA adapter", "--lora FNAME (beside the base model's -m), llamix.load(model, lora=...)")
                      if kind == "adapter" else ("an importance matrix", "quantize --imatrix FILE"))
        raise FormatError(f"{source}: {what} (general.type = {kind!r}), not a model; it is given with {flag}")
    arch = hparam(reader, "general.architecture", str)
    if arch not in ARCHITECTURES:
        raise ConfigError(f"{source}: architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
    big = 1 << 31

    def get(key: str, kind: type, default: Any = _REQUIRED, **kw) -> Any:
        return hparam(reader, f"{arch}.{key}", kind, default, **kw)

    dim = get("embedding_length", int, lo=1, hi=big)
    n_layers = get("block_count", int, lo=1, hi=MAX_LAYERS)
    n_heads = get("attention.head_count", int, lo=1, hi=big)
    n_kv = get("attention.head_count_kv", int, n_heads, lo=1, hi=n_heads)
    hidden = get("feed_forward_length", int, lo=1, hi=big)
    vocab = get("vocab_size", int, None, lo=1, hi=big)
    if vocab is None:
        tokens = reader.get("tokenizer.ggml.tokens")
        emb = reader.tensors.get("token_embd.weight")
        if isinstance(tokens, list) and tokens:
            vocab = len(tokens)
        elif emb is not None and emb.shape:
            vocab = emb.shape[0]
    if vocab is None:
        raise ConfigError(f"{source}: cannot determine the vocabulary size ({arch}.vocab_size missing)")
    head_dim = get("attention.key_length", int, None, lo=2, hi=big)
    rope_dims = get("rope.dimension_count", int, None, lo=2, hi=big)
    if head_dim is None:
        head_dim = rope_dims if rope_dims is not None else dim // n_heads
    value_dim = get("attention.value_length", int, head_dim, lo=1, hi=big)
    if value_dim != head_dim:
        raise ConfigError(f"{source}: {arch}.attention.value_length ({value_dim}) differs from the key length "
                         f"({head_dim}); llamix needs them equal")
    if rope_dims is not None and rope_dims != head_dim:
        raise ConfigError(f"{source}: partial RoPE ({arch}.rope.dimension_count {rope_dims} != head_dim {head_dim}) "
                         "is not supported")
    scaling = None
    stype = get("rope.scaling.type", str, None)
    if stype not in (None, "none") and "rope_freqs.weight" not in reader.tensors:
        if stype != "linear":
            raise ConfigError(f"{source}: {arch}.rope.scaling.type {stype!r} is not supported (none, linear)")
        scaling = {"rope_type": "linear", "factor": get("rope.scaling.factor", float, 1.0, positive=True)}
    for name in ("rope_factors_long.weight", "rope_factors_short.weight"):
        if name in reader.tensors:
            raise ConfigError(f"{source}: tensor {name!r}: Phi-3 long-context RoPE factors (LongRoPE) are not supported")
    kw = architecture_defaults(arch, dim)
    if arch == "gemma3":
        kw["sliding_window"] = get("attention.sliding_window", int, lo=1, hi=big)
        kw["rope_theta_local"] = get("rope.freq_base_swa", float, 10000.0, positive=True)
        if n_layers == 62:  # llama.cpp (after gemma_pytorch): the 27B scales queries by 1/sqrt(dim / n_heads)
            kw["attn_scale"] = float(np.float32(1.0) / np.sqrt(np.float32(dim // n_heads)))
    elif arch in ("llama", "phi3"):
        # llama: as llamix writes a Mistral model; phi3: the window transformers applies on every
        # layer (llama.cpp ignores phi3's window)
        kw["sliding_window"] = get("attention.sliding_window", int, 0, lo=0, hi=big)
    context = get("context_length", int, 2048, lo=1, hi=big)
    if kw.get("sliding_window", 0) >= context:
        kw["sliding_window"] = 0  # a window as long as the context changes nothing
    c = ModelConfig(
        dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, hidden_dim=hidden, vocab_size=int(vocab),
        head_dim=head_dim, context_length=context,
        rms_eps=get("attention.layer_norm_rms_epsilon", float, positive=True, hi=1.0),
        rope_theta=get("rope.freq_base", float, 10000.0, positive=True),
        rope_scaling=scaling, tie_embeddings="output.weight" not in reader.tensors,
        bos_token_id=hparam(reader, "tokenizer.ggml.bos_token_id", int, 1, lo=0, hi=big - 1),
        eos_token_id=hparam(reader, "tokenizer.ggml.eos_token_id", int, 2, lo=0, hi=big - 1),
        **kw, source=source,
    )
    return c



def tokenizer_of(reader: GGUFReader) -> Tokenizer | None:
    """The tokenizer of a GGUF file's ``tokenizer.ggml.*`` metadata (None if it has none)."""
    if "tokenizer.ggml.model" not in reader.metadata:
        return None
    return Tokenizer.from_gguf_metadata(reader.metadata, source=str(reader.path))


def vocabulary_only(path: Path, tokenizer: Tokenizer | None = None) -> tuple[str, Tokenizer | None] | None:
    """For a GGUF file holding no tensors (a vocabulary-only file, as llama.cpp's tokenizer tests
    ship them): its architecture name and tokenizer (``tokenizer`` instead, when given). None for
    any other file or a folder."""
    path = Path(path)
    if not path.is_file():
        return None
    header = read_header(path)
    if header is None or header[1] != 0:
        return None
    r = GGUFReader(path)
    arch = r.get("general.architecture")
    return (arch if isinstance(arch, str) else "?"), (tokenizer if tokenizer is not None else tokenizer_of(r))


def _check_type(path, name: str, t) -> str:
    qt = t.type.name.lower()
    if qt not in COMPUTE_TYPES:
        raise FormatError(f"{path}: tensor {name!r} has type {t.type.name}, which llamix cannot compute with yet "
                         f"(supported: {', '.join(x.upper() for x in COMPUTE_TYPES)})")
    return qt


def load_gguf(path: Path, qtype: str | None, progress: Progress | None = None,
              tokenizer: Tokenizer | bool | None = None) -> Checkpoint:
    """``tokenizer``: used instead of the file's own vocabulary, which is then not read at all
    (``False``: no tokenizer; ``None`` or ``True``: the file's own)."""
    r = GGUFReader(path)
    config = config_from_gguf(r)
    layers = {int(m.group(1)) for name in r.tensors if (m := _BLOCK.match(name))}
    check_layer_count(path, f"{config.architecture}.block_count", config.n_layers, layers, "the file")
    shapes = file_shapes(config)
    names = file_tensor_names(config)
    expected = set(names) | {"rope_freqs.weight"}
    unknown = [n for n in r.tensors if n not in expected]
    if unknown:
        raise FormatError(f"{path}: tensor {unknown[0]!r} is not part of a {config.architecture} model as llamix runs it"
                         f"{f' ({len(unknown)} such tensors)' if len(unknown) > 1 else ''}")
    tensors, kept = {}, {}
    for i, name in enumerate(names):
        t = r.tensor(name)
        check_shape(str(path), name, t.shape, shapes[name])
        qt = _check_type(path, name, t)
        if len(t.shape) == 1:
            tensors[name] = file_rows_to_pairs(name, norm_weight(t.array(), qt), config)
        else:
            parts = fused_parts(name, config) or [(name, 0, t.shape[0])]
            plain = qt in ("f32", "f16", "bf16")
            src = t.array() if plain else t.raw()
            for part, a, b in parts:
                rows = src if (a, b) == (0, t.shape[0]) else src[a:b]
                rows = file_rows_to_pairs(part, rows, config)
                if plain:
                    tensors[part] = float_weight(rows, qt, qtype)
                else:  # block-quantized: used in place (or a permuted copy), whatever qtype asks for
                    tensors[part] = QuantizedTensor(np.ascontiguousarray(rows), qt, (b - a, t.shape[1]))
                    if qtype is not None and qtype != qt:
                        kept[part] = qt
        if progress is not None:
            progress(i + 1, len(names), name)
    rope_freqs = None
    if "rope_freqs.weight" in r.tensors:
        t = r.tensors["rope_freqs.weight"]
        check_shape(str(path), "rope_freqs.weight", t.shape, (config.head_dim // 2,))
        if t.type.name != "F32":
            raise FormatError(f"{path}: tensor 'rope_freqs.weight' has type {t.type.name}, expected F32")
        rope_freqs = t.array().astype(np.float32)
    own = tokenizer is None or tokenizer is True
    tok = tokenizer_of(r) if own else (tokenizer or None)
    entries = tokenizer_entries_of(r) if own else []
    template = r.get("tokenizer.chat_template")
    name = r.get("general.name")
    return Checkpoint(config, tensors, tok, rope_freqs, str(path), keep_alive=r, tokenizer_entries=entries,
                      chat_template=template if isinstance(template, str) and template else None,
                      chat_template_source=f"{path}: tokenizer.chat_template",
                      general_entries=general_entries_of(r), name=name if isinstance(name, str) else None,
                      kept_quantized=kept)
