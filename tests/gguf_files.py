"""A small GGUF file written by the gguf package itself (not by fastensors'
exporter): F32, F16 and one block-quantized tensor, a tiny vocabulary."""

from __future__ import annotations

import numpy as np

import fastensors


def write_small_gguf(path: str, qtype: str = "q4_k") -> None:
    import gguf

    w = gguf.GGUFWriter(path, arch="llama")
    w.add_block_count(1)
    w.add_string("general.name", "small")
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "c", "d"])
    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    w.add_tensor("token_embd.weight", x)
    w.add_tensor("output_norm.weight", np.ones(256, np.float16))
    q = fastensors.quantize(x, qtype).data
    w.add_tensor("blk.0.attn_q.weight", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType[qtype.upper()])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
