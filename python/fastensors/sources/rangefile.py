"""A safetensors file read by byte ranges from a source (a file object or a
URL): the header from one request (two when it is larger than the first),
tensors through the range plans of ``ranges``. It offers the parts of the
core ``File`` handle that ``safe_open`` uses, so the reader is the same."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import _core
from ..errors import InvalidArgument, TensorNotFound, with_context
from . import ranges as _ranges
from .options import RemoteOptions


class RangeFile:
    """One safetensors file over ``source`` (``read_many``, ``verify``,
    ``size``, ``label``, ``conditional``). Validated as strictly as a local
    file: the same core parser checks the header against the object's size."""

    backend = "ranges"

    def __init__(self, source, options: Optional[RemoteOptions] = None):
        self.source = source
        self.options = options or RemoteOptions()
        self.path = source.label
        self.file_size = source.size
        try:
            first, = source.read_many([(0, min(source.size, self.options.header_bytes))])
            n = _core.header_length(first[:8], source.size, source.label)
            if 8 + n > len(first):  # a header larger than the first request
                rest, = source.read_many([(len(first), 8 + n)])
                first = first + rest
            self._infos, self._metadata, self.data_start = _core.parse_header(first[8:8 + n], source.size,
                                                                            source.label)
        except BaseException:
            source.close()
            raise
        self.header_size = n
        self._by_name: Dict[str, tuple] = {i[0]: i for i in self._infos}
        self.closed = False

    # -- the header, as _core.File ------------------------------------------
    def keys(self) -> List[str]:
        return sorted(self._by_name)

    def offset_keys(self) -> List[str]:
        return [i[0] for i in self._infos]

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def metadata(self) -> Optional[Dict[str, str]]:
        return None if self._metadata is None else dict(self._metadata)

    def info(self, name: str) -> tuple:
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise with_context(TensorNotFound, f"tensor '{name}' not found in {self.path}", tensor=name,
                               path=self.path) from None

    def infos(self) -> list:
        return list(self._infos)

    # -- data ------------------------------------------------------------------
    def read_into(self, name: str, offset: int, out: np.ndarray) -> None:
        """Bytes of tensor ``name`` from ``offset`` into the uint8 array ``out``."""
        self._check_open()
        _, _, _, begin, end = self.info(name)
        if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1 or not out.flags.writeable \
                or not out.flags.c_contiguous:
            raise InvalidArgument("out must be a writable, contiguous 1-d uint8 array")
        if offset < 0 or offset > end - begin or out.shape[0] > end - begin - offset:
            raise with_context(InvalidArgument, f"read of {out.shape[0]} bytes at {offset} is outside the tensor",
                               tensor=name, path=self.path)
        self.read_wants([(out, self.data_start + begin + offset)])

    def read_wants(self, wants: Sequence[_ranges.Want]) -> int:
        """Fill each (dst, offset) from the source with coalesced, parallel
        requests; the object is checked unchanged afterwards when its answers
        are not conditional. Returns bytes fetched."""
        self._check_open()
        o = self.options
        reqs = _ranges.plan(wants, gap=o.gap_bytes, request_bytes=o.request_bytes)
        if getattr(self.source, "direct", False):
            got = _ranges.execute_into(reqs, self.source.read_into, self.source.executor())
        else:
            got = _ranges.execute(reqs, self.source.read_many, window_bytes=o.window_bytes)
        if reqs and not self.source.conditional:
            self.source.verify()
        return got

    def _check_open(self) -> None:
        if self.closed:
            raise with_context(InvalidArgument, "the file is closed", path=self.path)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.source.close()


def read_arrays(items: Sequence[Tuple[RangeFile, int, int]]) -> List[np.ndarray]:
    """Fresh uint8 arrays of (file, absolute offset, size) ranges; files are
    read concurrently (pooled HTTP files with their requests on one pool)."""
    arrays = [np.empty(size, np.uint8) for _, _, size in items]
    by_file: Dict[int, Tuple[RangeFile, list]] = {}
    for (f, offset, _), arr in zip(items, arrays):
        by_file.setdefault(id(f), (f, []))[1].append((arr, offset))
    groups = list(by_file.values())
    direct = [g for g in groups if getattr(g[0].source, "direct", False)]
    if len(direct) > 1:  # pooled HTTP: every shard's requests on one pool, one bound in flight
        jobs = []
        for f, wants in direct:
            f._check_open()
            o = f.options
            jobs += [(r, f.source.read_into) for r in _ranges.plan(wants, gap=o.gap_bytes,
                                                                   request_bytes=o.request_bytes)]
        first = direct[0][0]
        _ranges.execute_many(jobs, first.source.executor())
        done = {id(g[0]) for g in direct}
        groups = [g for g in groups if id(g[0]) not in done]
    if len(groups) == 1:
        f, wants = groups[0]
        f.read_wants(wants)
    elif groups:
        with ThreadPoolExecutor(min(8, len(groups)), thread_name_prefix="fastensors-shards") as pool:
            for fut in [pool.submit(f.read_wants, wants) for f, wants in groups]:
                fut.result()
    return arrays
