"""GGUF for llama.cpp: export of Hugging Face model directories (architectures,
tensor names and metadata through the ``gguf`` package's tables, tokenizers,
per-tensor type recipes like ``llama-quantize``) and reading GGUF back."""
