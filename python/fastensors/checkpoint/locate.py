"""Finding a checkpoint: a file, an index, or the directory holding one."""

from __future__ import annotations

import os
import stat
from typing import Tuple

from ..errors import AmbiguousCheckpoint, CheckpointNotFound, with_context
from .names import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME


def locate(path) -> Tuple[str, str]:
    """``("index", path)`` or ``("file", path)`` for a file, an index, or a
    directory. In a directory ``model.safetensors`` comes first, then
    ``model.safetensors.index.json`` (the order transformers uses), then a
    lone ``*.safetensors.index.json``, then a lone ``*.safetensors``."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise with_context(CheckpointNotFound, f"no checkpoint at {path!r}: no such file or directory", path=path) from None
    if stat.S_ISREG(mode):
        return ("index" if path.endswith(".json") else "file"), path
    if not stat.S_ISDIR(mode):
        raise with_context(CheckpointNotFound, f"no checkpoint at {path!r}: not a file or directory", path=path)
    for name, kind in ((SAFE_WEIGHTS_NAME, "file"), (SAFE_WEIGHTS_INDEX_NAME, "index")):
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return kind, candidate
    names = sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))
    for suffix, kind in ((".safetensors.index.json", "index"), (".safetensors", "file")):
        found = [n for n in names if n.endswith(suffix)]
        if len(found) == 1:
            return kind, os.path.join(path, found[0])
        if len(found) > 1:
            raise with_context(AmbiguousCheckpoint,
                         f"{path!r} holds several {suffix} files and none is named {SAFE_WEIGHTS_NAME!r}"
                         f" or {SAFE_WEIGHTS_INDEX_NAME!r}: {found}; open one of them", path=path)
    raise with_context(CheckpointNotFound, f"no safetensors checkpoint in {path!r}", path=path)
