"""model_stock: interpolate between the base and the average of the fine-tunes by a ratio set
from the angle between their task vectors.

Jang et al. 2024, "Model Stock: All we need is just a few fine-tuned models",
https://arxiv.org/abs/2403.19522

Offsets o_i = x_i - base; c = mean over pairs of cos(o_i, o_j) (norm products clamped at 1e-6,
c clamped to [-1, 1]); with N models t = N c / (1 + (N - 1) c) (0 if the denominator is below
1e-6); out = t mean(x_i) + (1 - t) base. `filter_wise`: one t per row instead of per tensor.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class ModelStock(MergeMethod):
    file_output = True

    def merge(self, job: TensorJob):
        rows = 1
        if job.params["filter_wise"] and len(job.shape) >= 2:
            rows = int(np.prod(job.shape)) // job.shape[-1]
        return kernels.model_stock(job.base, [job.inputs[i] for i in job.non_base], rows=rows,
                                   out=job.out, work=job.work, buffer=job.buffer)


MODEL_STOCK = ModelStock(
    name="model_stock", paper="https://arxiv.org/abs/2403.19522",
    parameters=(Param("filter_wise", bool, default=False),),
    base="required", min_inputs=3, min_non_base=2,
)
