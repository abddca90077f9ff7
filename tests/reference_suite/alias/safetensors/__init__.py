"""``safetensors`` as fastensors: the reference package's own tests import
this name. Every attribute is looked up on ``fastensors`` (private names
too, such as ``_safe_open_handle``), so the tests exercise the real API."""

import fastensors as _target
from fastensors import *  # noqa: F401,F403

__version__ = _target.__version__


def __getattr__(name):
    return getattr(_target, name)
