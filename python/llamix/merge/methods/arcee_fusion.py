"""arcee_fusion: keep the other model's changes only where they matter most.

Arcee's Fusion, https://arcee.ai (mergekit's reference)

Per tensor, with base b and the other model x: for each row (the last axis; a 1-D tensor is one
row) the KL divergence of softmax(x) + 1e-8 from softmax(b) + 1e-8; importance = |x - b| * KL of the
row; threshold = median + 1.5 (q3 - q1) of the importance (its values at ranks floor(q (n - 1)),
found by radix selection); out = b + (x - b) [importance >= threshold].
mergekit estimates the quartiles of tensors above 10^6 elements from 10^6 random samples; llamix
uses the exact ones at every size. The KL divergence of two nearby softmaxes is a small difference
of large terms: llamix sums it in double from float32 terms (exp and log within 2 ulps); mergekit's
float32 softmax and sum leave it several percent off, which moves entries near the threshold.
"""
from __future__ import annotations

from .. import kernels
from .base import MergeMethod, TensorJob


class ArceeFusion(MergeMethod):
    def merge(self, job: TensorJob):
        other = job.non_base[0]
        n = 1
        for s in job.shape:
            n *= s
        rows = n // job.shape[-1] if job.shape and job.shape[-1] else 1
        return kernels.arcee_fusion(job.base, job.inputs[other], rows=rows, out=job.out, work=job.work,
                                    buffer=job.buffer)


ARCEE_FUSION = ArceeFusion(name="arcee_fusion", paper="https://arcee.ai", base="required", min_inputs=2, max_inputs=2)
