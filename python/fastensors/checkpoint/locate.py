"""Finding a checkpoint: a file, an index, or the directory holding one."""

from __future__ import annotations

import os
from typing import Tuple

from .. import _core


def locate(path) -> Tuple[str, str]:
    """``("index", path)`` or ``("file", path)`` for a file, an index, or a
    directory. In a directory ``model.safetensors`` comes first, then
    ``model.safetensors.index.json`` (the order transformers uses), then a
    lone ``*.safetensors.index.json``, then a lone ``*.safetensors`` (hidden
    files skipped). Raises ``CheckpointNotFound`` or ``AmbiguousCheckpoint``.
    The rules are the C++ ``locate_checkpoint``'s (docs/embedding.md)."""
    path = os.fspath(path)
    kind, found = _core.locate_checkpoint(path if isinstance(path, bytes) else os.fsencode(path))
    return kind, found
