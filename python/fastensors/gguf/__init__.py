"""GGUF for llama.cpp: export of Hugging Face model directories (architectures,
tensor names and metadata through the ``gguf`` package's tables, tokenizers,
per-tensor type recipes like ``llama-quantize``, importance matrices) and
reading GGUF back. See docs/gguf.md."""

from .archs import HF_ARCHITECTURES, UnknownTensor, UnsupportedArchitecture
from .export import ConfigNotFound, ExportReport, TensorReport, export_gguf, recipe_names
from .imatrix import ImatrixError, read_imatrix
from .read import GgufModel, GgufSummary, GgufTensor, dequantize_gguf, inspect_gguf, is_export, looks_like_gguf, read_gguf
from .recipes import RECIPES, ModelFacts, plan_types
from .tokenizer import TokenizerNotFound

__all__ = ["export_gguf", "recipe_names", "ExportReport", "TensorReport", "HF_ARCHITECTURES",
           "UnsupportedArchitecture", "UnknownTensor", "TokenizerNotFound", "ConfigNotFound",
           "read_gguf", "dequantize_gguf", "is_export", "GgufModel", "GgufTensor",
           "inspect_gguf", "GgufSummary", "looks_like_gguf",
           "RECIPES", "ModelFacts", "plan_types", "read_imatrix", "ImatrixError"]
