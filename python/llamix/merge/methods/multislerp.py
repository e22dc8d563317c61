"""multislerp: barycentric interpolation of any number of models on the hypersphere.

Goddard, "Multi-SLERP", https://goddard.blog/posts/multislerp-wow-what-a-cool-idea

Per tensor, with the models' tensors (or, with a base, their task vectors) t_i and weights w_i
(divided by their sum when normalize_weights): units u_i = t_i / (|t_i| + eps); the weighted mean
of the units, normalized, is the tangent point m; the weighted tangent vectors u_i - <u_i, m> m are
averaged and mapped back to the sphere (exp map at m); the result is scaled by sum_i w_i |t_i| and
the base added back. One model alone is returned as is; when the weighted units cancel (|mean| < eps)
two models fall back to w_1 t_1 + w_2 t_2, more are an error.
The norms and dots are torch's float32 reductions, reproduced (drivers/merge_torch_order.h): they
set every coefficient, and torch's norm of a large tensor is off by ~1e-5 relative.
"""
from __future__ import annotations

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class MultiSlerp(MergeMethod):
    file_output = True

    def merge(self, job: TensorJob):
        others = job.non_base
        base = job.base if job.base_index is not None else None
        try:
            return kernels.multislerp([job.inputs[i] for i in others], [job.input_params[i]["weight"] for i in others],
                                      base=base, normalize=job.params["normalize_weights"], eps=job.params["eps"],
                                      out=job.out, work=job.work, buffer=job.buffer)
        except ValueError as e:
            raise ValueError(f"tensor {job.name}: {e}") from None


MULTISLERP = MultiSlerp(
    name="multislerp", paper="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
    parameters=(Param("weight", float, "non_base", required=True), Param("normalize_weights", bool, default=True),
                Param("eps", float, default=1e-8)),
    base="optional", min_non_base=1,
)
