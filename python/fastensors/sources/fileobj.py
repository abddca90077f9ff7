"""Bytes from a file object that has ``read`` and ``seek`` (an fsspec file, a
``BytesIO``, a socket-backed stream): read by ranges under a lock, the size
taken at open and every answer checked to be as long as asked."""

from __future__ import annotations

import io
import threading
from typing import List, Tuple

from ..errors import FileChanged, InvalidArgument, with_context


class FileObjectSource:
    """Range reads from ``fileobj`` (its position is moved; restored at close
    is not promised). ``label`` names it in errors."""

    conditional = False  # no per-request check that the object is unchanged

    def __init__(self, fileobj, label: str):
        for attr in ("read", "seek"):
            if not callable(getattr(fileobj, attr, None)):
                raise InvalidArgument(f"{label}: a file object needs read() and seek(); {type(fileobj).__name__} "
                                      f"has no {attr}()")
        self._f = fileobj
        self.label = label
        self._lock = threading.Lock()
        try:
            self.size = int(fileobj.seek(0, io.SEEK_END))
            fileobj.seek(0)
        except (OSError, ValueError, TypeError) as e:
            raise InvalidArgument(f"{label}: the file object cannot seek ({e})") from None
        self.pin = {"size": self.size}

    def read_many(self, ranges: List[Tuple[int, int]]) -> List[bytes]:
        out = []
        with self._lock:
            for start, end in ranges:
                self._f.seek(start)
                data = _read_exact(self._f, end - start)
                if isinstance(data, str):
                    raise InvalidArgument(f"{self.label}: the file object is in text mode; open it with 'rb'")
                if len(data) != end - start:
                    raise with_context(FileChanged, f"{self.label}: bytes {start}-{end} of a {self.size}-byte object "
                                       f"gave {len(data)} bytes: it changed since it was opened", path=self.label)
                out.append(bytes(data))
        return out

    def verify(self) -> None:
        with self._lock:
            size = self._f.seek(0, io.SEEK_END)
        if size != self.size:
            raise with_context(FileChanged, f"{self.label}: the object was {self.size} bytes at open and is {size} "
                               "now", path=self.label)

    def close(self) -> None:
        self._f = None


def _read_exact(f, n: int):
    """``read`` may return less than asked (raw streams); loop until ``n`` or EOF."""
    first = f.read(n)
    if first is None or isinstance(first, str) or len(first) == n or not first:
        return first if first is not None else b""
    parts = [first]
    got = len(first)
    while got < n:
        more = f.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
