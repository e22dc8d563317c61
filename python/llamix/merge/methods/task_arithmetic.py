"""task_arithmetic, and the pipeline shared by TIES, DARE, breadcrumbs and DELLA.

Ilharco et al. 2023, "Editing models with task arithmetic", https://arxiv.org/abs/2212.04089

Per tensor, with base b and task vectors d_i = x_i - b:
1. sparsify each d_i with its own `density` (none here; see ties.py, dare.py, breadcrumbs.py,
   della.py); with `rescale`, kept entries are scaled so the tensor's L1 norm is unchanged;
2. d_i <- w_i d_i;
3. sign consensus (TIES): majority sign by summed mass, keep agreeing entries; divisor per
   element = sum of agreeing weights (0 -> 1); without consensus: plain sum, divisor sum_i w_i;
4. divide by the divisor if `normalize`; multiply by `lambda`; add back to b.
The whole pipeline runs in one C++ call per tensor (drivers/merge_methods.cpp: merge_task_vectors).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import kernels
from ..config import ConfigError
from ..params import Param
from .base import MergeMethod, TensorJob


def topk_ranks(n: int, density: float) -> tuple[int, int]:
    """Magnitude pruning (TIES): keep the k = max(1, floor(density n)) largest |d|, as the
    ascending rank range [n - k, n). Ties at the threshold: later elements (higher flat index)
    rank higher, so they are the ones kept."""
    if density >= 1:
        return 0, n
    if density <= 0 or n == 0:
        return 0, 0
    k = max(1, int(density * n))
    return n - k, n


def outlier_ranks(n: int, density: float, gamma: float) -> tuple[int, int]:
    """Breadcrumbs: drop the gamma n largest and enough of the smallest to keep density n."""
    if density >= 1:
        return 0, n
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    return n_bot, n_bot + target


@dataclass(frozen=True)
class TaskArithmeticFamily(MergeMethod):
    file_output = True

    sparsification: Optional[str] = None  # None, "magnitude", "random", "magnitude_outliers", "della"
    consensus: Optional[str] = None       # None or "sum"

    def check_params(self, job: TensorJob, where: str) -> None:
        if self.sparsification != "della":
            return
        for i in job.non_base:
            p = job.input_params[i]
            d, e = p["density"], p["epsilon"]
            if 0 < d < 1 and not (0 < d - e and d + e < 1):
                raise ConfigError(f"parameters.epsilon: density +/- epsilon must lie in (0, 1) "
                                  f"(density {d}, epsilon {e}) for {where}")

    def sparsifier(self, job: TensorJob, i: int) -> tuple:
        p = job.input_params[i]
        n = 1
        for s in job.shape:
            n *= s
        w, d = p["weight"], p["density"]
        if self.sparsification == "magnitude":
            return kernels.sparsifier(kernels.RANK, *topk_ranks(n, d), weight=w)
        if self.sparsification == "magnitude_outliers":
            return kernels.sparsifier(kernels.RANK, *outlier_ranks(n, d, p["gamma"]), weight=w)
        if self.sparsification == "random":
            return kernels.sparsifier(kernels.RANDOM, density=d, weight=w)
        if self.sparsification == "della":
            return kernels.sparsifier(kernels.DELLA, density=d, epsilon=p["epsilon"], weight=w)
        return kernels.sparsifier(weight=w)

    def merge(self, job: TensorJob):
        if self.sparsification == "della" and len(job.shape) > 2:
            raise ConfigError(f"{self.name}: tensor {job.name} has {len(job.shape)} dimensions; "
                              "DELLA ranks rows of 1-D or 2-D tensors only")
        rows = job.shape[0] if len(job.shape) == 2 else 1
        others = job.non_base
        return kernels.task_vectors(
            job.base, [job.inputs[i] for i in others], [self.sparsifier(job, i) for i in others],
            consensus=self.consensus, rescale=job.params["rescale"], normalize=job.params["normalize"],
            lambda_=job.params["lambda"], seed=job.seed, name=job.name, rows=rows, out=job.out, work=job.work,
            buffer=job.buffer)


def family(name: str, paper: str, sparsification=None, consensus=None, normalize=False, rescale=False):
    params = [Param("int8_mask", bool, default=False),  # a memory option in mergekit; no effect on results
              Param("normalize", bool, default=normalize), Param("rescale", bool, default=rescale),
              Param("lambda", float, default=1.0),
              Param("weight", float, "non_base", required=True),
              Param("density", float, "non_base", default=1.0, lo=0.0, hi=1.0)]
    if sparsification == "magnitude_outliers":
        params.append(Param("gamma", float, "non_base", default=0.01, lo=0.0, hi=1.0))
    if sparsification == "della":
        params.append(Param("epsilon", float, "non_base", default=0.15, lo=0.0, hi=1.0))
    # task vectors are differences from the base: at least one other model is needed
    return TaskArithmeticFamily(name=name, paper=paper, parameters=tuple(params), base="required",
                                sparsification=sparsification, consensus=consensus, min_non_base=1)


TASK_ARITHMETIC = family("task_arithmetic", "https://arxiv.org/abs/2212.04089")
