"""The index of a sharded checkpoint (``model.safetensors.index.json``):
reading it with a size limit, parsing it strictly, validating its entries."""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Tuple

from ..errors import CheckpointNotFound, InvalidIndex, with_context
from .names import check_shard_name

# An index is a name -> file map; anything this large is not one.
MAX_INDEX_BYTES = 64 << 20


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return out


def parse_index(index_path: str, *, check_duplicates: bool = True,
                raw: Optional[bytes] = None) -> Tuple[Dict[str, object], Dict[str, object]]:
    """``(weight_map, metadata)`` of an index file: UTF-8 JSON (without
    duplicate keys unless ``check_duplicates`` is false) whose top level is an
    object with a ``weight_map`` object and an optional ``metadata`` object.
    Entries are checked by ``check_weight_map``. ``raw``: the index's bytes
    when they were fetched already (a URL); ``index_path`` then only names it."""
    if raw is None:
        raw = _read_index_bytes(index_path)
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates) if check_duplicates else json.loads(text)
    except UnicodeDecodeError as e:
        raise with_context(InvalidIndex, f"index {index_path!r} is not UTF-8: {e}", path=index_path) from None
    except ValueError as e:
        raise with_context(InvalidIndex, f"index {index_path!r} is not valid JSON: {e}", path=index_path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise with_context(InvalidIndex, f"index {index_path!r} must be a JSON object with a \"weight_map\" object",
                     path=index_path)
    meta = doc.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise with_context(InvalidIndex, f"index {index_path!r}: \"metadata\" must be an object", path=index_path)
    return doc["weight_map"], meta


def _read_index_bytes(index_path: str) -> bytes:
    try:
        fd = os.open(index_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise with_context(CheckpointNotFound, f"index {index_path!r} does not exist", path=index_path) from None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_INDEX_BYTES:
            raise with_context(InvalidIndex, f"index {index_path!r} is {size} bytes, over the {MAX_INDEX_BYTES}-byte"
                         " limit for an index", path=index_path)
        chunks = []
        total = 0
        while True:  # one read in practice; loop for short reads and files still growing
            chunk = os.read(fd, max(size + 1 - total, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_INDEX_BYTES:
                raise with_context(InvalidIndex, f"index {index_path!r} is over the {MAX_INDEX_BYTES}-byte limit for an"
                             " index", path=index_path)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def check_file_entry(weight_map: Dict[str, object], fname: object, index_path: str,
                     extension: str = ".safetensors") -> None:
    """One weight_map value: a string naming a file inside the directory."""
    if not isinstance(fname, str):
        tensor = next(k for k, v in weight_map.items() if v is fname or v == fname)
        raise with_context(InvalidIndex, f"index {index_path!r}: tensor {tensor!r} maps to {fname!r}, not a file name",
                     tensor=tensor, path=index_path)
    check_shard_name(fname, index_path, extension)


def check_weight_map(weight_map: Dict[str, object], index_path: str, extension: str = ".safetensors") -> None:
    """Every value of ``weight_map`` is a valid shard name."""
    for value in weight_map.values():
        if not isinstance(value, str):
            check_file_entry(weight_map, value, index_path, extension)
    for fname in set(weight_map.values()):
        check_shard_name(fname, index_path, extension)


def read_index(index_path: str, extension: str = ".safetensors") -> Tuple[Dict[str, str], Dict[str, object]]:
    """``(weight_map, metadata)`` of an index file, every entry validated."""
    weight_map, meta = parse_index(index_path)
    check_weight_map(weight_map, index_path, extension)
    return weight_map, meta
