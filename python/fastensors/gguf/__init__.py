"""GGUF for llama.cpp: export of Hugging Face model directories (architectures,
tensor names and metadata through the ``gguf`` package's tables, tokenizers,
per-tensor type recipes like ``llama-quantize``) and reading GGUF back.
See docs/gguf.md."""

from .archs import HF_ARCHITECTURES, UnknownTensor, UnsupportedArchitecture
from .export import ConfigNotFound, ExportReport, TensorReport, export_gguf, plan_types, recipes
from .tokenizer import TokenizerNotFound

__all__ = ["export_gguf", "recipes", "plan_types", "ExportReport", "TensorReport", "HF_ARCHITECTURES",
           "UnsupportedArchitecture", "UnknownTensor", "TokenizerNotFound", "ConfigNotFound"]
