"""flax / jax adapter: the reference ``safetensors.flax`` verbs.

Arrays are ``jax.Array`` on the CPU. A tensor whose bytes in the mapping
are 64-byte aligned is shared with jax (no copy; XLA's rule), any other is
copied once; docs/frameworks.md has the details. BF16 and every FP8 load as
jax's own dtypes; F6 has no jax dtype (``DtypeNotInFramework``)."""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

from .format import adapter
from .format.frameworks import require

# The framework, or FrameworkNotInstalled naming the extra that installs it.
jax = require("jax", "flax", "jax")
Array = jax.Array

_FRAMEWORK = "flax"


def save(tensors: Dict[str, Array], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors``.

    Args: ``tensors`` maps names to ``jax.Array``; ``metadata`` is text only.
    Returns: the file's bytes. Raises: ``InvalidArgument`` for a value that
    is not a jax array, ``UnknownDtype`` for a dtype safetensors lacks."""
    return adapter.save(_FRAMEWORK, tensors, metadata)


def save_file(tensors: Dict[str, Array], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None, *, durable: Optional[bool] = None) -> None:
    """Write ``tensors`` to ``filename`` atomically (``durable=False`` skips
    the fsyncs). Raises as ``save``, and ``SafetensorIOError`` on I/O errors."""
    adapter.save_file(_FRAMEWORK, tensors, filename, metadata, durable)


def load(data: bytes) -> Dict[str, Array]:
    """The tensors of an in-memory safetensors file as jax arrays.

    Raises: the format's typed errors for a malformed file,
    ``DtypeNotInFramework`` naming a tensor whose dtype jax lacks."""
    return adapter.load(_FRAMEWORK, data)


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap", dtype=None,
              **select) -> Dict[str, Array]:
    """Every tensor of ``filename`` as jax arrays.

    ``backend`` is "mmap" or "pread"; ``dtype`` converts float tensors while
    reading (as ``fastensors.numpy.load_file``); ``remap``, ``include``,
    ``exclude`` and ``prefix`` choose and rename tensors as in ``safe_open``.
    Raises as ``load``, and ``FileNotFound``/``SafetensorIOError``."""
    return adapter.load_file(_FRAMEWORK, filename, backend=backend, dtype=dtype, **select)


__all__ = ["save", "save_file", "load", "load_file"]
