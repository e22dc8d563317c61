"""ram and ramplus_tl: Reinforced Agent Merging, tensor-local.

Reinforced Agent Merging (RAM), https://arxiv.org/abs/2601.13572

Per tensor, task vectors d_i = x_i - base; an entry of d_i counts as changed when |d_i| > epsilon;
c = how many models changed it. Entries changed by one model are kept whole; entries changed by
several are averaged over those models (unchanged ones add 0):
out = base + sum_i (d_i [c == 1] lambda_i + d_i [c > 1] / c), with d_i zeroed where unchanged.
ram: lambda_i = 1. ramplus_tl: per model, rho_i = (its shared entries) / max(its unique entries,
epsilon) over the tensor and lambda_i = 1 + r clamp(rho_i, 0, alpha): a model whose changes
overlap the others' a lot gets its unique changes scaled up. One C++ pass (two for ramplus_tl).
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


@dataclass(frozen=True)
class Ram(MergeMethod):
    plus: bool = False

    def merge(self, job: TensorJob):
        p = job.params
        return kernels.ram(job.base, [job.inputs[i] for i in job.non_base], eps=p["epsilon"], plus=self.plus,
                           r=p.get("r", 0.1), alpha=p.get("alpha", 0.2), out=job.out, work=job.work,
                           buffer=job.buffer)


RAM = Ram(name="ram", paper="https://arxiv.org/abs/2601.13572",
          parameters=(Param("epsilon", float, default=1e-5),), base="required")
RAMPLUS_TL = Ram(name="ramplus_tl", paper="https://arxiv.org/abs/2601.13572",
                 parameters=(Param("r", float, default=0.1), Param("alpha", float, default=0.2),
                             Param("epsilon", float, default=1e-5)),
                 base="required", plus=True)
