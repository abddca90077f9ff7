"""Files that hold quantized models: compressed-tensors safetensors, GGUF and Parquet."""
