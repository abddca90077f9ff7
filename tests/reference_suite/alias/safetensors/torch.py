"""``safetensors.torch`` as ``fastensors.torch`` (every name, private ones too)."""

import fastensors.torch as _target
from fastensors.torch import *  # noqa: F401,F403


def __getattr__(name):
    return getattr(_target, name)
