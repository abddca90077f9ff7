"""``safetensors.flax`` is ``fastensors.flax`` (the same module object)."""

import sys

import fastensors.flax

sys.modules[__name__] = fastensors.flax
