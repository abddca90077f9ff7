"""``safetensors.torch`` is ``fastensors.torch`` (the same module object)."""

import sys

import fastensors.torch

sys.modules[__name__] = fastensors.torch
