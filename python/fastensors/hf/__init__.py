"""Hugging Face conventions: ``save_pretrained`` / ``load_pretrained`` (and
a mixin giving a model ``from_pretrained``), and converting pickle ``.bin``
checkpoints to safetensors."""

from .pretrained import (
    PretrainedMixin,
    config_from_json,
    config_to_json,
    find_weights,
    load_pretrained,
    save_pretrained,
    tied_weight_names,
)

__all__ = ["save_pretrained", "load_pretrained", "PretrainedMixin", "find_weights", "config_to_json",
           "config_from_json", "tied_weight_names"]
