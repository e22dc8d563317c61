"""Tensor element types: names users write, GGUF type ids, block geometry."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError


@dataclass(frozen=True)
class QTypeInfo:
    name: str        # the name users write: "q4_0"
    gguf_id: int     # ggml_type id in GGUF files
    block_size: int  # elements per block
    block_bytes: int # bytes per block

    def row_bytes(self, k: int) -> int:
        return k // self.block_size * self.block_bytes


QTYPES: dict[str, QTypeInfo] = {
    t.name: t
    for t in [
        QTypeInfo("f32", 0, 1, 4),
        QTypeInfo("f16", 1, 1, 2),
        QTypeInfo("q4_0", 2, 32, 18),
        QTypeInfo("q5_0", 6, 32, 22),  # the K-quant mixes fall back to these
        QTypeInfo("q5_1", 7, 32, 24),
        QTypeInfo("q8_0", 8, 32, 34),
        QTypeInfo("q4_k", 12, 256, 144),
        QTypeInfo("q5_k", 13, 256, 176),
        QTypeInfo("q6_k", 14, 256, 210),
        QTypeInfo("bf16", 30, 1, 2),
        # Q4_0 bytes whose block scales come from an error-minimising search
        QTypeInfo("q4_0_mse", 2, 32, 18),
        # low-bit types people publish (ggml-common.h layouts)
        QTypeInfo("q4_1", 3, 32, 20),
        QTypeInfo("q2_k", 10, 256, 84),
        QTypeInfo("q3_k", 11, 256, 110),
        QTypeInfo("iq4_nl", 20, 32, 18),
        QTypeInfo("iq4_xs", 23, 256, 136),
    ]
}
# Quantizer variants that write another type's bytes (the file says Q4_0, not "q4_0_mse").
VARIANTS: dict[str, str] = {"q4_0_mse": "q4_0"}
BY_GGUF_ID: dict[int, QTypeInfo] = {t.gguf_id: t for t in QTYPES.values() if t.name not in VARIANTS}


def qtype_info(qtype: str | QTypeInfo) -> QTypeInfo:
    """Look up a type by name (case-insensitive); raises ValueError naming the valid ones."""
    if isinstance(qtype, QTypeInfo):
        return qtype
    try:
        return QTYPES[str(qtype).lower()]
    except KeyError:
        raise ArgumentError(f"unknown qtype {qtype!r}; expected one of {', '.join(QTYPES)}") from None
