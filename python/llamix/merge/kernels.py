"""Thin typed wrappers over the C++ merge drivers (one output tensor per call).

Tensors are numpy arrays: float32, float16, or bfloat16 as uint16 bit patterns (numpy has no
bfloat16). Each argument may be an array (uint16 means bfloat16), a TensorRef (read from its file
chunk by chunk), or either as ``(tensor, dtype)``.
``out`` and ``work`` are dtype names; ``work`` rounds inputs first (mergekit's ``dtype``).
``buffer``: an optional reusable output array (the output's size and dtype), returned filled.
linear, slerp, nuslerp, task_vectors, model_stock and multislerp also take a FileTarget there: the
output's bytes are written to that file at that offset by the threads computing them (nothing is
returned).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._runtime import _C
from ..formats.safetensors import TensorRef

# dtype name -> GGUF type id used by the kernels
TYPE_IDS = {"float32": 0, "float16": 1, "bfloat16": 30}
ALIASES = {"f32": "float32", "fp32": "float32", "float": "float32", "f16": "float16", "fp16": "float16",
           "half": "float16", "bf16": "bfloat16"}
NUMPY = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}


class FileTarget(NamedTuple):
    """Where a merged tensor's bytes go in an output file: a descriptor open for writing and the
    byte offset of the tensor's first element (its size and dtype are the merge's output)."""
    fd: int
    offset: int


def dtype_name(name: str) -> str:
    """Canonical dtype name (float32 / float16 / bfloat16) for a name or alias."""
    n = ALIASES.get(str(name).lower(), str(name).lower())
    if n not in TYPE_IDS:
        raise ValueError(f"unsupported dtype {name!r} (expected float32, float16 or bfloat16)")
    return n


def _typed(x) -> tuple[object, int]:
    """(what the C++ driver reads, type id): an array, or a TensorRef as (fd, offset, shape)."""
    if isinstance(x, tuple):
        arr, name = x
        return _readable(arr), TYPE_IDS[dtype_name(name)]
    dt = x.dtype if isinstance(x, TensorRef) else np.asarray(x).dtype
    if dt == np.float32:
        return _readable(x), 0
    if dt == np.float16:
        return _readable(x), 1
    if dt == np.uint16:
        return _readable(x), 30
    raise ValueError(f"merge inputs must be float32, float16 or bfloat16 (uint16), got {dt}")


def _readable(x):
    return (x.fd, x.offset, list(x.shape)) if isinstance(x, TensorRef) else np.asarray(x)


def _ids(out: str, work: str) -> tuple[int, int]:
    return TYPE_IDS[dtype_name(out)], TYPE_IDS[dtype_name(work)]


def linear(xs, weights, normalize=True, out="float32", work="float32", buffer=None) -> np.ndarray:
    arrs, types = zip(*(_typed(x) for x in xs))
    return _C.merge_linear(list(arrs), list(types), [float(w) for w in weights], bool(normalize), *_ids(out, work), buffer)


def slerp(v0, v1, t, out="float32", work="float32", buffer=None) -> np.ndarray:
    (a, ta), (b, tb) = _typed(v0), _typed(v1)
    return _C.merge_slerp(a, ta, b, tb, float(t), *_ids(out, work), buffer)


def nuslerp(x0, x1, t, base=None, rows=1, out="float32", work="float32", buffer=None) -> np.ndarray:
    (a, ta), (b, tb) = _typed(x0), _typed(x1)
    bs, tbs = _typed(base) if base is not None else (None, 0)
    return _C.merge_nuslerp(a, ta, b, tb, bs, tbs, float(t), int(rows), *_ids(out, work), buffer)


# Sparsifier kinds understood by the kernel
NONE, RANK, RANDOM, DELLA = 0, 1, 2, 3
CONSENSUS = {None: 0, "none": 0, "sum": 1, "count": 2}


def sparsifier(kind=NONE, r0=0, r1=0, density=1.0, epsilon=0.0, weight=1.0) -> tuple:
    """(kind, r0, r1, density, epsilon, weight): RANK keeps ranks [r0, r1) of |delta| ascending
    (ties by index), RANDOM keeps with probability density, DELLA ranks within rows."""
    return (int(kind), int(r0), int(r1), float(density), float(epsilon), float(weight))


def task_vectors(base, xs, sparsify, consensus=None, rescale=False, normalize=False, lambda_=1.0, seed=0,
                 name="", rows=1, out="float32", work="float32", buffer=None) -> np.ndarray:
    b, tb = _typed(base)
    arrs, types = zip(*(_typed(x) for x in xs))
    return _C.merge_task_vectors(b, tb, list(arrs), list(types), list(sparsify), CONSENSUS[consensus], bool(rescale),
                                 bool(normalize), float(lambda_), int(seed), str(name), int(rows), *_ids(out, work),
                                 buffer)


def model_stock(base, xs, rows=1, out="float32", work="float32", buffer=None) -> np.ndarray:
    b, tb = _typed(base)
    arrs, types = zip(*(_typed(x) for x in xs))
    return _C.merge_model_stock(b, tb, list(arrs), list(types), int(rows), *_ids(out, work), buffer)


def nearswap(base, x, t, out="float32", work="float32", buffer=None) -> np.ndarray:
    (b, tb), (a, ta) = _typed(base), _typed(x)
    return _C.merge_nearswap(b, tb, a, ta, float(t), *_ids(out, work), buffer)


def ram(base, xs, eps=1e-5, plus=False, r=0.1, alpha=0.2, out="float32", work="float32", buffer=None) -> np.ndarray:
    """RAM (plus=False) or RAM+ tensor-local over the task vectors of xs (may be empty: the base)."""
    b, tb = _typed(base)
    arrs, types = zip(*(_typed(x) for x in xs)) if xs else ((), ())
    return _C.merge_ram(b, tb, list(arrs), list(types), float(eps), bool(plus), float(r), float(alpha),
                        *_ids(out, work), buffer)


def sce(base, xs, select_topk=1.0, out="float32", work="float32", buffer=None) -> np.ndarray:
    b, tb = _typed(base)
    arrs, types = zip(*(_typed(x) for x in xs)) if xs else ((), ())
    return _C.merge_sce(b, tb, list(arrs), list(types), float(select_topk), *_ids(out, work), buffer)


def multislerp(xs, weights, base=None, normalize=True, eps=1e-8, out="float32", work="float32",
               buffer=None) -> np.ndarray:
    arrs, types = zip(*(_typed(x) for x in xs))
    bs, tbs = _typed(base) if base is not None else (None, 0)
    return _C.merge_multislerp(list(arrs), list(types), bs, tbs, [float(w) for w in weights], bool(normalize),
                               float(eps), *_ids(out, work), buffer)


def karcher(xs, max_iter=10, tol=1e-5, out="float32", work="float32", buffer=None, info=False):
    """The Karcher mean; with info=True also the number of iterations run."""
    arrs, types = zip(*(_typed(x) for x in xs))
    res, iterations = _C.merge_karcher(list(arrs), list(types), int(max_iter), float(tol), *_ids(out, work), buffer)
    return (res, iterations) if info else res


def arcee_fusion(base, x, rows=1, out="float32", work="float32", buffer=None, info=False):
    """Arcee Fusion; rows: the number of rows of the last axis (KL divergence per row). With
    info=True also the importance threshold."""
    (b, tb), (a, ta) = _typed(base), _typed(x)
    res, threshold = _C.merge_arcee_fusion(b, tb, a, ta, int(rows), *_ids(out, work), buffer)
    return (res, threshold) if info else res


def torch_sum(x) -> float:
    """torch's float32 sum of a tensor, in torch's order (the one multislerp and sce use)."""
    a, t = _typed(x)
    return _C.merge_torch_reduce(a, t, False)


def torch_norm(x) -> float:
    """torch's float32 2-norm of a tensor, in torch's order (the one multislerp and karcher use)."""
    a, t = _typed(x)
    return _C.merge_torch_reduce(a, t, True)


def scale(x, s=1.0, out="float32", work="float32", buffer=None) -> np.ndarray:
    a, t = _typed(x)
    return _C.merge_scale(a, t, float(s), *_ids(out, work), buffer)


def sparsify_mask(base, x, sp, seed=0, name="", model_index=0, rows=1, work="float32") -> np.ndarray:
    """The keep mask of one model's sparsifier as a bool array of the tensor's size (flat)."""
    b, tb = _typed(base)
    a, ta = _typed(x)
    bits = _C.merge_sparsify_mask(b, tb, a, ta, sp, int(seed), str(name), int(model_index), int(rows),
                                  TYPE_IDS[dtype_name(work)])
    return np.unpackbits(bits, bitorder="little")[: np.asarray(b).size].astype(bool)
