"""nearswap: take the other model's value where it lies close to the base's, keep the base's where
the two are far apart.

Alchemonaut's NearSwap, https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001

Per element, with a = base and b = the other model: w = clamp(t / max(|a - b|, 1e-6), 0, 1);
out = w b + (1 - w) a. Entries closer than t swap fully to b; farther ones move by t / |a - b|.
mergekit's t / x is torch's reciprocal(x) * t: two roundings, reproduced.
"""
from __future__ import annotations

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class NearSwap(MergeMethod):
    def merge(self, job: TensorJob):
        other = job.non_base[0]
        return kernels.nearswap(job.base, job.inputs[other], job.params["t"], out=job.out, work=job.work,
                                buffer=job.buffer)


NEARSWAP = NearSwap(
    name="nearswap", paper="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
    parameters=(Param("t", float, required=True),),
    base="required", min_inputs=2, max_inputs=2,
)
