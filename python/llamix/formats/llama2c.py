"""llama2.c checkpoints (https://github.com/karpathy/llama2.c, ``run.c`` and ``export.py``).

Two float32 layouts are read, memory-mapped:

- legacy (version 0): 7 int32 ``dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
  seq_len`` (a negative vocab_size means a separate classifier), then token_embedding,
  rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real, freq_cis_imag
  (unused), then wcls when not shared.
- version 1: magic ``0x616b3432`` ("ak42"), int32 version 1, the 7 ints, a shared-classifier
  byte, padding to 256 bytes; then rms_att, rms_ffn, rms_final, token_embedding, wq, wk, wv, wo,
  w1, w2, w3, and wcls when not shared.

Weights are (out, in) matrices, and q/k rows are in Meta's order (RoPE on adjacent pairs), the
same convention as GGUF. Tensors are exposed under GGUF names.
"""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import FormatError
from .mapped import map_whole_file

MAGIC = 0x616B3432
V1_HEADER = 256  # version 1: magic, version, 7 ints, the shared-classifier byte, padding


class Llama2cError(FormatError):
    """A llama2.c checkpoint is truncated, corrupt or of an unsupported version."""


class Llama2cCheckpoint:
    """``.config`` (dict of the header ints) and ``.tensors`` (GGUF name -> float32 view)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._mmap, size = map_whole_file(self.path, 28, Llama2cError, "for a llama2.c header")
        (magic,) = struct.unpack_from("<I", self._mmap, 0)
        if magic == MAGIC:
            if size < V1_HEADER:
                raise Llama2cError(f"{self.path}: truncated: a llama2.c version 1 header is {V1_HEADER} bytes, the "
                                   f"file has {size}")
            (version,) = struct.unpack_from("<i", self._mmap, 4)
            if version != 1:
                raise Llama2cError(f"{self.path}: llama2.c version {version} is not supported (only the float32 "
                                   "legacy and version 1 formats; version 2 is llama2.c's own int8 format)")
            dims = struct.unpack_from("<7i", self._mmap, 8)
            shared = bool(self._mmap[36])
            offset, legacy = 256, False
        else:
            dims = struct.unpack_from("<7i", self._mmap, 0)
            shared = dims[5] > 0
            dims = dims[:5] + (abs(dims[5]),) + dims[6:]
            offset, legacy = 28, True
        dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = dims
        if min(dims) <= 0 or dim % n_heads or n_heads % n_kv_heads or dim > 1 << 16 or n_layers > 1024:
            raise Llama2cError(f"{self.path}: neither a GGUF file (no GGUF magic) nor a llama2.c checkpoint (implausible "
                              f"header {dict(zip(_FIELDS, dims))})")
        self.config = dict(zip(_FIELDS, dims))
        self.config["shared_classifier"] = shared
        hd = dim // n_heads
        kv_dim = n_kv_heads * hd
        L = n_layers
        shapes = {
            "token_embd": (vocab, dim), "attn_norm": (L, dim), "attn_q": (L, dim, dim), "attn_k": (L, kv_dim, dim),
            "attn_v": (L, kv_dim, dim), "attn_output": (L, dim, dim), "ffn_norm": (L, dim),
            "ffn_gate": (L, hidden, dim), "ffn_down": (L, dim, hidden), "ffn_up": (L, hidden, dim),
            "output_norm": (dim,), "freq_cis": (2, seq_len, hd // 2), "output": (vocab, dim),
        }
        if legacy:
            order = ["token_embd", "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                     "ffn_gate", "ffn_down", "ffn_up", "output_norm", "freq_cis"]
        else:
            order = ["attn_norm", "ffn_norm", "output_norm", "token_embd", "attn_q", "attn_k", "attn_v",
                     "attn_output", "ffn_gate", "ffn_down", "ffn_up"]
        if not shared:
            order.append("output")
        arrays = {}
        for name in order:
            n = math.prod(shapes[name])
            if offset + 4 * n > size:
                raise Llama2cError(f"{self.path}: truncated: {name} {list(shapes[name])} needs bytes up to "
                                   f"{offset + 4 * n}, the file has {size}")
            arrays[name] = np.frombuffer(self._mmap, dtype="<f4", count=n, offset=offset).reshape(shapes[name])
            offset += 4 * n
        if offset != size:
            raise Llama2cError(f"{self.path}: {size - offset} unexpected trailing bytes (wrong header or format)")
        self.tensors: dict[str, np.ndarray] = {
            "token_embd.weight": arrays["token_embd"], "output_norm.weight": arrays["output_norm"]}
        if not shared:
            self.tensors["output.weight"] = arrays["output"]
        for i in range(L):
            for name in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                         "ffn_gate", "ffn_down", "ffn_up"):
                self.tensors[f"blk.{i}.{name}.weight"] = arrays[name][i]


_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
