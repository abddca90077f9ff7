"""mlx adapter: the reference ``safetensors.mlx`` verbs.

Arrays are ``mlx.core.array``; mlx copies the bytes into memory it owns
(docs/frameworks.md). BF16 loads bit-exact as ``mx.bfloat16`` (the reference
cannot); F64 becomes float32 as ``mx.array`` makes it (as the reference);
FP8 and the sub-byte floats have no mlx dtype (``DtypeNotInFramework``)."""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

from .format import adapter
from .format.frameworks import require

# The framework, or FrameworkNotInstalled naming the extra that installs it.
mx = require("mlx.core", "mlx", "mlx")

_FRAMEWORK = "mlx"


def save(tensors: Dict[str, mx.array], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors``.

    Args: ``tensors`` maps names to ``mx.array``; ``metadata`` is text only.
    Returns: the file's bytes. Raises: ``InvalidArgument`` for a value that
    is not an mlx array, ``UnknownDtype`` for a dtype safetensors lacks."""
    return adapter.save(_FRAMEWORK, tensors, metadata)


def save_file(tensors: Dict[str, mx.array], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None, *, durable: Optional[bool] = None) -> None:
    """Write ``tensors`` to ``filename`` atomically (``durable=False`` skips
    the fsyncs). Raises as ``save``, and ``SafetensorIOError`` on I/O errors."""
    adapter.save_file(_FRAMEWORK, tensors, filename, metadata, durable)


def load(data: bytes) -> Dict[str, mx.array]:
    """The tensors of an in-memory safetensors file as mlx arrays.

    Raises: the format's typed errors for a malformed file,
    ``DtypeNotInFramework`` naming a tensor whose dtype mlx lacks."""
    return adapter.load(_FRAMEWORK, data)


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap", dtype=None,
              **select) -> Dict[str, mx.array]:
    """Every tensor of ``filename`` as mlx arrays.

    ``backend`` is "mmap" or "pread"; ``dtype`` converts float tensors while
    reading; ``remap``, ``include``, ``exclude`` and ``prefix`` choose and
    rename tensors as in ``safe_open``. Raises as ``load``, and
    ``FileNotFound``/``SafetensorIOError``."""
    return adapter.load_file(_FRAMEWORK, filename, backend=backend, dtype=dtype, **select)


__all__ = ["save", "save_file", "load", "load_file"]
