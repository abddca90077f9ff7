"""Tensor bytes through the C++ read engine (docs/read_engine.md).

Mapped files are prefetched in place: the engine makes their pages resident
with parallel requests, and tensors stay zero-copy views of the mapping.
Files opened with the pread backend are read into fresh arrays by the same
engine. ``ReadAhead`` serves loops that ask for one tensor at a time: once
two requests follow each other in file order or in name order, the rest of
that order is read ahead of the consumer, a bounded window at a time."""

from __future__ import annotations

import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import _core
from ..errors import SafetensorError
from ..sources import RangeFile, read_arrays as read_remote

# One byte range of an open file: (_core.File, absolute offset, size).
Range = Tuple[object, int, int]

# How far read-ahead runs in front of a get_tensor loop: enough to keep the
# storage busy, small next to the memory of a machine that loads models.
READ_AHEAD_BYTES = 1 << 30
# A lone tensor at least this large is itself read by several requests.
_LARGE = 4 << 20


def memory_budget() -> int:
    """Bytes a prefetch may make resident at once: half of the memory the
    kernel reports available, so that loading a checkpoint larger than memory
    does not evict its own first part before it is used."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 62


def prefetch(ranges: Sequence[Range]) -> Optional[object]:
    """Make the mapped bytes of ``ranges`` resident and wait (in order, up to
    ``memory_budget()`` bytes; the rest is read when touched); returns the
    job's ``ReadStats`` (None when there was nothing to do). Raises ``Io`` or
    ``FileChanged`` (the file shrank) naming the file and offset. Ranges of
    files read by ranges have nothing to make resident and are skipped."""
    plan = _core.ReadPlan()
    budget = memory_budget()
    for file, offset, size in ranges:
        if size > budget:
            break
        if size and not isinstance(file, RangeFile):
            plan.prefetch(file, offset, size)
            budget -= size
    return run_plan(plan)


def run_plan(plan) -> Optional[object]:
    """Execute ``plan`` and wait; its ``ReadStats``, or None for an empty plan."""
    if not len(plan):
        return None
    job = _core.ReadJob(plan)
    try:
        job.wait()
        return job.stats()
    finally:
        job.close()


def read_into(file, pieces: Sequence[Tuple[int, np.ndarray]]) -> None:
    """Fill each uint8 array of ``pieces`` ((absolute offset, array)) with
    the bytes of ``file`` there, by one plan, and wait."""
    plan = _core.ReadPlan()
    for offset, arr in pieces:
        if arr.size:
            plan.read(file, offset, arr)
    run_plan(plan)


def read_arrays(ranges: Sequence[Range]) -> List[np.ndarray]:
    """The bytes of ``ranges`` as new uint8 arrays, read in parallel: local
    files by the read engine, files read by ranges (URLs, file objects) by
    the range plans of ``fastensors.sources``."""
    remote = [i for i, r in enumerate(ranges) if isinstance(r[0], RangeFile)]
    if remote:
        out: List[np.ndarray] = [None] * len(ranges)  # type: ignore[list-item]
        for i, arr in zip(remote, read_remote([ranges[i] for i in remote])):
            out[i] = arr
        local = [i for i in range(len(ranges)) if out[i] is None]
        for i, arr in zip(local, read_arrays([ranges[i] for i in local]) if local else []):
            out[i] = arr
        return out
    out = [np.empty(size, np.uint8) for _, _, size in ranges]
    plan = _core.ReadPlan()
    for (file, offset, size), arr in zip(ranges, out):
        if size:
            plan.read(file, offset, arr)
    run_plan(plan)
    return out


class ReadAhead:
    """Reads ahead of a consumer that asks for tensors one by one.

    ``orders``: the orders a consumer is likely to follow (file order, sorted
    names), each a list of keys; ``locate(key)`` gives the key's mapped
    ``Range``. ``touch(key)`` is called before the consumer builds the
    tensor: it returns once the tensor's bytes are resident (raising the
    engine's errors), and, when this request follows the previous one in one
    of the orders, starts reading the rest of that order ahead, at most
    ``window`` bytes in front. Off the pattern, a large tensor is still read
    by several requests at once."""

    def __init__(self, orders: Callable[[], Sequence[Sequence[str]]], locate: Callable[[str], Range],
                 window: int = READ_AHEAD_BYTES):
        self._orders_fn = orders
        self._orders: Optional[List[Dict[str, int]]] = None
        self._lists: Optional[List[Sequence[str]]] = None
        self._locate = locate
        self._window = window
        self._lock = threading.Lock()
        self._job = None
        self._positions: Dict[str, int] = {}
        self._next = 0
        self._last: Optional[str] = None

    def _order_maps(self):
        if self._orders is None:
            try:
                self._lists = [list(o) for o in self._orders_fn()]
            except SafetensorError:
                # Finding the orders met a broken shard: no read-ahead; the
                # consumer meets the error itself if it gets there.
                self._lists = []
            self._orders = [{k: i for i, k in enumerate(o)} for o in self._lists]
        return self._orders, self._lists

    def touch(self, key: str) -> None:
        with self._lock:
            job, pos = self._follow(key)
            self._last = key
        if job is not None:
            try:
                job.wait_entry(pos)
                return
            except SafetensorError:
                if job is self._job:
                    raise
                # Another thread broke the pattern and cancelled the job: read
                # this tensor alone (a real error shows up again there).
        file, offset, size = self._locate(key)
        if size >= _LARGE:
            prefetch([(file, offset, size)])

    def _follow(self, key: str):
        """(job, entry) that covers ``key``, starting one when ``key``
        follows the previous request; (None, 0) otherwise. Under the lock."""
        if self._job is not None:
            pos = self._positions.get(key)
            if pos is not None and pos >= self._next:
                self._next = pos + 1
                return self._job, pos
            self._stop()
        if self._last is None:
            return None, 0
        maps, lists = self._order_maps()
        for index, keys in zip(maps, lists):
            at, prev = index.get(key), index.get(self._last)
            if at is None or prev is None or at != prev + 1:
                continue
            job = self._start(keys[at:], 1)
            return (job, 0) if job is not None else (None, 0)
        return None, 0

    def expect(self, keys: Sequence[str]) -> None:
        """Start reading ``keys`` ahead, in this order, whatever came before."""
        with self._lock:
            self._stop()
            self._start(list(keys), 0)

    def _start(self, ahead: Sequence[str], first: int):
        """A job over ``ahead``; the consumer is at entry ``first``. Under the lock."""
        plan = _core.ReadPlan()
        positions = {}
        try:
            for k in ahead:
                file, offset, size = self._locate(k)
                positions[k] = plan.prefetch(file, offset, size)
            self._job = _core.ReadJob(plan, window_bytes=self._window)
        except SafetensorError:
            return None  # a shard that does not open, or an unusual plan: no read-ahead
        self._positions = positions
        self._next = first
        return self._job

    def _stop(self) -> None:
        job, self._job = self._job, None
        self._positions = {}
        self._next = 0
        if job is not None:
            job.cancel()  # a thread still waiting on it gets its error; the job is freed with the last reference

    def close(self) -> None:
        with self._lock:
            job, self._job = self._job, None
            self._positions = {}
        if job is not None:
            job.close()
