"""Random-weight llama models of named shapes, made without any download: for benchmarks
(``llamix bench --shape``), trying the pipeline (``llamix generate --random``) and tests.

Weights are N(0, 0.02) (llama's norms 1; the optional tensors of other architectures are random:
biases N(0, 0.1), q/k and post norms N(1, 0.1)). A pool of normal draws is made once per seed and each tensor is
a slice of it at an offset keyed by (seed, tensor name), so a 1B model is made in seconds, the
same tensor comes out whatever order tensors are asked in, and memory holds one tensor at a time
when the checkpoint is lazy. The text such a model produces is meaningless by construction.
"""
from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping

import numpy as np

from ..config import ModelConfig, architecture_defaults
from ..errors import ArgumentError
from ..formats.names import expected_shapes, tensor_names
from ..quant import quantize
from ..quant.qtypes import qtype_info
from ..tokenizer import Tokenizer
from .checkpoint import Checkpoint

SHAPES: dict[str, dict] = {
    # a few MB; rows are multiples of 256 so every block type applies
    "tiny": dict(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, hidden_dim=768, vocab_size=354, context_length=2048),
    # TinyLlama-1.1B
    "1b": dict(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden_dim=5632, vocab_size=32000, context_length=2048),
    # LLaMA-2-7B
    "7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, hidden_dim=11008, vocab_size=32000, context_length=4096),
}
_POOL_SIZE = 1 << 24


def random_config(shape: str = "tiny", **overrides) -> ModelConfig:
    """The config of a named shape (``tiny``, ``1b``, ``7b``), with any field overridden;
    ``architecture=`` brings that architecture's defaults (config.architecture_defaults)."""
    if shape not in SHAPES:
        raise ArgumentError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    base = {**SHAPES[shape], "rms_eps": 1e-5, "rope_theta": 10000.0}
    arch = architecture_defaults(overrides.get("architecture", "llama"), overrides.get("dim", base["dim"]))
    return ModelConfig(**{**base, **arch, **overrides})


def _word(i: int) -> str:
    """The i-th made-up word: 'ba', 'ca', ... in base 26, two letters or more."""
    letters = ""
    i += 26
    while i:
        i, r = divmod(i, 26)
        letters += chr(97 + r)
    return letters


def byte_tokenizer(vocab_size: int) -> Tokenizer:
    """A SentencePiece tokenizer with no merges: <unk> <s> </s>, the 256 byte pieces, U+2581 and
    printable ASCII, padded to ``vocab_size`` with made-up words (which decode to text but are
    never produced by encoding). Any text encodes."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb  # protobuf: only when a vocabulary is built

    proto = pb.ModelProto()
    S = pb.ModelProto.SentencePiece
    for piece, t in (("<unk>", S.UNKNOWN), ("<s>", S.CONTROL), ("</s>", S.CONTROL)):
        proto.pieces.add(piece=piece, score=0.0, type=t)
    for b in range(256):
        proto.pieces.add(piece=f"<0x{b:02X}>", score=0.0, type=S.BYTE)
    for i, ch in enumerate(["\u2581"] + [chr(c) for c in range(33, 127)]):
        proto.pieces.add(piece=ch, score=-float(i), type=S.NORMAL)
    if len(proto.pieces) > vocab_size:
        raise ArgumentError(f"vocab_size {vocab_size} is too small for a byte tokenizer ({len(proto.pieces)} pieces)")
    # the rest are made-up words, so that a random model's tokens print as (gibberish) text
    for i in range(vocab_size - len(proto.pieces)):
        proto.pieces.add(piece="\u2581" + _word(i), score=-100.0 - i, type=S.NORMAL)
    ts = proto.trainer_spec
    ts.model_type, ts.vocab_size, ts.byte_fallback = pb.TrainerSpec.BPE, vocab_size, True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = proto.normalizer_spec
    ns.name, ns.add_dummy_prefix, ns.remove_extra_whitespaces, ns.escape_whitespaces = "identity", True, False, True
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    return Tokenizer(sp, source=f"byte tokenizer ({vocab_size})")


@functools.lru_cache(maxsize=1)
def _pool(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(_POOL_SIZE, dtype=np.float32) * np.float32(0.02)


class RandomTensors(Mapping):
    """GGUF name -> float32 tensor, made when asked for (norms are ones)."""

    def __init__(self, config: ModelConfig, seed: int = 0):
        self.seed = int(seed)
        self.shapes = {n: expected_shapes(config)[n] for n in tensor_names(config)}

    def shape_of(self, name: str) -> tuple:
        return self.shapes[name]

    def __getitem__(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        if len(shape) == 1 and name.endswith(("attn_norm.weight", "ffn_norm.weight", "output_norm.weight")):
            return np.ones(shape, np.float32)
        pool = _pool(self.seed)
        n = int(np.prod(shape))
        off = int(np.random.default_rng([self.seed, zlib.crc32(name.encode())]).integers(0, pool.size // 2))
        src = pool[off:]
        w = (src[:n] if n <= src.size else np.resize(src, n)).reshape(shape)
        if len(shape) == 1:  # biases N(0, 0.1); q/k and post norms N(1, 0.1)
            w = w * np.float32(5) + np.float32(0 if name.endswith(".bias") else 1)
        return w

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def random_checkpoint(shape: str = "tiny", qtype: str = "q4_0", seed: int = 0, tokenizer: Tokenizer | None = None,
                      lazy: bool = False, **overrides) -> Checkpoint:
    """A random-weight checkpoint of a named shape (config fields may be overridden).

    ``tokenizer``: the vocabulary to use (its size sets ``vocab_size``); default a byte tokenizer.
    ``lazy``: tensors are float32 made on access (for writing a file of any type with one tensor
    in memory); otherwise 2-D weights are quantized to ``qtype`` (F16 where rows are not whole
    blocks, as llama.cpp falls back).
    """
    if tokenizer is not None:
        overrides.setdefault("vocab_size", tokenizer.vocab_size)
    config = random_config(shape, **overrides)
    tok = tokenizer or byte_tokenizer(config.vocab_size)
    floats = RandomTensors(config, seed)
    if lazy:
        tensors = floats
    else:
        qtype_info(qtype)
        tensors = {}
        for name, shape_ in floats.shapes.items():
            w = floats[name]
            if len(shape_) == 1:
                tensors[name] = w
            else:
                q = qtype if shape_[1] % qtype_info(qtype).block_size == 0 else "f16"
                tensors[name] = quantize(w, q)
    return Checkpoint(config, tensors, tok, None, f"random-{shape}-{'f32' if lazy else qtype}-seed{seed}")
