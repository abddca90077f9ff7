"""The bytes of distributed saves and loads: every read goes through a
``ReadBatch`` and every write through ``write_runs``, so that how bytes
move is decided in one place. A batch gathers the pieces of a load into one
plan of the read engine, so that every file is read at once.

``bytes_requested()`` counts what this process asked to read: tests check
that each rank reads only the bytes its chunks need."""

from __future__ import annotations

import threading
from typing import Callable, List, Optional

import numpy as np

from .. import _core
from ..errors import SafetensorIOError, with_context

_lock = threading.Lock()
_requested = [0]

_UNITS = {8: (np.uint64, "U64"), 4: (np.uint32, "U32"), 2: (np.uint16, "U16"), 1: (np.uint8, "U8")}


def bytes_requested() -> int:
    """Bytes this process has asked a ``ReadBatch`` for so far."""
    return _requested[0]


class Source:
    """One checkpoint file open for reading: its mapping (every piece is
    copied from it), and a pread handle once a piece of irregular runs
    needs one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file = _core.File(path, "mmap")
        self._pread: Optional["_core.File"] = None

    def pread(self) -> "_core.File":
        if self._pread is None:
            self._pread = _core.File(self.path, "pread")
        return self._pread

    def close(self) -> None:
        self.file.close()
        if self._pread is not None:
            self._pread.close()


class ReadBatch:
    """Reads of many pieces run as one plan of the read engine.

    ``add`` records where each piece's bytes go; ``run`` reads them all. A
    piece that is one range, or evenly spaced runs of it (a column piece of
    a matrix: one run per row), is copied from the file's mapping by the
    core (one copy, strided for runs), after the engine's workers have made
    its span resident with parallel requests, at most ``WINDOW`` bytes ahead
    of the copies (the spans count in this process's memory until copied;
    spans already cached are not touched by the workers). A copy from a
    mapping of cached pages runs about 1.5 times as fast as a pread of them
    here, and a pread per row would cost more than the bytes it moves. Other
    pieces (boxes of 3-D tensors) are positioned reads by the same engine."""

    WINDOW = 64 << 20

    def __init__(self) -> None:
        self._reads: list = []
        self._copies: list = []
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
            if n == 1 or (steps == length).all():  # one range
                self._copies.append((source, name, base, int(starts[0]), 0, 1, n * length, dst))
            elif (steps == steps[0]).all() and steps[0] > 0:
                self._copies.append((source, name, base, int(starts[0]), int(steps[0]), n, length, dst))
            else:
                pread = source.pread()
                for i, s in enumerate(starts):
                    self._reads.append((pread, base + int(s), dst[i * length:(i + 1) * length]))
            self.nbytes += n * length
        if then is not None:
            self._after.append(then)

    def run(self) -> None:
        """Read everything added since the last run, then call back. Raises
        the engine's Io / FileChanged (a file that shrank)."""
        reads, copies, after, nbytes = self._reads, self._copies, self._after, self.nbytes
        self._reads, self._copies, self._after, self.nbytes = [], [], [], 0
        plan = _core.ReadPlan()
        covering = _prefetch_spans(plan, [(c[0], c[2] + c[3], c[2] + c[3] + (c[5] - 1) * c[4] + c[6])
                                          for c in copies])
        for file, offset, dst in reads:
            plan.read(file, offset, dst)
        job = _core.ReadJob(plan, window_bytes=self.WINDOW) if len(plan) else None
        try:
            for i in sorted(range(len(copies)), key=covering.__getitem__):
                if job is not None:
                    job.wait_entry(covering[i])
                _copy(*copies[i])
            if job is not None:
                job.wait()
        finally:
            if job is not None:
                job.close()
        with _lock:
            _requested[0] += nbytes
        for fn in after:
            fn()


def _prefetch_spans(plan, spans) -> List[int]:
    """Prefetch entries in ``plan`` covering ``spans`` ((source, begin,
    end)), in file order, overlapping spans of one file merged into one
    entry (two pieces of one stored tensor); the entry covering each span."""
    sources = {}
    for source, _, _ in spans:
        sources.setdefault(id(source), len(sources))
    order = sorted(range(len(spans)), key=lambda i: (sources[id(spans[i][0])], spans[i][1]))
    covering = [0] * len(spans)
    group: List[int] = []
    end = 0
    for i in order + [None]:
        if group and (i is None or spans[i][0] is not spans[group[0]][0] or spans[i][1] >= end):
            source, begin, _ = spans[group[0]]
            entry = plan.prefetch(source.file, begin, end - begin)
            for j in group:
                covering[j] = entry
            group = []
        if i is not None:
            end = max(end, spans[i][2]) if group else spans[i][2]
            group.append(i)
    return covering


def _copy(source: Source, name: str, base: int, first: int, step: int, n: int, length: int,
          dst: np.ndarray) -> None:
    """``n`` runs of ``length`` bytes, ``step`` apart from byte ``first`` of
    tensor ``name``, from the mapping into ``dst``: one copy by the core
    (strided for n > 1), under its SIGBUS guard (a file truncated meanwhile
    raises FileChanged, never kills the process)."""
    mapped = source.file
    view = mapped.view(name)  # the tensor's bytes, zero-copy
    # The widest unit dividing the geometry: the core copies by elements.
    unit = next(u for u in (8, 4, 2, 1) if first % u == 0 and step % u == 0 and length % u == 0)
    span = view[first:first + (n - 1) * step + length].view(_UNITS[unit][0])
    rows = np.lib.stride_tricks.as_strided(span, shape=(n, length // unit), strides=(max(step, length), unit),
                                           writeable=False)
    # One thread: the engine's workers and the node's other ranks use the
    # rest. Plain stores: the caller reads the tensor next, and streaming
    # stores into pages faulted in on the way ran 10-25% slower here.
    _core.convert(rows, _UNITS[unit][1], dst, _UNITS[unit][1], threads=1, stream=False)
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
