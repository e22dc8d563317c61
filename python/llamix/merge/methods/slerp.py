"""slerp: spherical linear interpolation between the base (t = 0) and one other model.

Shoemake 1985, "Animating rotation with quaternion curves", SIGGRAPH '85.

Per whole tensor: norms n0, n1 (a norm <= 1e-8 is replaced by 1), d = clamp(<v0/n0, v1/n1>, -1, 1);
if |d| > 0.9995 plain interpolation (1 - t) v0 + t v1, else
sin((1 - t) theta) / sin(theta) v0 + sin(t theta) / sin(theta) v1 with theta = acos d.

mergekit 0.1.5 as installed is per whole tensor too: its slerp() reshapes to (shape[0], -1) and
computes one coefficient pair per row of that, but axis 0 there is its batch axis of stacked
output tensors (TensorBatch), not a row of the weight. It normalises before the dot and sums in
float32 (norms as the norm of per-2^20-element chunk norms); our sums are accurate, so the
coefficients can differ by float32 rounding of its reductions (see tests/test_merge_peers.py).
"""
from __future__ import annotations

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class Slerp(MergeMethod):
    file_output = True

    def merge(self, job: TensorJob):
        other = job.non_base[0]
        return kernels.slerp(job.base, job.inputs[other], job.params["t"], out=job.out, work=job.work,
                             buffer=job.buffer)


SLERP = Slerp(
    name="slerp", paper="https://en.wikipedia.org/wiki/Slerp (Shoemake 1985)",
    parameters=(Param("t", float, required=True),),
    base="required", min_inputs=2, max_inputs=2,
)
