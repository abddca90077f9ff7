"""The bytes of distributed saves and loads: every read goes through
``_read_ranges`` and every write through ``write_runs``, so that how bytes
move is decided in one place.

Reads: one plan of the read engine over the ranges when they are few or
large; a piece made of many short runs (a column shard: one run per row) is
gathered from the file's mapping in one strided copy instead, as a pread
per row costs more than the bytes it moves.

``bytes_requested()`` counts what this process asked to read: tests check
that each rank reads only the bytes its chunks need."""

from __future__ import annotations

import os
import threading
from typing import Optional

import numpy as np

from .. import _core
from ..errors import SafetensorIOError, with_context
from ..format.plans import read_into

_lock = threading.Lock()
_requested = [0]

# Below this many bytes per run, with more than _MANY_RUNS runs, gather from the mapping.
_SHORT_RUN = 256 * 1024
_MANY_RUNS = 8
_UNITS = {8: (np.uint64, "U64"), 4: (np.uint32, "U32"), 2: (np.uint16, "U16"), 1: (np.uint8, "U8")}


def bytes_requested() -> int:
    """Bytes this process has asked ``_read_ranges`` for so far."""
    return _requested[0]


class Source:
    """One checkpoint file open for reading: a pread handle, and its mapping
    once a gather needs it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = _core.File(path, "pread")
        self._mapped: Optional["_core.File"] = None

    def mapped(self) -> "_core.File":
        if self._mapped is None:
            self._mapped = _core.File(self.path, "mmap")
        return self._mapped

    def close(self) -> None:
        self.file.close()
        if self._mapped is not None:
            self._mapped.close()


def _read_ranges(source: Source, name: str, starts: np.ndarray, length: int, dst: np.ndarray) -> None:
    """Fill the C-contiguous uint8 array ``dst`` with the bytes
    ``[s, s + length)`` of tensor ``name`` (offsets relative to its first
    byte) for each ``s`` in ``starts``, back to back. The core checks every
    range against the tensor and raises FileChanged if the file shrank."""
    n = len(starts)
    if n * length != dst.nbytes:
        raise ValueError(f"{n} runs of {length} bytes do not fill {dst.nbytes} bytes")
    if n == 0 or length == 0:
        return
    steps = np.diff(starts)
    if n > _MANY_RUNS and length < _SHORT_RUN and (steps == steps[0]).all() and steps[0] > 0:
        # Evenly spaced short runs (a column piece of a matrix): one strided
        # copy from the mapping by the core, under its SIGBUS guard (a file
        # truncated meanwhile raises FileChanged, never kills the process).
        view = source.mapped().view(name)  # the tensor's bytes, zero-copy
        last = int(starts[-1]) + length
        if int(starts[0]) < 0 or last > view.nbytes:
            raise ValueError(f"runs up to byte {last} outside tensor {name!r} of {view.nbytes} bytes")
        first, step = int(starts[0]), int(steps[0])
        # The widest unit dividing the geometry: the core copies by elements.
        unit = next(u for u in (8, 4, 2, 1) if first % u == 0 and step % u == 0 and length % u == 0)
        span = view[first:last].view(_UNITS[unit][0])
        rows = np.lib.stride_tricks.as_strided(span, shape=(n, length // unit), strides=(step, unit),
                                               writeable=False)
        # One thread: the ranks of a node already read in parallel.
        _core.convert(rows, _UNITS[unit][1], dst, _UNITS[unit][1], threads=1)
    else:
        # One plan of the read engine: adjacent runs joined, large ones split
        # across its workers, every run checked against the tensor first.
        _, _, _, begin, end = source.file.info(name)
        lo, hi = int(starts.min()), int(starts.max()) + length
        if lo < 0 or hi > end - begin:
            raise ValueError(f"runs up to byte {hi} outside tensor {name!r} of {end - begin} bytes")
        base = source.file.data_start + begin
        read_into(source.file, [(base + int(s), dst[i * length:(i + 1) * length]) for i, s in enumerate(starts)])
    with _lock:
        _requested[0] += n * length


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
