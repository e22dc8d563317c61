"""Loading a GGUF file (architecture ``llama``): config from its metadata, tensors used in place
from the memory map, the tokenizer built from ``tokenizer.ggml.*``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ModelConfig
from ..formats.gguf import GGUFReader, read_header
from ..formats.gguf_llama import tokenizer_entries_of
from ..formats.names import expected_shapes, tensor_names
from ..quant import QuantizedTensor
from ..tokenizer import Tokenizer, register_metadata_reader
from .checkpoint import COMPUTE_TYPES, Checkpoint, Progress, check_shape, float_weight, norm_weight


def config_from_gguf(reader: GGUFReader) -> ModelConfig:
    """The hyper-parameters in a GGUF file's ``llama.*`` metadata (llama.cpp's key names)."""
    source = str(reader.path)
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
    c = ModelConfig(
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


def gguf_metadata(path: Path) -> dict:
    """A GGUF file's metadata (how ``Tokenizer.from_file`` reads a GGUF vocabulary)."""
    return GGUFReader(path).metadata


register_metadata_reader(b"GGUF", gguf_metadata)


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


def load_gguf(path: Path, qtype: str | None, progress: Progress | None = None,
              tokenizer: Tokenizer | bool | None = None) -> Checkpoint:
    """``tokenizer``: used instead of the file's own vocabulary, which is then not read at all
    (``False``: no tokenizer; ``None`` or ``True``: the file's own)."""
    r = GGUFReader(path)
    config = config_from_gguf(r)
    shapes = expected_shapes(config)
    tensors = {}
    names = tensor_names(config)
    for i, name in enumerate(names):
        t = r.tensor(name)
        check_shape(str(path), name, t.shape, shapes[name])
        qt = t.type.name.lower()
        if qt not in COMPUTE_TYPES:
            raise ValueError(f"{path}: tensor {name!r} has type {t.type.name}, which llamix cannot compute with yet "
                             f"(supported: {', '.join(x.upper() for x in COMPUTE_TYPES)})")
        if len(t.shape) == 1:
            tensors[name] = norm_weight(t.array(), qt)
        elif qt in ("f32", "f16", "bf16"):
            tensors[name] = float_weight(t.array(), qt, qtype)
        else:  # block-quantized: used in place, whatever qtype asks for
            tensors[name] = QuantizedTensor(t.raw(), qt, t.shape)
        if progress is not None:
            progress(i + 1, len(names), name)
    rope_freqs = r.tensors["rope_freqs.weight"].array().astype(np.float32) if "rope_freqs.weight" in r.tensors else None
    own = tokenizer is None or tokenizer is True
    tok = tokenizer_of(r) if own else (tokenizer or None)
    entries = tokenizer_entries_of(r) if own else []
    template = r.get("tokenizer.chat_template")
    return Checkpoint(config, tensors, tok, rope_freqs, str(path), keep_alive=r, tokenizer_entries=entries,
                      chat_template=template if isinstance(template, str) and template else None)
