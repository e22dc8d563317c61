"""della and della_linear: drop task-vector entries at random with a probability that falls with
their magnitude rank (MAGPRUNE), rescale, then combine with or without sign consensus.

Deep et al. 2024, "DELLA-Merging: reducing interference in model merging through magnitude-based
sampling", https://arxiv.org/abs/2406.11617

Within each row (a 1-D tensor is one row), rank |d| ascending r = 0..L-1 (ties by index) and keep
with probability density - epsilon + 2 epsilon r / (L - 1); density +/- epsilon must be in (0, 1).
"""
from .task_arithmetic import family

DELLA = family("della", "https://arxiv.org/abs/2406.11617", sparsification="della", consensus="sum",
               normalize=True, rescale=True)
DELLA_LINEAR = family("della_linear", "https://arxiv.org/abs/2406.11617", sparsification="della", rescale=True)
