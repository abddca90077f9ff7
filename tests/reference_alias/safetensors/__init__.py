"""An alias package named ``safetensors`` whose every name is fastensors':
put this directory first on ``sys.path`` and the reference package's own
tests run against fastensors (tests/reference_alias/run.py does)."""

import fastensors as _fastensors
from fastensors import *  # noqa: F401,F403
from fastensors import (  # noqa: F401  (the reference's top-level names)
    SafetensorError,
    TensorSpec,
    __version__,
    _safe_open_handle,
    deserialize,
    safe_open,
    serialize,
    serialize_file,
)

# Marks the alias, so a runner can tell it from the real package.
FASTENSORS_ALIAS = True


def __getattr__(name):
    return getattr(_fastensors, name)
