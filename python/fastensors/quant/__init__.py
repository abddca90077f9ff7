"""Quantization: the tensor kernels (GGML blocks, int8/int4/int2, NF4, FP8),
whole-model ``quantize_model`` / ``dequantize_model``, quality reports, and
the output layouts (compressed-tensors, GGUF, Parquet)."""

from .dequantize_model import dequantize_model
from .kernels import GGML_SCHEMES, INT_SCHEMES, KQUANT_SCHEMES, SCHEMES, QuantizedTensor, dequantize, kernel_isa, quality, quantize
from .quantize_model import quantize_model
from .report import QuantizationReport, TensorReport

__all__ = ["QuantizedTensor", "quantize", "dequantize", "quality", "kernel_isa", "SCHEMES", "GGML_SCHEMES", "KQUANT_SCHEMES",
           "INT_SCHEMES", "quantize_model", "dequantize_model", "QuantizationReport", "TensorReport"]
