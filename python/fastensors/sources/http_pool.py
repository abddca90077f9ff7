"""HTTP(S) range requests on pooled ``http.client`` connections, each answer
read straight into its destination (``readinto``: no intermediate bytes, the
GIL released while the socket is read). fsspec's aiohttp client parses every
body on one event-loop thread and hands back ``bytes``, which capped
loopback loads at about half of what parallel curl reaches
(docs/benchmarks.md, "Remote reads"); metadata still comes from fsspec.

Each answer is checked before a byte of it is used: status 206 with the
Content-Range asked for and a Content-Length equal to the range, or 200 only
when the whole object was asked for."""

from __future__ import annotations

import http.client
import queue
import re
import ssl
import time
from typing import Dict
from urllib.parse import urlsplit

from ..errors import BadRangeResponse, FileChanged, InvalidArgument, RemoteError, with_context

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Transient(Exception):
    """A failure worth retrying (the caller decides how often)."""


class HttpPool:
    """Connections to one origin, at most ``size`` of them idle."""

    def __init__(self, url: str, label: str, size: int, timeout_s: float, headers: Dict[str, str]):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise with_context(InvalidArgument, f"{label}: not an http(s) URL with a host", path=label)
        self.label = label
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout_s or None
        self._headers = dict(headers)
        self._idle: "queue.LifoQueue[http.client.HTTPConnection]" = queue.LifoQueue(maxsize=size)
        self._context = ssl.create_default_context() if self._https else None

    def _connection(self) -> http.client.HTTPConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            if self._https:
                return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout,
                                                   context=self._context)
            return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _release(self, conn: http.client.HTTPConnection) -> None:
        try:
            self._idle.put_nowait(conn)
        except queue.Full:
            conn.close()

    def read_into(self, start: int, end: int, size: int, view: memoryview, deadline: float = float("inf")) -> None:
        """Fill ``view`` (end - start bytes) with bytes [start, end) of the
        object of ``size`` bytes. Raises Transient (also when ``deadline``, a
        ``time.monotonic()`` value, passes mid-body: a server dripping bytes
        slower than the socket timeout cannot hold a read forever), or a
        typed error."""
        want = end - start
        conn = self._connection()
        reusable = False
        try:
            headers = dict(self._headers)
            headers["Range"] = f"bytes={start}-{end - 1}"
            headers["Accept-Encoding"] = "identity"
            try:
                conn.request("GET", self._target, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, bad status line
                raise Transient(f"{type(e).__name__}: {e}") from e
            try:
                self._check(resp, start, end, size)
                # The body is read from the response's buffered socket file
                # one receive at a time (readinto1), so the deadline is seen
                # between receives; Content-Length was checked to be `want`,
                # so these are exactly the response's bytes.
                fp = resp.fp
                got = 0
                while got < want:
                    if time.monotonic() > deadline:
                        raise Transient(f"the deadline passed after {got} of {want} bytes")
                    try:
                        n = fp.readinto1(view[got:])
                    except (OSError, http.client.HTTPException) as e:
                        raise Transient(f"{type(e).__name__} after {got} of {want} bytes: {e}") from e
                    if not n:
                        raise Transient(f"the connection ended after {got} of {want} bytes")
                    got += n
                resp.length = 0
                reusable = not resp.will_close
            finally:
                resp.close()  # the connection itself stays open when reusable
        finally:
            if reusable:
                self._release(conn)
            else:
                conn.close()

    def _check(self, resp: http.client.HTTPResponse, start: int, end: int, size: int) -> None:
        where = f"{self.label}: bytes {start}-{end}"
        status = resp.status
        if status in (412, 416):
            raise with_context(FileChanged, f"{where}: the object changed since it was opened (HTTP {status}); "
                               "reopen it", path=self.label)
        if status in _TRANSIENT_STATUS:
            resp.read()
            raise Transient(f"HTTP {status}")
        if status == 404:
            raise with_context(FileChanged, f"{where}: the object is gone since it was opened (HTTP 404)",
                               path=self.label)
        length = resp.getheader("Content-Length")
        if status == 200:
            if start == 0 and end == size and length == str(size):
                return  # the whole object, asked for
            raise with_context(BadRangeResponse, f"{where}: the server ignored Range and sent the whole object "
                               f"(HTTP 200, Content-Length {length}); nothing of it was used", path=self.label)
        if status != 206:
            raise with_context(RemoteError, f"{where}: HTTP {status} {resp.reason}", path=self.label)
        m = _CONTENT_RANGE.match(resp.getheader("Content-Range", "") or "")
        if not m or int(m.group(1)) != start or int(m.group(2)) != end - 1 or \
                (m.group(3) != "*" and int(m.group(3)) != size):
            raise with_context(BadRangeResponse, f"{where}: the answer is for {resp.getheader('Content-Range')!r}, "
                               f"not bytes {start}-{end - 1}/{size}; nothing of it was used", path=self.label)
        if length != str(end - start):
            more = length is not None and length.isdigit() and int(length) > end - start
            raise with_context(BadRangeResponse, f"{where}: Content-Length {length} for a {end - start}-byte range"
                               f"{' (more than asked)' if more else ''}; nothing of it was used", path=self.label)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def request_headers(fs) -> Dict[str, str]:
    """Headers an fsspec HTTPFileSystem was given (``headers`` in its request
    or client kwargs: authorization, cookies), for the pooled requests too."""
    out: Dict[str, str] = {}
    for source in (getattr(fs, "client_kwargs", None) or {}, getattr(fs, "kwargs", None) or {}):
        h = source.get("headers") if isinstance(source, dict) else None
        if isinstance(h, dict):
            out.update({str(k): str(v) for k, v in h.items()})
    return out


__all__ = ["HttpPool", "Transient", "request_headers"]
