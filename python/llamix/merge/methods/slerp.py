"""slerp: spherical linear interpolation between the base (t = 0) and one other model.

Shoemake 1985, "Animating rotation with quaternion curves", SIGGRAPH '85.

Per whole tensor: norms n0, n1 (a norm <= 1e-8 is replaced by 1), d = clamp(<v0/n0, v1/n1>, -1, 1);
if |d| > 0.9995 plain interpolation (1 - t) v0 + t v1, else
sin((1 - t) theta) / sin(theta) v0 + sin(t theta) / sin(theta) v1 with theta = acos d.
"""
from __future__ import annotations

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class Slerp(MergeMethod):
    def merge(self, job: TensorJob):
        other = job.non_base[0]
        return kernels.slerp(job.base, job.inputs[other], job.params["t"], out=job.out, work=job.work,
                             buffer=job.buffer)


SLERP = Slerp(
    name="slerp", paper="https://en.wikipedia.org/wiki/Slerp (Shoemake 1985)",
    parameters=(Param("t", float, required=True),),
    base="required", min_inputs=2, max_inputs=2,
)
