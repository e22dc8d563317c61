"""The one writer of llama-family GGUF files: metadata keys as llama.cpp's ``convert_hf_to_gguf.py``
writes them for ``general.architecture`` = ``llama``, ``qwen2``, ``qwen3``, ``gemma3`` or ``phi3``
(``{arch}.*``), the tokenizer as ``tokenizer.ggml.*`` entries, and the tensors streamed in file
order (see gguf.py for the container, names.py for the names).

``config`` is any object with llamix's ModelConfig fields; the tensors are expected in the file's
layout already (names.py: q/k rows of the NEOX architectures in rotate-half order, phi3 fused).
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, NamedTuple

import numpy as np

from ..config import architecture_defaults
from ..errors import ConfigError, FormatError
from .gguf import GGUFReader, GGUFWriter, ValueType as V

# llama.cpp's general.file_type (enum llama_ftype) of the file types llamix writes
FILE_TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17,
                 "q6_k": 18, "bf16": 32,
                 "q4_1": 3, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "iq4_nl": 25, "iq4_xs": 30}
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
QUANTIZATION_VERSION = 2  # ggml's GGML_QNT_VERSION: the block layouts written here


class MetadataEntry(NamedTuple):
    key: str
    value: object
    vtype: int | None            # GGUF value type (None: inferred from the value)
    element_type: int | None = None


class TensorEntry(NamedTuple):
    name: str                    # GGUF name
    gguf_type: str               # "Q4_K", "F32", ...
    shape: tuple                 # numpy order (rows, columns)
    data: object                 # array (block types: uint8 bytes) or a callable producing it when written


def check_representable(config) -> str:
    """The GGUF architecture name of ``config``; ValueError when the file's keys cannot say what
    the config says (llama.cpp derives these facts from the architecture, not from keys)."""
    arch = getattr(config, "architecture", "llama")
    want = {"attn_bias": False, "qk_norm": False, "post_norms": False, "activation": "silu", "embed_scale": 1.0,
            "sliding_window_pattern": 1, "attn_scale": None, "sliding_layers": None}
    want.update(architecture_defaults(arch, config.dim))
    want.pop("rope_theta_local", None)  # written as rope.freq_base_swa where not llama.cpp's default
    if arch == "gemma3" and config.n_layers == 62:  # see loaders/gguf.py
        want["attn_scale"] = float(np.float32(1.0) / np.sqrt(np.float32(config.dim // config.n_heads)))
    for k, v in want.items():
        got = getattr(config, k, v)
        if (k == "attn_scale" or (k == "embed_scale" and arch == "gemma3")) and got is not None and v is not None:
            # the scale rounded to a bf16/f16 checkpoint's dtype (as transformers computes it for
            # Gemma) or float32 1/sqrt computed another way: llama.cpp's float32 value is the same model
            same = abs(got - v) <= 2.0 ** -8 * abs(v) if k == "embed_scale" else abs(got - v) <= 1e-6 * abs(v)
        else:
            same = got == v
        if k == "sliding_layers" and not same:
            raise ConfigError(f"a {arch} GGUF file cannot hold which layers slide ({_layer_kinds(got)}; llama.cpp's "
                             f"{arch} slides {'five layers in six' if arch == 'gemma3' else 'all or none'})")
        if k != "architecture" and not same:
            raise ConfigError(f"a {arch} GGUF file cannot hold {k} = {got!r} (llama.cpp's {arch} has {v!r})")
    if arch in ("qwen2", "qwen3") and getattr(config, "sliding_window", 0):
        raise ConfigError(f"a {arch} GGUF file cannot hold a sliding window (llama.cpp's {arch} has none)")
    scaling = getattr(config, "rope_scaling", None) or {}
    if arch != "llama" and scaling.get("rope_type") == "llama3":
        raise ConfigError(f"a {arch} GGUF file cannot hold Llama-3 RoPE scaling (llama.cpp's {arch} reads no "
                         "rope_freqs tensor)")
    return arch


def _layer_kinds(flags) -> str:
    return "".join("S" if f else "F" for f in flags) + " (S: sliding, F: full)"


def llama_metadata(config, name: str = "llamix", file_type_id: int | None = None) -> list[MetadataEntry]:
    """``general.*`` and ``{arch}.*`` entries for a model of ``config``."""
    c = config
    arch = check_representable(c)
    kv = [MetadataEntry("general.architecture", arch, V.STRING), MetadataEntry("general.name", name, V.STRING)]
    if file_type_id is not None:
        kv += [MetadataEntry("general.file_type", int(file_type_id), V.UINT32),
               MetadataEntry("general.quantization_version", QUANTIZATION_VERSION, V.UINT32)]
    kv += [
        MetadataEntry(f"{arch}.vocab_size", c.vocab_size, V.UINT32),
        MetadataEntry(f"{arch}.context_length", c.context_length, V.UINT32),
        MetadataEntry(f"{arch}.embedding_length", c.dim, V.UINT32),
        MetadataEntry(f"{arch}.block_count", c.n_layers, V.UINT32),
        MetadataEntry(f"{arch}.feed_forward_length", c.hidden_dim, V.UINT32),
        MetadataEntry(f"{arch}.rope.dimension_count", c.head_dim, V.UINT32),
        MetadataEntry(f"{arch}.attention.head_count", c.n_heads, V.UINT32),
        MetadataEntry(f"{arch}.attention.head_count_kv", c.n_kv_heads, V.UINT32),
        MetadataEntry(f"{arch}.attention.layer_norm_rms_epsilon", float(c.rms_eps), V.FLOAT32),
        MetadataEntry(f"{arch}.rope.freq_base", float(c.rope_theta), V.FLOAT32),
    ]
    if c.head_dim * c.n_heads != c.dim or arch == "gemma3":
        kv += [MetadataEntry(f"{arch}.attention.key_length", c.head_dim, V.UINT32),
               MetadataEntry(f"{arch}.attention.value_length", c.head_dim, V.UINT32)]
    if c.rope_scaling and c.rope_scaling.get("rope_type") == "linear":
        kv += [MetadataEntry(f"{arch}.rope.scaling.type", "linear", V.STRING),
               MetadataEntry(f"{arch}.rope.scaling.factor", float(c.rope_scaling["factor"]), V.FLOAT32)]
    window = getattr(c, "sliding_window", 0)
    if arch == "gemma3":  # llama.cpp requires the key; a window as long as the context slides nothing
        kv.append(MetadataEntry(f"{arch}.attention.sliding_window", int(window or c.context_length), V.UINT32))
        local = getattr(c, "rope_theta_local", None)
        if local is not None and float(local) != 10000.0:
            kv.append(MetadataEntry(f"{arch}.rope.freq_base_swa", float(local), V.FLOAT32))
    elif window:
        kv.append(MetadataEntry(f"{arch}.attention.sliding_window", int(window), V.UINT32))
    return kv


def tokenizer_metadata(tokenizer, vocab_size: int | None = None) -> list[MetadataEntry]:
    """``tokenizer.ggml.*`` entries of a :class:`llamix.Tokenizer`, as llama.cpp's
    ``llama-vocab.cpp`` reads them and ``convert_hf_to_gguf.py`` writes them: a SentencePiece
    vocabulary as model ``llama`` (tokens, scores, token types: SentencePiece's piece types), a
    byte-level BPE one as ``gpt2`` (tokens, token types, merges, the ``pre`` pre-tokenizer name);
    then the special ids, ``add_bos_token`` / ``add_eos_token`` and ``add_space_prefix``.

    ``vocab_size``: the model's embedding rows. llama.cpp wants one token per row, so a shorter
    vocabulary is padded with unused ``[PAD<id>]`` tokens, as convert_hf_to_gguf.py pads it.
    Raises ValueError for a vocabulary llama.cpp could not read back (a tokenizer.json whose
    pre-tokenizer llama.cpp does not know, a SentencePiece-style tokenizer.json without scores).
    """
    vocab = tokenizer.vocab
    model = vocab.model
    tokens = list(vocab.tokens)
    types = np.asarray(vocab.types, dtype=np.int32)
    n = len(tokens)
    pad = max(0, int(vocab_size or 0) - n)
    if pad:
        tokens += [f"[PAD{i}]" for i in range(n, n + pad)]
        types = np.concatenate([types, np.full(pad, 5, np.int32)])  # 5: unused
    kv = [MetadataEntry("tokenizer.ggml.model", model, V.STRING)]
    if model == "gpt2":
        kv += [MetadataEntry("tokenizer.ggml.pre", tokenizer.gguf_pre(), V.STRING),
               MetadataEntry("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
               MetadataEntry("tokenizer.ggml.token_type", types, V.ARRAY),
               MetadataEntry("tokenizer.ggml.merges", list(vocab.merges or []), V.ARRAY, V.STRING)]
    else:
        if vocab.scores is None:
            raise FormatError(f"{tokenizer.source}: a SentencePiece vocabulary without piece scores cannot be written "
                             "as GGUF (give the model's tokenizer.model)")
        # padding tokens get the score convert_hf_to_gguf.py gives them, below every real piece
        scores = np.concatenate([np.asarray(vocab.scores, dtype=np.float32), np.full(pad, -1000.0, np.float32)])
        kv += [MetadataEntry("tokenizer.ggml.tokens", tokens, V.ARRAY, V.STRING),
               MetadataEntry("tokenizer.ggml.scores", scores, V.ARRAY),
               MetadataEntry("tokenizer.ggml.token_type", types, V.ARRAY)]
    for key, idx in (("bos", vocab.bos_id), ("eos", vocab.eos_id), ("unknown", vocab.unk_id),
                     ("padding", vocab.pad_id), ("eot", vocab.eot_id), ("eom", vocab.eom_id)):
        if 0 <= idx < len(tokens):
            kv.append(MetadataEntry(f"tokenizer.ggml.{key}_token_id", int(idx), V.UINT32))
    kv += [MetadataEntry("tokenizer.ggml.add_bos_token", bool(vocab.add_bos), V.BOOL),
           MetadataEntry("tokenizer.ggml.add_eos_token", bool(vocab.add_eos), V.BOOL)]
    if model == "llama":
        kv.append(MetadataEntry("tokenizer.ggml.add_space_prefix", bool(vocab.add_space_prefix), V.BOOL))
    return kv


def chat_template_entry(template: str) -> MetadataEntry:
    """``tokenizer.chat_template``, where llama.cpp and transformers' GGUF reader find the model's
    Jinja chat template."""
    return MetadataEntry(CHAT_TEMPLATE_KEY, str(template), V.STRING)


# general.* keys a written file sets itself rather than copying them from its source
_OWN_GENERAL = ("general.architecture", "general.name", "general.file_type", "general.quantization_version")


def general_entries_of(reader: GGUFReader) -> list[MetadataEntry]:
    """A GGUF file's descriptive ``general.*`` entries (basename, finetune, size_label, license,
    ...) as stored, which llama-quantize carries into the files it writes; not those a written
    file sets itself (architecture, name, file_type, quantization_version)."""
    return [MetadataEntry(k, v, reader.value_types.get(k)) for k, v in reader.metadata.items()
            if k.startswith("general.") and k not in _OWN_GENERAL]


def tokenizer_entries_of(reader: GGUFReader) -> list[MetadataEntry]:
    """A GGUF file's ``tokenizer.*`` entries as stored (value types kept), to copy into another file."""
    return [MetadataEntry(k, v, reader.value_types.get(k)) for k, v in reader.metadata.items()
            if k.startswith("tokenizer.")]


