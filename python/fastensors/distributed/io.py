"""The bytes of distributed saves and loads: every read goes through a
``ReadBatch`` and every write through ``write_runs``, so that how bytes
move is decided in one place. A batch gathers the pieces of a load into one
plan of the read engine, so that every file is read at once.

``bytes_requested()`` counts what this process asked to read: tests check
that each rank reads only the bytes its chunks need."""

from __future__ import annotations

import threading
from typing import Callable, Optional

import numpy as np

from .. import _core
from ..errors import SafetensorIOError, with_context

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


class ReadBatch:
    """Reads of many pieces run as one plan of the read engine.

    ``add`` records where each piece's bytes go; ``run`` reads them all.
    Contiguous runs are positioned reads straight into their destination
    (adjacent runs joined, large ones split), done by the engine's workers.
    Evenly spaced short runs (a column piece of a matrix: one run per row)
    are gathered from the file's mapping by one strided copy each, on the
    calling thread while the workers read: a pread per row would cost more
    than the bytes it moves."""

    def __init__(self) -> None:
        self._reads: list = []
        self._gathers: list = []
        self._after: list = []
        self.nbytes = 0

    def add(self, source: Source, name: str, starts: np.ndarray, length: int, dst: np.ndarray,
            then: Optional[Callable[[], None]] = None) -> None:
        """Fill the C-contiguous uint8 array ``dst`` with the bytes
        ``[s, s + length)`` of tensor ``name`` (offsets relative to its first
        byte) for each ``s`` in ``starts``, back to back, when the batch
        runs; ``then()`` is called after. Raises ValueError for runs outside
        the tensor or that do not fill ``dst``."""
        n = len(starts)
        if n * length != dst.nbytes:
            raise ValueError(f"{n} runs of {length} bytes do not fill {dst.nbytes} bytes")
        if n and length:
            _, _, _, begin, end = source.file.info(name)
            lo, hi = int(starts.min()), int(starts.max()) + length
            if lo < 0 or hi > end - begin:
                raise ValueError(f"runs up to byte {hi} outside tensor {name!r} of {end - begin} bytes")
            base = source.file.data_start + begin
            steps = np.diff(starts)
            if n > _MANY_RUNS and length < _SHORT_RUN and (steps == steps[0]).all() and steps[0] > 0:
                self._gathers.append((source.mapped(), name, base, int(starts[0]), int(steps[0]), n, length, dst))
            else:
                for i, s in enumerate(starts):
                    self._reads.append((source.file, base + int(s), dst[i * length:(i + 1) * length]))
            self.nbytes += n * length
        if then is not None:
            self._after.append(then)

    def run(self) -> None:
        """Read everything added since the last run, then call back. Raises
        the engine's Io / FileChanged (a file that shrank)."""
        reads, gathers, after, nbytes = self._reads, self._gathers, self._after, self.nbytes
        self._reads, self._gathers, self._after, self.nbytes = [], [], [], 0
        plan = _core.ReadPlan()
        for file, offset, dst in reads:
            plan.read(file, offset, dst)
        # The workers read the contiguous runs while this thread gathers:
        # from the mapping, faulting pages in as it goes (populating the
        # spans first would hold them in this process's memory meanwhile).
        job = _core.ReadJob(plan) if len(plan) else None
        try:
            for mapped, name, _, first, step, n, length, dst in gathers:
                _gather(mapped, name, first, step, n, length, dst)
            if job is not None:
                job.wait()
        finally:
            if job is not None:
                job.close()
        with _lock:
            _requested[0] += nbytes
        for fn in after:
            fn()


def _gather(mapped, name: str, first: int, step: int, n: int, length: int, dst: np.ndarray) -> None:
    """``n`` runs of ``length`` bytes, ``step`` apart from byte ``first`` of
    tensor ``name`` of the mapped file, into ``dst``: one strided copy by
    the core, under its SIGBUS guard (a file truncated meanwhile raises
    FileChanged, never kills the process)."""
    view = mapped.view(name)  # the tensor's bytes, zero-copy
    # The widest unit dividing the geometry: the core copies by elements.
    unit = next(u for u in (8, 4, 2, 1) if first % u == 0 and step % u == 0 and length % u == 0)
    span = view[first:first + (n - 1) * step + length].view(_UNITS[unit][0])
    rows = np.lib.stride_tricks.as_strided(span, shape=(n, length // unit), strides=(step, unit), writeable=False)
    # One thread: the engine's workers and the node's other ranks use the rest.
    _core.convert(rows, _UNITS[unit][1], dst, _UNITS[unit][1], threads=1)
    mapped.release(name)  # its pages stay cached, out of this process's memory


def _read_ranges(source: Source, name: str, starts: np.ndarray, length: int, dst: np.ndarray) -> None:
    """``ReadBatch.add`` of one piece, run at once."""
    batch = ReadBatch()
    batch.add(source, name, starts, length, dst)
    batch.run()


def write_runs(fd: int, path: str, base: int, starts: np.ndarray, length: int, src: np.ndarray) -> int:
    """Write ``src`` (contiguous uint8, the runs back to back) at file offsets
    ``base + starts[i]``; returns the bytes written. Adjacent runs are one
    write; the rest are positioned writes by the core, the GIL released."""
    starts = np.ascontiguousarray(starts, np.int64)
    if len(starts) > 1 and length and (np.diff(starts) == length).all():
        starts, length = starts[:1], length * len(starts)  # one contiguous range
    try:
        return _core.write_runs(fd, base, starts, length, src)
    except OSError as e:
        raise with_context(SafetensorIOError, f"writing {path!r} failed: {e}", path=path) from e
