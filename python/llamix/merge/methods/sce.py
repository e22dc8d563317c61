"""sce: Select (the entries whose task vectors vary most across models), Calculate (a weight per
model from its mean square), Erase (entries whose sign disagrees with the elected one).

Wan et al. 2024, "FuseChat: knowledge fusion of chat models" (SCE), https://arxiv.org/abs/2408.07990

Per tensor, task vectors d_i = x_i - base. With select_topk < 1, keep only the
k = int(nonzero(var) * select_topk) entries whose variance across the models is largest (equal
variances: the later entries are kept; radix selection, no sort). Weights w_i = mean(d_i^2)
normalized to sum 1 (1 / N each when they sum to < 1e-6). Sign election by summed mass; an entry
contributes d_i w_i where its sign agrees; out = base + sum / max(sum of agreeing w_i, 1e-6).
The mean squares are torch's float32 sums, reproduced (drivers/merge_torch_order.h).
"""
from __future__ import annotations

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class Sce(MergeMethod):
    def merge(self, job: TensorJob):
        return kernels.sce(job.base, [job.inputs[i] for i in job.non_base], job.params["select_topk"], out=job.out,
                           work=job.work, buffer=job.buffer)


SCE = Sce(
    name="sce", paper="https://arxiv.org/abs/2408.07990",
    parameters=(Param("int8_mask", bool, default=False),  # a memory option in mergekit; no effect on results
                Param("select_topk", float, default=1.0)),
    base="required",
)
