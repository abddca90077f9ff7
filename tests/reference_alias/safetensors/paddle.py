"""``safetensors.paddle`` is ``fastensors.paddle`` (the same module object)."""

import sys

import fastensors.paddle

sys.modules[__name__] = fastensors.paddle
