"""paddle adapter: the reference ``safetensors.paddle`` verbs.

Tensors share the file's mapping through DLPack (no copy; each tensor keeps
the mapping alive), docs/frameworks.md. BF16, F8_E4M3 and F8_E5M2 load as
paddle's dtypes, U32/U64 as its unsigned types; U16 (which paddle's DLPack
import reads as bfloat16) and the other FP8/sub-byte types raise
``DtypeNotInFramework``."""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

from .format import adapter
from .format.frameworks import require

# The framework, or FrameworkNotInstalled naming the extra that installs it.
paddle = require("paddle", "paddle", "paddle")

_FRAMEWORK = "paddle"


def save(tensors: Dict[str, paddle.Tensor], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors``.

    Args: ``tensors`` maps names to contiguous ``paddle.Tensor`` (any place;
    GPU tensors are copied to the CPU); ``metadata`` is text only. Returns:
    the file's bytes. Raises: ``InvalidArgument`` for a value that is not a
    tensor or is not contiguous, ``UnknownDtype`` for a dtype safetensors lacks."""
    return adapter.save(_FRAMEWORK, tensors, metadata)


def save_file(tensors: Dict[str, paddle.Tensor], filename: Union[str, os.PathLike],
              metadata: Optional[Dict[str, str]] = None, *, durable: Optional[bool] = None) -> None:
    """Write ``tensors`` to ``filename`` atomically (``durable=False`` skips
    the fsyncs). Raises as ``save``, and ``SafetensorIOError`` on I/O errors."""
    adapter.save_file(_FRAMEWORK, tensors, filename, metadata, durable)


def load(data: bytes, device: str = "cpu") -> Dict[str, paddle.Tensor]:
    """The tensors of an in-memory safetensors file as paddle tensors (copies:
    ``data`` is read-only), placed on ``device`` ("cpu", "gpu", "gpu:0", "cuda").

    Raises: the format's typed errors for a malformed file,
    ``DtypeNotInFramework`` naming a tensor whose dtype paddle lacks."""
    return adapter.load(_FRAMEWORK, data, device)


def load_file(filename: Union[str, os.PathLike], device="cpu", *, backend: str = "mmap", dtype=None,
              **select) -> Dict[str, paddle.Tensor]:
    """Every tensor of ``filename`` as paddle tensors on ``device``.

    ``backend`` is "mmap" or "pread"; ``dtype`` converts float tensors while
    reading; ``remap``, ``include``, ``exclude`` and ``prefix`` choose and
    rename tensors as in ``safe_open``. Raises as ``load``, and
    ``FileNotFound``/``SafetensorIOError``."""
    return adapter.load_file(_FRAMEWORK, filename, device=device, backend=backend, dtype=dtype, **select)


__all__ = ["save", "save_file", "load", "load_file"]
