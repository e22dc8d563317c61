"""QuantizedTensor and the public quantize / matmul functions."""
from __future__ import annotations

import numpy as np

from .._runtime import _C
from ..errors import ArgumentError, describe
from .qtypes import QTypeInfo, qtype_info

MAX_DIM = 2**31 - 1  # rows and row length: the kernels index with 32-bit counts per dimension


def check_shape(shape, info: QTypeInfo, what: str = "shape") -> tuple[int, int]:
    """``(rows, k)`` of a matrix of ``info``'s type: two integers in [0, 2**31), k a whole number of
    blocks; ArgumentError naming ``what`` otherwise."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__len__") or len(shape) != 2:
        raise ArgumentError(f"{what} must be (rows, k), two integers, got {describe(shape)}"
                            + (f" {list(shape)}" if isinstance(shape, (list, tuple)) and len(shape) <= 4 else ""))
    out = []
    for name, v in zip(("rows", "k"), shape):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not 0 <= v <= MAX_DIM:
            raise ArgumentError(f"{what}: {name} must be an integer in [0, {MAX_DIM}], got {describe(v)}")
        out.append(int(v))
    rows, k = out
    if k % info.block_size:
        raise ArgumentError(f"{what}: row length {k} is not a multiple of the {info.name} block size {info.block_size}")
    return rows, k


class QuantizedTensor:
    """A (rows, k) matrix stored row by row in a GGUF block format.

    ``data`` is a uint8 array of shape (rows, bytes per row) holding exactly the GGUF bytes.
    """

    __slots__ = ("data", "_info", "shape", "_prepared")

    def __init__(self, data: np.ndarray, qtype: str | QTypeInfo, shape: tuple[int, int]):
        info = qtype_info(qtype)
        rows, k = check_shape(shape, info)
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape != (rows, info.row_bytes(k)):
            raise ArgumentError(
                f"{info.name} data for shape {(rows, k)} must be uint8 of shape {(rows, info.row_bytes(k))}, "
                f"got {data.dtype} {data.shape}")
        self.data = data
        self._info = info
        self.shape = (rows, k)
        self._prepared = None

    @classmethod
    def from_bytes(cls, data, qtype: str, shape: tuple[int, int]) -> "QuantizedTensor":
        """Wrap existing bytes (a buffer, memoryview or uint8 array; e.g. a memory-mapped file) without a copy."""
        info = qtype_info(qtype)
        rows, k = check_shape(shape, info)
        if isinstance(data, np.ndarray):
            if not data.flags.c_contiguous:
                raise ArgumentError(f"data: a {info.name} tensor's bytes must be one C-contiguous buffer "
                                    f"(got an array of strides {data.strides}); no copy is made")
            arr = data.reshape(-1).view(np.uint8)
        else:
            try:
                arr = np.frombuffer(data, dtype=np.uint8)
            except (TypeError, ValueError) as e:
                raise ArgumentError(f"data must be a C-contiguous buffer of bytes, got {describe(data)} ({e})") from None
        expected = rows * info.row_bytes(k)
        if arr.size != expected:
            raise ArgumentError(f"data: a {info.name} tensor of shape {(rows, k)} needs {expected} bytes, got {arr.size}")
        return cls(arr.reshape(rows, info.row_bytes(k)), info, (rows, k))

    @property
    def qtype(self) -> str:
        return self._info.name

    @property
    def info(self) -> QTypeInfo:
        return self._info

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    def prepared(self):
        """The kernels' prepared form of this weight (repacked once on first use, then cached).

        Q4_0 / Q8_0 weights are repacked into 16-row interleaved groups: a second copy the size of
        ``data`` (``.nbytes`` tells), so keeping both resident doubles the RAM of that tensor; pages
        of a memory-mapped source go cold once it is prepared. Float types use ``data`` in place.
        """
        if self._prepared is None:
            self._prepared = _C.PreparedWeight(self.data, self._info.gguf_id, self.shape[1])
        return self._prepared

    def dequantize(self) -> np.ndarray:
        """The float32 (rows, k) matrix these blocks represent."""
        return _C.dequantize_rows(self.data, self._info.gguf_id, self.shape[1])

    def __repr__(self) -> str:
        return f"QuantizedTensor(qtype={self.qtype!r}, shape={self.shape}, nbytes={self.nbytes})"


def _float_source(w: np.ndarray, src: str | None) -> tuple[np.ndarray, int]:
    if src == "bf16":
        if w.dtype not in (np.uint16, np.int16):
            raise ArgumentError(f"bf16 source data must be given as uint16 bit patterns, got {w.dtype}")
        return w, 30
    if w.dtype == np.float32:
        return w, 0
    if w.dtype == np.float16:
        return w, 1
    raise ArgumentError(f"w must be float32 or float16 (or uint16 with src='bf16'), got {w.dtype}")


# Types written by the weighted low-bit quantizers (kernels/quantize_lowbit.h), and the fallback
# types they also write when an importance matrix is given (without one those are ggml's reference).
LOWBIT_TYPES = ("q4_1", "q2_k", "q3_k", "iq4_nl", "iq4_xs", "q4_k", "q5_k", "q6_k")
WEIGHTED_TYPES = LOWBIT_TYPES + ("q4_0", "q5_0", "q5_1")


def check_importance(imatrix, k: int, what: str = "imatrix") -> np.ndarray:
    """A per-column importance vector: float32 (k,), finite and non-negative; ArgumentError otherwise."""
    v = np.asarray(imatrix)
    if v.ndim != 1 or v.shape[0] != k:
        raise ArgumentError(f"{what} must be a vector of {k} values (one per column), got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.floating):
        raise ArgumentError(f"{what} must be floating point, got {v.dtype}")
    v = np.ascontiguousarray(v, dtype=np.float32)
    if not np.all(np.isfinite(v)) or np.any(v < 0):
        raise ArgumentError(f"{what} must be finite and non-negative")
    return v


def quantize(w: np.ndarray, qtype: str, *, src: str | None = None, imatrix: np.ndarray | None = None) -> QuantizedTensor:
    """Quantize a (rows, k) float32/float16 matrix (or bf16 bit patterns with ``src='bf16'``).

    ``qtype`` is one of ``q4_0``, ``q8_0``, ``f16``, ``bf16``, ``f32`` (bytes equal llama.cpp's
    reference quantizer), ``q4_0_mse`` (Q4_0 bytes, each block's scale chosen to minimise the
    squared error), or ``q4_1``, ``q2_k``, ``q3_k``, ``q4_k``, ``q5_k``, ``q6_k``, ``iq4_nl``,
    ``iq4_xs`` (weighted least-squares searches of scales and mins; ``q4_1`` without an
    importance matrix is ggml's reference, byte-identical with ``gguf.quants.quantize``; without
    one ``q4_k q5_k iq4_nl iq4_xs`` weight each element by ``sqrt(sigma2 + w**2)``, as below with
    unit importance, the others equally).
    ``imatrix``: optional float (k,) per-column importance (llama-imatrix's mean squared
    activation); ``q4_1 q2_k q3_k iq4_nl iq4_xs q4_k q5_k q6_k q4_0 q5_0 q5_1`` then minimise
    ``sum_j imatrix[j] * (w[i, j] - dequantized[i, j])**2`` per row; other types ignore it, as
    llama-quantize's do for Q8_0 and the float types. Rows are converted one at a time: no
    float32 copy of a half matrix is made.
    """
    info = qtype_info(qtype)
    w = np.asarray(w)
    if w.ndim == 1:
        w = w.reshape(1, -1)
    if w.ndim != 2:
        raise ArgumentError(f"w must be 2-D (rows, k), got shape {w.shape}")
    w, src_id = _float_source(w, src)
    if not w.flags.c_contiguous:
        w = np.ascontiguousarray(w)
    if w.shape[1] % info.block_size:
        raise ArgumentError(f"row length {w.shape[1]} is not a multiple of the {info.name} block size {info.block_size}")
    if info.name in LOWBIT_TYPES or (imatrix is not None and info.name in WEIGHTED_TYPES):
        imp = None if imatrix is None else check_importance(imatrix, w.shape[1])
        return QuantizedTensor(_C.quantize_rows_lowbit(w, src_id, info.gguf_id, imp), info, w.shape)
    if info.name == "q4_0_mse":  # same bytes as q4_0, scales by error-minimising search
        return QuantizedTensor(_C.quantize_rows_q4_0_mse(w, src_id), "q4_0", w.shape)
    data = _C.quantize_rows(w, src_id, info.gguf_id)
    return QuantizedTensor(data, info, w.shape)


def _as_weight(w) -> tuple[np.ndarray, int, int, int]:
    """(bytes (rows, row_bytes), type id, rows, k) for a QuantizedTensor or a float matrix, no copy."""
    if isinstance(w, QuantizedTensor):
        return w.data, w.info.gguf_id, w.shape[0], w.shape[1]
    w = np.asarray(w)
    if w.ndim != 2:
        raise ArgumentError(f"w must be 2-D (rows, k), got shape {w.shape}")
    if w.dtype == np.float32:
        type_id = 0
    elif w.dtype == np.float16:
        type_id = 1
    else:
        raise ArgumentError(f"w must be a QuantizedTensor or a float32/float16 array, got {w.dtype}")
    if not w.flags.c_contiguous:
        raise ArgumentError("w must be C-contiguous (llamix never copies weights)")
    return w.view(np.uint8), type_id, w.shape[0], w.shape[1]


def matmul(x: np.ndarray, w, out: np.ndarray | None = None) -> np.ndarray:
    """``x @ dequantize(w).T`` in float32: x is float32 (n_tokens, k), w a QuantizedTensor or float (rows, k).

    Block-quantized weights multiply 8-bit-quantized activations (Q8_0, as llama.cpp does) with
    integer dot products; float weights use float32 FMA. ``out``, if given, is a C-contiguous
    float32 array of shape (n_tokens, rows) (or (rows,) for a 1-D x) that receives the result.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ArgumentError(f"x must be float32, got {x.dtype}")
    squeeze = x.ndim == 1
    if squeeze:
        x = x.reshape(1, -1)
    if x.ndim != 2:
        raise ArgumentError(f"x must be 2-D (n_tokens, k), got shape {x.shape}")
    x = np.ascontiguousarray(x)
    out2d = None
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise ArgumentError("out must be a numpy array")
        out2d = out.reshape(1, -1) if (squeeze and out.ndim == 1) else out
    if isinstance(w, QuantizedTensor):
        if x.shape[1] != w.shape[1]:
            raise ArgumentError(f"x has {x.shape[1]} columns but w has rows of {w.shape[1]}")
        y = w.prepared().matmul(x, out2d)
    else:
        data, type_id, rows, k = _as_weight(w)
        if x.shape[1] != k:
            raise ArgumentError(f"x has {x.shape[1]} columns but w has rows of {k}")
        y = _C.matmul(x, data, type_id, k, out2d)
    if out is not None:
        return out
    return y[0] if squeeze else y


def matmul_many(x: np.ndarray, weights, outs=None) -> list:
    """``[matmul(x, w) for w in weights]`` in one call: the activations are quantized once and all
    block-quantized weights share one parallel region (e.g. q/k/v, or gate/up, in a decode step).

    ``weights`` are QuantizedTensors with the same row length; ``outs`` optionally one float32
    (n_tokens, rows) array per weight. Results equal separate ``matmul`` calls bit for bit.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ArgumentError(f"x must be float32, got {x.dtype}")
    if x.ndim != 2:
        raise ArgumentError(f"x must be 2-D (n_tokens, k), got shape {x.shape}")
    weights = list(weights)
    for i, w in enumerate(weights):
        if not isinstance(w, QuantizedTensor):
            raise ArgumentError(f"weights[{i}] must be a QuantizedTensor, got {type(w).__name__}")
    return _C.matmul_many(np.ascontiguousarray(x), [w.prepared() for w in weights], outs)
