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
then does mergekit's float32 element-wise steps (units, pending renormalization, tangent, step)
and the torch-order norm of the new mean; the running mean is the one tensor-sized buffer.
That pass reads the inputs where they are stored (bf16 / f16 / f32, in memory) and forms the units
in registers (kernels karcher_step): per element 6 bytes of bf16 inputs and the mean's 4 read and 4
written, no float32 copies of the units. A unit x / |x| of a bf16 / f16 input is computed without
the divider where that gives the division's bits: q = x r (r = 1 / |x| rounded), then
q - (q |x| - x) r, two fused steps; karcher_recip checks it against x / |x| for all 65536 values of
the type (per input of tensors of >= 65536 elements) and the kernel divides any 8 or 16 elements whose units
fall outside [2^-100, 2^100] (zeros included), so the bits stay the scalar reference's. The two
other divisions per element (the pending renormalization, tangent / |tangent|) have float32
numerators and stay divisions: on Zen 3, perf puts most of the pass's samples on waits for them.
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
