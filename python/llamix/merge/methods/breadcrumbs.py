"""breadcrumbs and breadcrumbs_ties: drop both the largest outliers (a `gamma` fraction) and the
smallest entries of each task vector, keeping a `density` fraction.

Davari & Belilovsky 2024, "Model Breadcrumbs: scaling multi-task model merging with sparse
masks", https://arxiv.org/abs/2312.06795

Ranks |d| ascending (equal magnitudes ordered by flat index) and keeps ranks
[n_bot, n_bot + floor(density n)) with n_bot = max(0, n - floor(density n) - floor(gamma n)), by
radix selection (no sort).
"""
from .task_arithmetic import family

BREADCRUMBS = family("breadcrumbs", "https://arxiv.org/abs/2312.06795", sparsification="magnitude_outliers")
BREADCRUMBS_TIES = family("breadcrumbs_ties", "https://arxiv.org/abs/2312.06795",
                          sparsification="magnitude_outliers", consensus="sum")
