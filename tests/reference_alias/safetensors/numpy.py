"""``safetensors.numpy`` is ``fastensors.numpy`` (the same module object)."""

import sys

import fastensors.numpy

sys.modules[__name__] = fastensors.numpy
