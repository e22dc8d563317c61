"""The merge methods, in an explicit registry (no registration by import side effects)."""
from __future__ import annotations

from ..config import ConfigError
from .arcee_fusion import ARCEE_FUSION
from .base import MergeMethod, TensorJob
from .breadcrumbs import BREADCRUMBS, BREADCRUMBS_TIES
from .dare import DARE_LINEAR, DARE_TIES
from .della import DELLA, DELLA_LINEAR
from .karcher import KARCHER
from .linear import LINEAR
from .model_stock import MODEL_STOCK
from .multislerp import MULTISLERP
from .nearswap import NEARSWAP
from .nuslerp import NUSLERP
from .passthrough import PASSTHROUGH
from .ram import RAM, RAMPLUS_TL
from .sce import SCE
from .slerp import SLERP
from .task_arithmetic import TASK_ARITHMETIC
from .ties import TIES

METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    LINEAR, SLERP, NUSLERP, TASK_ARITHMETIC, TIES, DARE_TIES, DARE_LINEAR, BREADCRUMBS, BREADCRUMBS_TIES,
    DELLA, DELLA_LINEAR, MODEL_STOCK, PASSTHROUGH, SCE, MULTISLERP, KARCHER, NEARSWAP, ARCEE_FUSION, RAM, RAMPLUS_TL)}


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"merge_method: unknown or unsupported method {name!r} "
                          f"(supported: {', '.join(METHODS)})") from None


__all__ = ["METHODS", "MergeMethod", "TensorJob", "get_method"]
