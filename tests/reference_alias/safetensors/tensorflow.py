"""``safetensors.tensorflow`` is ``fastensors.tensorflow`` (the same module object)."""

import sys

import fastensors.tensorflow

sys.modules[__name__] = fastensors.tensorflow
