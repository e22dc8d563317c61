"""Block formats (GGUF-compatible) and the quantized matmul."""
from .qtypes import QTYPES, QTypeInfo, qtype_info
from .tensor import QuantizedTensor, matmul, quantize

__all__ = ["QTYPES", "QTypeInfo", "QuantizedTensor", "matmul", "qtype_info", "quantize"]
