"""dare_ties and dare_linear: drop task-vector entries at random (keep each with probability
`density`) and rescale the survivors, then combine with or without TIES sign consensus.

Yu et al. 2024, "Language models are Super Mario: absorbing abilities from homologous models as a
free lunch" (DARE), https://arxiv.org/abs/2311.03099

As in mergekit the survivors are rescaled so the tensor's L1 norm is unchanged (the paper divides
by `density`; both preserve the mean in expectation). Masks come from a counter-based hash keyed
by (seed, tensor name, model index, element index): the same for any thread count, ISA or run,
so results match mergekit in distribution, not bit for bit.
"""
from .task_arithmetic import family

DARE_TIES = family("dare_ties", "https://arxiv.org/abs/2311.03099", sparsification="random", consensus="sum",
                   rescale=True)
DARE_LINEAR = family("dare_linear", "https://arxiv.org/abs/2311.03099", sparsification="random", rescale=True)
