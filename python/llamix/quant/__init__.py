"""Block formats (GGUF-compatible) and the quantized matmul."""
from .qtypes import QTYPES, QTypeInfo, qtype_info
from .tensor import QuantizedTensor, matmul, matmul_many, quantize

__all__ = ["QTYPES", "QTypeInfo", "QuantizedTensor", "matmul", "matmul_many", "qtype_info", "quantize"]
