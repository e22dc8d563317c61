"""ties: trim each task vector to its largest-magnitude entries, elect a sign per element by
summed mass, and average only the agreeing entries.

Yadav et al. 2023, "TIES-Merging: Resolving interference when merging models",
https://arxiv.org/abs/2306.01708

Trimming selects the k = max(1, floor(density n)) largest |d| by radix selection on the float
bits (no sort). Tie rule where magnitudes are equal at the threshold: the elements with the higher
flat index are kept (mergekit's order there comes from an unstable argsort).
"""
from .task_arithmetic import family

TIES = family("ties", "https://arxiv.org/abs/2306.01708", sparsification="magnitude", consensus="sum",
              normalize=True)
