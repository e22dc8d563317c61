"""Writing models: quantize/export to GGUF (llama-quantize's type rules) and merge straight to GGUF.

The names are imported on first use (PEP 562), as in ``llamix/__init__.py``: ``llamix merge`` needs
only ``FILE_TYPES`` (type_rules) for its flags unless its output is a GGUF file, and should not pay
for the quantizer and GGUF writer at start-up."""
from __future__ import annotations

import importlib

_LAZY = {"FILE_TYPES": ".type_rules", "ExportReport": ".gguf", "export_gguf": ".gguf", "tensor_type": ".gguf",
         "merge_to_gguf": ".merge_gguf"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["ExportReport", "FILE_TYPES", "export_gguf", "merge_to_gguf", "tensor_type"]
