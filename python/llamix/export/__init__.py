"""Writing models: quantize/export to GGUF (llama-quantize's type rules) and merge straight to GGUF.

The names are imported on first use (PEP 562), as in ``llamix/__init__.py``: ``llamix merge`` needs
only ``FILE_TYPES`` (type_rules) for its flags unless its output is a GGUF file, and should not pay
for the quantizer and GGUF writer at start-up."""
from __future__ import annotations

from .._lazy import lazy_names

_LAZY = {"FILE_TYPES": ".type_rules", "ExportReport": ".gguf", "export_gguf": ".gguf", "tensor_type": ".gguf",
         "merge_to_gguf": ".merge_gguf"}

__getattr__, __dir__ = lazy_names(__name__, _LAZY)


__all__ = ["ExportReport", "FILE_TYPES", "export_gguf", "merge_to_gguf", "tensor_type"]
