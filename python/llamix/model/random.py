"""Random-weight LLaMA models of named shapes, made without any download: for benchmarks
(``llamix bench --shape``) and for trying the pipeline (``llamix generate --random``).

The weights are N(0, 0.02) (norms 1), drawn once into a pool and sliced at random offsets, so a
1B model is made in seconds; the text they produce is meaningless by construction.
"""
from __future__ import annotations

import numpy as np

from ..quant import QuantizedTensor, quantize
from ..quant.qtypes import qtype_info
from ..tokenizer import Tokenizer
from .config import ModelConfig
from .gguf_file import LazyTensor
from .weights import Checkpoint, expected_shapes, tensor_names

SHAPES: dict[str, dict] = {
    # a few MB; runs anywhere in a blink
    "tiny": dict(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, hidden_dim=768, vocab_size=354, context_length=2048),
    # TinyLlama-1.1B
    "1b": dict(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, hidden_dim=5632, vocab_size=32000, context_length=2048),
    # LLaMA-2-7B
    "7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, hidden_dim=11008, vocab_size=32000, context_length=4096),
}


def shape_config(shape: str) -> ModelConfig:
    try:
        return ModelConfig(**SHAPES[shape], rms_eps=1e-5, rope_theta=10000.0)
    except KeyError:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}") from None


def byte_tokenizer(vocab_size: int) -> Tokenizer:
    """A SentencePiece tokenizer with no merges: <unk> <s> </s>, the 256 byte pieces, U+2581 and
    printable ASCII, padded with unused pieces to ``vocab_size``. Any text encodes."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    S = pb.ModelProto.SentencePiece
    for piece, t in (("<unk>", S.UNKNOWN), ("<s>", S.CONTROL), ("</s>", S.CONTROL)):
        proto.pieces.add(piece=piece, score=0.0, type=t)
    for b in range(256):
        proto.pieces.add(piece=f"<0x{b:02X}>", score=0.0, type=S.BYTE)
    for i, ch in enumerate(["\u2581"] + [chr(c) for c in range(33, 127)]):
        proto.pieces.add(piece=ch, score=-float(i), type=S.NORMAL)
    if len(proto.pieces) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte tokenizer ({len(proto.pieces)} pieces)")
    while len(proto.pieces) < vocab_size:
        proto.pieces.add(piece=f"<unused{len(proto.pieces)}>", score=0.0, type=S.UNUSED)
    ts = proto.trainer_spec
    ts.model_type, ts.vocab_size, ts.byte_fallback = pb.TrainerSpec.BPE, vocab_size, True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = proto.normalizer_spec
    ns.name, ns.add_dummy_prefix, ns.remove_extra_whitespaces, ns.escape_whitespaces = "identity", True, False, True
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    return Tokenizer(sp, source=f"byte tokenizer ({vocab_size})")


class _Pool:
    def __init__(self, seed: int, size: int = 1 << 24):
        self.rng = np.random.default_rng(seed)
        self.pool = (self.rng.standard_normal(size, dtype=np.float32) * np.float32(0.02))

    def matrix(self, rows: int, k: int) -> np.ndarray:
        n = rows * k
        off = int(self.rng.integers(0, self.pool.size // 2))
        src = self.pool[off:]
        out = src[:n] if n <= src.size else np.resize(src, n)
        return out.reshape(rows, k)


def random_tensors(config: ModelConfig, quant: str = "q4_0", seed: int = 0, lazy: bool = False) -> dict:
    """GGUF name -> QuantizedTensor (or LazyTensor when ``lazy``) / float32 norms."""
    pool = _Pool(seed)
    shapes = expected_shapes(config)
    out = {}
    for name in tensor_names(config):
        shape = shapes[name]
        if len(shape) == 1:
            out[name] = np.ones(shape, dtype=np.float32)
            continue
        qt = quant if shape[1] % qtype_info(quant).block_size == 0 else "f16"

        def make(shape=shape, qt=qt) -> QuantizedTensor:
            return quantize(pool.matrix(*shape), qt)

        out[name] = LazyTensor(qt, shape, make) if lazy else make()
    return out


def random_checkpoint(shape: str, quant: str = "q4_0", seed: int = 0, tokenizer: Tokenizer | None = None) -> Checkpoint:
    config = shape_config(shape)
    tok = tokenizer or byte_tokenizer(config.vocab_size)
    return Checkpoint(config, random_tensors(config, quant, seed), tok, None, f"random-{shape}-{quant}")
