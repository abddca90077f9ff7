"""Tiny models of real architectures, built locally from transformers
configs (no downloads), for the key patterns surgery tools must handle."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def configs():
    from transformers import BertConfig, LlamaConfig, T5Config, ViTConfig

    return {
        "llama": LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                             num_key_value_heads=2, vocab_size=64, max_position_embeddings=32),
        "bert": BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                           vocab_size=64, max_position_embeddings=32),
        "vit": ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32),
        "t5": T5Config(d_model=16, d_ff=32, num_layers=2, num_decoder_layers=2, num_heads=2, d_kv=8, vocab_size=64),
    }


def build(name: str):
    """The model class used for each architecture, seeded."""
    import torch
    from transformers import BertForMaskedLM, LlamaForCausalLM, T5ForConditionalGeneration, ViTModel

    torch.manual_seed(0)
    cls = {"llama": LlamaForCausalLM, "bert": BertForMaskedLM, "vit": ViTModel,
           "t5": T5ForConditionalGeneration}[name]
    return cls(configs()[name]).eval()


ARCHITECTURES = ("llama", "bert", "vit", "t5")
