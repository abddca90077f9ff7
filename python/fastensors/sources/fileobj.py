"""Bytes from a file object that has ``read`` and ``seek`` (an fsspec file, a
``BytesIO``, a socket-backed stream): read by ranges under a lock, the size
taken at open and every answer checked to be as long as asked."""

from __future__ import annotations

import io
import threading
from typing import List, Tuple

from ..errors import FileChanged, InvalidArgument, SafetensorError, SafetensorIOError, with_context


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
            size = fileobj.seek(0, io.SEEK_END)
            fileobj.seek(0)
        except Exception as e:  # whatever the object raises, the caller gets one type
            raise with_context(InvalidArgument, f"{label}: the file object cannot seek ({type(e).__name__}: {e})",
                               path=label) from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise with_context(InvalidArgument, f"{label}: the file object's seek() returned {size!r}, not a "
                               "position", path=label)
        self.size = size
        self.pin = {"size": self.size}

    def read_many(self, ranges: List[Tuple[int, int]]) -> List[bytes]:
        out = []
        with self._lock:
            for start, end in ranges:
                try:
                    self._f.seek(start)
                    data = _read_exact(self._f, end - start)
                except SafetensorError:
                    raise
                except Exception as e:
                    raise with_context(SafetensorIOError, f"{self.label}: reading bytes {start}-{end} from the file "
                                       f"object failed: {type(e).__name__}: {e}", path=self.label) from e
                if isinstance(data, str):
                    raise with_context(InvalidArgument, f"{self.label}: the file object is in text mode; open it "
                                       "with 'rb'", path=self.label)
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise with_context(InvalidArgument, f"{self.label}: the file object's read() returned "
                                       f"{type(data).__name__}, not bytes", path=self.label)
                if len(data) != end - start:
                    raise with_context(FileChanged, f"{self.label}: bytes {start}-{end} of a {self.size}-byte object "
                                       f"gave {len(data)} bytes: it changed since it was opened", path=self.label)
                out.append(bytes(data))
        return out

    def verify(self) -> None:
        with self._lock:
            try:
                size = self._f.seek(0, io.SEEK_END)
            except Exception as e:
                raise with_context(SafetensorIOError, f"{self.label}: the file object cannot seek any more: "
                                   f"{type(e).__name__}: {e}", path=self.label) from e
        if size != self.size:
            raise with_context(FileChanged, f"{self.label}: the object was {self.size} bytes at open and is {size} "
                               "now", path=self.label)

    def close(self) -> None:
        self._f = None


def _read_exact(f, n: int):
    """``read`` may return less than asked (raw streams); loop until ``n`` or EOF."""
    first = f.read(n)
    if first is None:
        return b""
    if not isinstance(first, (bytes, bytearray, memoryview)) or len(first) >= n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        more = f.read(n - got)
        if not isinstance(more, (bytes, bytearray, memoryview)) or not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
