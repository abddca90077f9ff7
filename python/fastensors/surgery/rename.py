"""Renaming the tensors of a file or checkpoint in place."""

from __future__ import annotations

from typing import Dict, Optional

from ..checkpoint import open_checkpoint
from ..remap import RemapLike, map_keys
from .rewrite import Header, renamed, rewrite_checkpoint


def rename_file(path, remap: RemapLike, *, backup: bool = False, durable: Optional[bool] = None) -> Dict[str, str]:
    """Rename the tensors of a file or checkpoint in place (a new header;
    the data is copied unchanged, shards and index committed as one set).
    Returns ``{original: new}``."""
    with open_checkpoint(path, backend="pread") as ckpt:
        mapping = map_keys(ckpt.keys(), remap)

    def edit(_name: str, header: Header) -> Header:
        return renamed(header, mapping)

    rewrite_checkpoint(path, edit, backup=backup, durable=durable)
    return mapping
