"""``safetensors.numpy`` as ``fastensors.numpy`` (every name, private ones too)."""

import fastensors.numpy as _target
from fastensors.numpy import *  # noqa: F401,F403


def __getattr__(name):
    return getattr(_target, name)
