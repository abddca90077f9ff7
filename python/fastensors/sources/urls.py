"""Checkpoints at URLs: which object a URL names (a file, an index, or a
folder holding one), small whole objects (an index, a config), and copying
a checkpoint's files to a local folder by parallel ranges."""

from __future__ import annotations

import os
import posixpath
from typing import Optional, Tuple

import numpy as np

from ..errors import CheckpointNotFound, InvalidArgument, with_context
from .fsspec_source import FsspecSource
from .options import RemoteOptions
from .rangefile import RangeFile

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def join(base: str, name: str) -> str:
    """``name`` inside the folder URL ``base`` (URLs always use ``/``)."""
    return base.rstrip("/") + "/" + name


def parent(url: str) -> str:
    """The folder URL of the object ``url``."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{posixpath.dirname(rest)}"


def exists(url: str, storage_options: Optional[dict], options: Optional[RemoteOptions]) -> bool:
    try:
        FsspecSource(url, storage_options, options).close()
        return True
    except FileNotFoundError:
        return False


def locate_url(url: str, storage_options: Optional[dict] = None,
               options: Optional[RemoteOptions] = None) -> Tuple[str, str]:
    """``("file"|"index", url)``: a URL ending in ``.json`` is an index, one
    ending in ``.safetensors`` a file; any other is a folder, where
    ``model.safetensors`` is looked for first, then its index (folders
    cannot always be listed over HTTP, so only these two names)."""
    bare = url.split("?", 1)[0].rstrip("/")
    if bare.endswith(".json"):
        return "index", url
    if bare.endswith(".safetensors"):
        return "file", url
    for name, kind in ((SAFE_WEIGHTS_NAME, "file"), (SAFE_WEIGHTS_INDEX_NAME, "index")):
        candidate = join(url, name)
        if exists(candidate, storage_options, options):
            return kind, candidate
    raise with_context(CheckpointNotFound, f"no checkpoint at {url!r}: neither {SAFE_WEIGHTS_NAME!r} nor "
                       f"{SAFE_WEIGHTS_INDEX_NAME!r} is there", path=url)


def fetch_small(url: str, limit: int, storage_options: Optional[dict] = None,
                options: Optional[RemoteOptions] = None) -> bytes:
    """The whole object at ``url`` when it is at most ``limit`` bytes."""
    source = FsspecSource(url, storage_options, options)
    try:
        if source.size > limit:
            raise with_context(InvalidArgument, f"{url} is {source.size} bytes, over the {limit}-byte limit for "
                               "this kind of file", path=url)
        data, = source.read_many([(0, source.size)])
        return data
    finally:
        source.close()


def copy_to(url: str, path: str, storage_options: Optional[dict] = None,
            options: Optional[RemoteOptions] = None) -> int:
    """Copy the object at ``url`` to the local file ``path`` with the range
    plans (parallel requests, a window of memory at a time); a safetensors
    file is validated first by opening it. Returns bytes copied."""
    options = options or RemoteOptions()
    source = FsspecSource(url, storage_options, options)
    try:
        if url.split("?", 1)[0].endswith(".safetensors"):
            RangeFile(FsspecSource(url, storage_options, options, fs=source.fs, path=source.path), options).close()
        window = max(options.window_bytes, options.request_bytes)
        from . import ranges as _ranges
        with open(path, "wb") as out:
            at = 0
            while at < source.size:
                n = min(window, source.size - at)
                buf = np.empty(n, np.uint8)
                reqs = _ranges.plan([(buf, at)], gap=0, request_bytes=options.request_bytes)
                _ranges.execute(reqs, source.read_many, window_bytes=window)
                out.write(memoryview(buf))
                at += n
        if not source.conditional:
            source.verify()
        return source.size
    except FileNotFoundError:
        raise
    except BaseException:
        if os.path.exists(path):
            os.unlink(path)
        raise
    finally:
        source.close()


__all__ = ["join", "parent", "exists", "locate_url", "fetch_small", "copy_to"]


# Small files beside the weights that tools read (quantize_model copies the
# model's config); fetched when present.
COMPANIONS = ("config.json", "generation_config.json")


def stage(url: str, folder: str, storage_options: Optional[dict] = None,
          options: Optional[RemoteOptions] = None) -> str:
    """Copy the checkpoint at ``url`` (a file, an index, or a folder holding
    one) into the local ``folder``, each file by parallel range requests, and
    return the local path to use in its place (the file, or the folder for a
    sharded checkpoint). For tools that read every byte anyway (conversion,
    quantization); reading a few tensors never stages."""
    import json

    kind, found = locate_url(url, storage_options, options)
    base = parent(found)
    name = found.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    _relative_parts(name, found)
    if kind == "file":
        target = os.path.join(folder, name)
        copy_to(found, target, storage_options, options)
        _companions(base, folder, storage_options, options)
        return target
    raw = fetch_small(found, 64 << 20, storage_options, options)
    with open(os.path.join(folder, name), "wb") as fh:
        fh.write(raw)
    try:
        shards = sorted(set(json.loads(raw.decode("utf-8"))["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        return folder  # the checkpoint reader reports the malformed index
    for shard in shards:
        if isinstance(shard, str):
            local = os.path.join(folder, *_relative_parts(shard, found))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            copy_to(join(base, shard), local, storage_options, options)
    _companions(base, folder, storage_options, options)
    return folder


def _relative_parts(name: str, where: str) -> list:
    """A file name from an index as path parts inside the folder; a name that
    would leave it (root, drive, ``..``) is refused before anything is written."""
    parts = name.replace("\\", "/").split("/")
    if not name or name[0] in "/\\" or (len(name) > 1 and name[1] == ":") or ".." in parts or "" in parts:
        raise with_context(InvalidArgument, f"{where}: file name {name!r} is not a relative path inside the "
                           "checkpoint's folder", path=where)
    return parts


def _companions(base: str, folder: str, storage_options, options) -> None:
    for name in COMPANIONS:
        try:
            data = fetch_small(join(base, name), 16 << 20, storage_options, options)
        except FileNotFoundError:
            continue
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(data)
