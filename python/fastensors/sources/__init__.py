"""Where bytes come from: local paths (the core's mapped or pread File), file
objects (a real file descriptor is mapped; other objects are read by ranges)
and URLs through fsspec (HTTP(S), S3, GCS, the Hugging Face Hub, any fsspec
protocol), with the range plans that read them. docs/remote.md."""

from __future__ import annotations

import os
import stat
from typing import Optional

from .. import _core
from ..errors import InvalidArgument
from .fileobj import FileObjectSource
from .fsspec_source import FsspecSource
from .options import RemoteOptions
from .rangefile import RangeFile, read_arrays


def is_url(obj) -> bool:
    """True for a string with a ``protocol://`` prefix other than ``file://``."""
    if not isinstance(obj, str) or "://" not in obj:
        return False
    protocol = obj.split("://", 1)[0]
    return protocol.replace("+", "").replace("-", "").replace(".", "").isalnum() and protocol.lower() != "file"


def is_file_object(obj) -> bool:
    return not isinstance(obj, (str, bytes, os.PathLike)) and callable(getattr(obj, "read", None)) \
        and callable(getattr(obj, "seek", None))


def check_backend(backend) -> None:
    """InvalidArgument unless ``backend`` is "mmap" or "pread"."""
    if not isinstance(backend, str) or backend not in ("mmap", "pread"):
        raise InvalidArgument(f"unknown backend {backend!r} (use \"mmap\" or \"pread\")")


def open_source(obj, backend: str = "mmap", *, storage_options: Optional[dict] = None,
                options: Optional[RemoteOptions] = None):
    """The handle ``safe_open`` reads through, for a path, a URL or a file object.

    ``backend`` applies to local files (and to file objects with a real file
    descriptor, which are opened as that file). ``storage_options`` go to
    fsspec for URLs; ``options`` tune range reads (``RemoteOptions``).
    Returns a core ``File`` or a ``RangeFile``. Raises TypeError for objects
    that are none of these, InvalidArgument for bad options, and the
    reader's typed errors."""
    if options is not None and not isinstance(options, RemoteOptions):
        raise InvalidArgument(f"options must be a fastensors.sources.RemoteOptions, not {type(options).__name__}")
    if storage_options is not None and not isinstance(storage_options, dict):
        raise InvalidArgument(f"storage_options must be a dict, not {type(storage_options).__name__}")
    check_backend(backend)
    if isinstance(obj, _core.File):  # already open: a checkpoint's shard, checked against its index
        return obj
    if isinstance(obj, str) and obj.startswith("file://"):
        obj = obj[len("file://"):]
    if is_url(obj):
        return RangeFile(FsspecSource(obj, storage_options, options), options)
    if is_file_object(obj):
        label = str(getattr(obj, "name", None) or getattr(obj, "path", None) or f"<{type(obj).__name__}>")
        fd = _descriptor(obj)
        if fd is not None:
            # The same open file, mapped or read with pread as a path would be.
            return _core.File(f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else f"/dev/fd/{fd}", backend)
        return RangeFile(FileObjectSource(obj, label), options)
    try:
        path = os.fspath(obj)
    except TypeError:  # a TypeError, as os.fspath and open() raise
        raise TypeError(f"expected a path, a URL or a file object with read() and seek(), not "
                        f"{type(obj).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return _core.File(path, backend)


def _descriptor(obj) -> Optional[int]:
    """The object's OS file descriptor when it is a regular file, else None."""
    try:
        fd = obj.fileno()
        if isinstance(fd, int) and fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except (AttributeError, OSError, ValueError, TypeError, NotImplementedError):
        pass
    except Exception:  # io.UnsupportedOperation and others that file-likes raise
        pass
    return None


__all__ = ["open_source", "is_url", "is_file_object", "RemoteOptions", "RangeFile", "FileObjectSource",
           "FsspecSource", "read_arrays"]
