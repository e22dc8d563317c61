"""Writing models: quantize/export to GGUF (llama-quantize's type rules) and merge straight to GGUF."""
from .gguf import FILE_TYPES, ExportReport, export_gguf, tensor_type
from .merge_gguf import merge_to_gguf

__all__ = ["ExportReport", "FILE_TYPES", "export_gguf", "merge_to_gguf", "tensor_type"]
