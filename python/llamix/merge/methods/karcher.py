"""karcher: the Karcher (Riemannian) mean of the models' directions on the unit sphere, scaled by
their mean norm.

https://arxiv.org/abs/2603.04972 (mergekit's reference for its "Karcher Mean" method)

Per tensor, every input counts (a base is just another input), each with weight 1/N: units
u_i = x_i / |x_i|; start from the normalized mean of the units; repeat up to max_iter times: step
along the geodesic by the weighted mean of the log maps sum_i w_i theta_i / sin(theta_i)
(u_i - cos(theta_i) m) (units within tol of m skipped), renormalize, stop once that step's norm is
below tol; out = (sum_i |x_i| / N) m. Inputs whose norm is below tol are left out of the mean.
The norms (of the inputs, and of the mean each iteration) are torch's float32 norms of mergekit's
float32 vectors, reproduced: on large tensors their rounding (~1e-4 relative in the square at a
few million elements) keeps the tangent above tol, so mergekit runs all max_iter iterations, and
so does this. The dots with the mean and the tangent's norm come from the inputs' Gram matrix
G_ij = <x_i, x_j> (accurate double sums, one pass with the norms): the mean is tracked as
coefficients a over the units (renormalized by the reproduced norms), so <m, u_i> = (Gu a)_i and
|tangent| = sqrt(b^T Gu b), Gu = G / (|x_i| |x_j|); mergekit takes them from its float32 vectors
(its dots with torch.dot, an MKL call whose order depends on its threads). One pass per iteration
then forms the new (not yet renormalized) mean from the inputs as they are stored (bf16 / f16 /
f32, in memory), m_i = sum_p float(c_p / |x_p|) x_p[i] (kernels weighted_sum: one fused
multiply-add per input), and feeds it to the torch-order norm: a read-only pass of 6 bytes per
element for three bf16 inputs, no tensor-sized buffer; the last pass writes (m_i / |m|) * scale.
The mean's elements are rounded once per pass where mergekit rounds its float32 mean through every
step (docs/MERGING.md gives the measured distance).
"""
from __future__ import annotations

from .. import kernels
from ..params import Param
from .base import MergeMethod, TensorJob


class Karcher(MergeMethod):
    def merge(self, job: TensorJob):
        return kernels.karcher(job.inputs, max_iter=job.params["max_iter"], tol=job.params["tol"], out=job.out,
                               work=job.work, buffer=job.buffer)


KARCHER = Karcher(
    name="karcher", paper="https://arxiv.org/abs/2603.04972",
    parameters=(Param("max_iter", int, default=10), Param("tol", float, default=1e-5)),
)
