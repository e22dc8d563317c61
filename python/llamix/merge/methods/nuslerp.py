"""nuslerp: SLERP between two models weighted like a linear merge, optionally of their task
vectors over a base (mergekit's "NuSLERP").

Based on Shoemake 1985 (SLERP); mergekit's formulation: t = w2 / (w1 + w2) (0.5 when the weights
sum to ~0). With a base, out = base + slerp(x1 - base, x2 - base). `nuslerp_flatten` (default
true) treats the tensor as one vector, otherwise each row along the last axis is a vector.
Norms are clamped at 1e-7; plain interpolation only when exactly colinear (1 - cos^2 <= 1e-16).
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..config import ConfigError
from ..params import Param
from .base import MergeMethod, TensorJob


class NuSlerp(MergeMethod):
    def check_params(self, job: TensorJob, where: str) -> None:
        if job.params["nuslerp_row_wise"] and not job.params["nuslerp_flatten"]:
            raise ConfigError(f"parameters.nuslerp_row_wise: column-wise vectors are not supported ({where}); "
                              "use nuslerp_flatten: true (the default) or row-wise: false")

    def merge(self, job: TensorJob):
        a, b = job.non_base
        w = [job.input_params[a]["weight"], job.input_params[b]["weight"]]
        total = sum(w)
        t = 0.5 if abs(total) < 1e-6 else w[1] / total
        rows = 1
        if not job.params["nuslerp_flatten"] and len(job.shape) >= 1 and job.shape[-1] > 0:
            rows = int(np.prod(job.shape)) // job.shape[-1]
        base = job.base if job.base_index is not None else None
        return kernels.nuslerp(job.inputs[a], job.inputs[b], t, base=base, rows=rows, out=job.out, work=job.work,
                               buffer=job.buffer)


NUSLERP = NuSlerp(
    name="nuslerp", paper="https://en.wikipedia.org/wiki/Slerp (Shoemake 1985); mergekit NuSLERP",
    parameters=(Param("weight", float, "non_base", required=True), Param("nuslerp_row_wise", bool, default=False),
                Param("nuslerp_flatten", bool, default=True)),
    base="optional", min_non_base=2, max_non_base=2,
)
