"""GGUF for llama.cpp: export of Hugging Face model directories (architectures,
tensor names and metadata through the ``gguf`` package's tables, tokenizers,
per-tensor type recipes like ``llama-quantize``) and reading GGUF back.
See docs/gguf.md."""

from .archs import HF_ARCHITECTURES, UnknownTensor, UnsupportedArchitecture
from .export import ConfigNotFound, ExportReport, TensorReport, export_gguf, plan_types, recipe_names
from .tokenizer import TokenizerNotFound

__all__ = ["export_gguf", "recipe_names", "plan_types", "ExportReport", "TensorReport", "HF_ARCHITECTURES",
           "UnsupportedArchitecture", "UnknownTensor", "TokenizerNotFound", "ConfigNotFound"]
from .imatrix import ImatrixError, read_imatrix
from .read import GgufModel, GgufTensor, dequantize_gguf, is_export, read_gguf

__all__ += ["read_imatrix", "ImatrixError", "read_gguf", "dequantize_gguf", "is_export", "GgufModel", "GgufTensor"]
