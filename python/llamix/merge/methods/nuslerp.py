"""nuslerp: SLERP between two models weighted like a linear merge, optionally of their task
vectors over a base (mergekit's "NuSLERP").

Based on Shoemake 1985 (SLERP); mergekit's formulation: t = w2 / (w1 + w2) (0.5 when the weights
sum to ~0). With a base, out = base + slerp(x1 - base, x2 - base). `nuslerp_flatten` (default
true) treats the tensor as one vector; otherwise each vector runs along the last axis, or along
axis 0 with `nuslerp_row_wise: true` (mergekit swaps axes 0 and -1 first; we do the same on a
copy, so the kernel still sees contiguous rows). Norms are clamped at 1e-7; plain interpolation
only when exactly colinear (1 - cos^2 <= 1e-16).
"""
from __future__ import annotations

import os

import numpy as np

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


def _swap_first_last(x, shape):
    """(array, dtype) with axes 0 and -1 swapped, contiguous: vectors along axis 0 become rows."""
    arr, dtype = x
    return np.ascontiguousarray(np.swapaxes(np.asarray(arr).reshape(shape), 0, -1)), dtype


def _write_at(target: kernels.FileTarget, array: np.ndarray) -> None:
    """The array's bytes into the output file at the target's offset."""
    data = memoryview(np.ascontiguousarray(array)).cast("B")
    done = 0
    while done < len(data):
        done += os.pwrite(target.fd, data[done:], target.offset + done)


class NuSlerp(MergeMethod):
    file_output = True

    def merge(self, job: TensorJob):
        a, b = job.non_base
        w = [job.input_params[a]["weight"], job.input_params[b]["weight"]]
        total = sum(w)
        t = 0.5 if abs(total) < 1e-6 else w[1] / total
        x0, x1 = job.inputs[a], job.inputs[b]
        base = job.base if job.base_index is not None else None
        shape, n = tuple(job.shape), int(np.prod(job.shape))
        if job.params["nuslerp_flatten"] or len(shape) < 1 or n == 0:
            return kernels.nuslerp(x0, x1, t, base=base, rows=1, out=job.out, work=job.work, buffer=job.buffer)
        if not job.params["nuslerp_row_wise"] or len(shape) == 1:  # vectors along the last axis
            return kernels.nuslerp(x0, x1, t, base=base, rows=n // shape[-1], out=job.out, work=job.work,
                                   buffer=job.buffer)
        # vectors along axis 0: swap it with the last axis, merge rows, swap back
        swapped = (shape[-1],) + shape[1:-1] + (shape[0],)
        x0, x1 = _swap_first_last(x0, shape), _swap_first_last(x1, shape)
        if base is not None:
            base = _swap_first_last(base, shape)
        res = kernels.nuslerp(x0, x1, t, base=base, rows=n // shape[0], out=job.out, work=job.work)
        res = np.swapaxes(res.reshape(swapped), 0, -1)
        if isinstance(job.buffer, kernels.FileTarget):
            _write_at(job.buffer, res)
            return None
        if job.buffer is None:
            return np.ascontiguousarray(res)
        job.buffer.reshape(shape)[...] = res
        return job.buffer


NUSLERP = NuSlerp(
    name="nuslerp", paper="https://en.wikipedia.org/wiki/Slerp (Shoemake 1985); mergekit NuSLERP",
    parameters=(Param("weight", float, "non_base", required=True), Param("nuslerp_row_wise", bool, default=False),
                Param("nuslerp_flatten", bool, default=True)),
    base="optional", min_non_base=2, max_non_base=2,
)
