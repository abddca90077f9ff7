"""The bytes of distributed saves and loads: every read goes through
``_read_ranges`` and every write through ``write_runs``, so that how bytes
move (pread now) is decided in one place.

``bytes_requested()`` counts what this process asked to read: tests check
that each rank reads only the bytes its chunks need."""

from __future__ import annotations

import os
import threading
from typing import Iterable, Tuple

import numpy as np

from .. import _core
from ..errors import with_context, SafetensorIOError

_lock = threading.Lock()
_requested = [0]


def bytes_requested() -> int:
    """Bytes this process has asked ``_read_ranges`` for so far."""
    return _requested[0]


def _read_ranges(file: "_core.File", ranges: Iterable[Tuple[str, int, np.ndarray]]) -> None:
    """Fill each ``dst`` (a C-contiguous uint8 array) with the bytes of
    tensor ``name`` from ``offset`` (relative to the tensor's first byte),
    for ``(name, offset, dst)`` in ``ranges``. The core checks every range
    against the tensor and raises FileChanged if the file shrank."""
    total = 0
    for name, offset, dst in ranges:
        if dst.nbytes:
            file.read_into(name, int(offset), dst)
            total += dst.nbytes
    with _lock:
        _requested[0] += total


def read_block(file: "_core.File", name: str, starts: np.ndarray, length: int, dst: np.ndarray) -> None:
    """Read the runs ``starts`` (each ``length`` bytes, see layout.byte_runs)
    of tensor ``name`` into the contiguous uint8 array ``dst``."""
    _read_ranges(file, ((name, int(s), dst[i * length:(i + 1) * length]) for i, s in enumerate(starts)))


def write_runs(fd: int, path: str, base: int, starts: np.ndarray, length: int, src: np.ndarray) -> int:
    """Write ``src`` (contiguous uint8, the runs back to back) at file offsets
    ``base + starts[i]``; returns the bytes written."""
    view = memoryview(src)
    written = 0
    try:
        for i, s in enumerate(starts):
            piece = view[i * length:(i + 1) * length]
            at = base + int(s)
            while len(piece):
                n = os.pwrite(fd, piece, at)
                if n <= 0:
                    raise OSError(f"pwrite wrote {n} bytes")
                piece, at, written = piece[n:], at + n, written + n
    except OSError as e:
        raise with_context(SafetensorIOError, f"writing {path!r} failed: {e}", path=path) from e
    return written
