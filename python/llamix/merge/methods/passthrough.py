"""passthrough: copy one input per output tensor (optionally times `scale`); with `slices` this
stacks layer ranges of several models ("frankenmerges", e.g. SOLAR's depth up-scaling:
Kim et al. 2023, https://arxiv.org/abs/2312.15166)."""
from __future__ import annotations

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class Passthrough(MergeMethod):
    def merge(self, job: TensorJob):
        s = job.input_params[0].get("scale")
        return kernels.scale(job.inputs[0], 1.0 if s is None else s, out=job.out, work=job.work,
                             buffer=job.buffer)


PASSTHROUGH = Passthrough(
    name="passthrough", paper="https://arxiv.org/abs/2312.15166",
    parameters=(Param("scale", float, "input", default=None),),
    min_inputs=1, max_inputs=1,
)
