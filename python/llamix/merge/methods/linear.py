"""linear: a weighted average of the inputs ("model soups").

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time", https://arxiv.org/abs/2203.05482

out = sum_i w_i x_i, divided by sum_i w_i when `normalize` (default true). float32 accumulator
from zero, one fused multiply-add per input in input order, one division: mergekit's exact order.
"""
from __future__ import annotations

from .. import kernels
from ..config import ConfigError
from ..params import Param
from .base import MergeMethod, TensorJob


class Linear(MergeMethod):
    file_output = True

    def check_params(self, job: TensorJob, where: str) -> None:
        if job.params["normalize"] and sum(p["weight"] for p in job.input_params) == 0:
            raise ConfigError(f"parameters.weight: the weights of {where} sum to zero; cannot normalize "
                              "(set normalize: false)")

    def merge(self, job: TensorJob):
        return kernels.linear(job.inputs, [p["weight"] for p in job.input_params], job.params["normalize"],
                              out=job.out, work=job.work, buffer=job.buffer)


LINEAR = Linear(
    name="linear", paper="https://arxiv.org/abs/2203.05482",
    parameters=(Param("weight", float, "input", required=True), Param("normalize", bool, default=True)),
)