def write_llama_gguf(path: str | os.PathLike, config, tensors: Iterable[TensorEntry], *,
                     tokenizer: list[MetadataEntry] | None, name: str = "llamix", file_type_id: int | None = None,
                     rope_freqs: np.ndarray | None = None, on_tensor: Callable[[TensorEntry], None] | None = None,
                     extra: Iterable[MetadataEntry] = ()) -> None:
    """Write a llama GGUF file atomically (a temporary name beside ``path``, renamed when complete).

    ``tensors`` are written in the order given; a callable ``data`` is called when its turn
    comes, so one converted tensor is in memory at a time. ``tokenizer``: entries from
    :func:`tokenizer_metadata` or :func:`tokenizer_entries_of`. ``rope_freqs``: Llama-3 frequency
    divisors (default: derived from ``config.rope_scaling``). ``on_tensor`` is called after each
    tensor's bytes are produced (progress). ``extra``: more entries, written after the model's
    (``general.*`` kept from a source file, ``quantize.imatrix.*``). Raises ValueError for a tensor
    whose row length is not a multiple of its type's block.
    """
    w = GGUFWriter(path)
    for e in llama_metadata(config, name, file_type_id) + list(tokenizer or []) + list(extra):
        w.add(e.key, e.value, e.vtype, e.element_type)
    if rope_freqs is None:
        rope_freqs = config.llama3_rope_factors()
    if rope_freqs is not None:
        w.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32), "F32")
    for t in tensors:
        w.add_tensor(t.name, _produce(t, on_tensor), t.gguf_type, t.shape)
    w.write()


def _produce(t: TensorEntry, on_tensor):
    def produce():
        data = t.data() if callable(t.data) else t.data
        if on_tensor is not None:
            on_tensor(t)
        return data
    return produce
