"""``safetensors.mlx`` is ``fastensors.mlx`` (the same module object)."""

import sys

import fastensors.mlx

sys.modules[__name__] = fastensors.mlx
