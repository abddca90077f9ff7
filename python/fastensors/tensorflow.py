"""tensorflow adapter: the reference ``safetensors.tensorflow`` verbs.

Tensors are eager ``tf.Tensor`` on the CPU; tensorflow copies the bytes into
its own buffer (``tf.convert_to_tensor`` and DLPack import both copy),
docs/frameworks.md. BF16, F8_E4M3, F8_E5M2, the FNUZ FP8 types and F4 load
as tensorflow's dtypes; F8_E8M0 and F6 have none (``DtypeNotInFramework``)."""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

from .format import adapter
from .format.frameworks import require

# The framework, or FrameworkNotInstalled naming the extra that installs it.
tf = require("tensorflow", "tf", "tensorflow")

_FRAMEWORK = "tf"


def save(tensors: Dict[str, tf.Tensor], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors``.

    Args: ``tensors`` maps names to ``tf.Tensor`` (or ``tf.Variable``);
    ``metadata`` is text only. Returns: the file's bytes. Raises:
    ``InvalidArgument`` for a value that is not a tensor, ``UnknownDtype``
    for a dtype safetensors lacks."""
    return adapter.save(_FRAMEWORK, tensors, metadata)


def save_file(tensors: Dict[str, tf.Tensor], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None, *, durable: Optional[bool] = None) -> None:
    """Write ``tensors`` to ``filename`` atomically (``durable=False`` skips
    the fsyncs). Raises as ``save``, and ``SafetensorIOError`` on I/O errors."""
    adapter.save_file(_FRAMEWORK, tensors, filename, metadata, durable)


def load(data: bytes) -> Dict[str, tf.Tensor]:
    """The tensors of an in-memory safetensors file as tensorflow tensors.

    Raises: the format's typed errors for a malformed file,
    ``DtypeNotInFramework`` naming a tensor whose dtype tensorflow lacks."""
    return adapter.load(_FRAMEWORK, data)


def load_file(filename: Union[str, os.PathLike], *, backend: str = "mmap", dtype=None,
              **select) -> Dict[str, tf.Tensor]:
    """Every tensor of ``filename`` as tensorflow tensors.

    ``backend`` is "mmap" or "pread"; ``dtype`` converts float tensors while
    reading; ``remap``, ``include``, ``exclude`` and ``prefix`` choose and
    rename tensors as in ``safe_open``. Raises as ``load``, and
    ``FileNotFound``/``SafetensorIOError``."""
    return adapter.load_file(_FRAMEWORK, filename, backend=backend, dtype=dtype, **select)


__all__ = ["save", "save_file", "load", "load_file"]
