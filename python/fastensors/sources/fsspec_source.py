"""Bytes from a URL through fsspec (``http(s)://``, ``s3://``, ``gs://``,
``hf://``, any protocol fsspec knows). docs/remote.md states the rules.

- The object is pinned at open: its size and whatever version fsspec reports
  (ETag, Last-Modified, ...). HTTP range requests carry ``If-Match`` (or
  ``If-Unmodified-Since``), so a changed object answers 412 and each answer
  is known to be of the pinned version; other protocols are checked again
  after each read (``verify``).
- Every answer must be exactly the bytes asked for: a server that ignores
  ``Range`` (the whole object), truncates, or sends more is an error.
- Transient failures (dropped connections, timeouts, 5xx, 429) are retried
  with doubling backoff, within a deadline."""

from __future__ import annotations

import errno as _errno
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Tuple

from ..errors import (BadRangeResponse, FileChanged, FileNotFound, InvalidArgument, RemoteError, RemoteTimeout,
                      SafetensorError, with_context)
from .http_pool import HttpPool, Transient, request_headers
from .options import RemoteOptions

_VERSION_FIELDS = ("ETag", "etag", "Last-Modified", "LastModified", "last_modified", "mtime", "VersionId",
                   "version_id", "generation", "md5Hash")
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _fsspec():
    try:
        import fsspec
    except ImportError:  # the optional extra
        raise InvalidArgument("reading URLs needs fsspec: pip install 'fastensors[remote]'") from None
    return fsspec


class FsspecSource:
    """Range reads of one object at ``url``. ``storage_options`` go to fsspec
    (credentials, endpoints, client settings)."""

    def __init__(self, url: str, storage_options: Optional[dict] = None, options: Optional[RemoteOptions] = None,
                 fs=None, path: Optional[str] = None):
        self.label = url
        self.options = options or RemoteOptions()
        if fs is None:
            fs, path = url_to_fs(url, storage_options, self.options)
        self.fs, self.path = fs, path
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self._http = protocol in ("http", "https")
        info = self._retrying(lambda: self._info(), f"{url}: metadata")
        if info.get("type") == "directory":
            raise with_context(InvalidArgument, f"{url} is a directory, not a safetensors file", path=url)
        size = info.get("size")
        if size is None:
            raise with_context(RemoteError, f"{url}: the server did not say the object's size (no Content-Length)",
                               path=url)
        self.size = int(size)
        self.pin = {k: info[k] for k in _VERSION_FIELDS if info.get(k) is not None}
        self.pin["size"] = self.size
        self._headers: Dict[str, str] = {}
        etag = info.get("ETag")
        if self._http and etag and not str(etag).startswith("W/"):
            self._headers["If-Match"] = etag
        elif self._http and info.get("Last-Modified"):
            self._headers["If-Unmodified-Since"] = info["Last-Modified"]
        self.conditional = bool(self._headers)
        self._async = bool(getattr(fs, "async_impl", False))
        self._pool: Optional[ThreadPoolExecutor] = None
        self._http_pool: Optional[HttpPool] = None
        if self._http and self.options.http_client == "pooled":
            target = info.get("url") or url  # after redirects
            self._http_pool = HttpPool(str(target), url, self.options.concurrency, self.options.timeout_s,
                                       {**request_headers(fs), **self._headers})
        self.requests = 0        # made, retries included
        self.bytes_received = 0  # in answers accepted

    # -- metadata ----------------------------------------------------------
    def _info(self) -> dict:
        self.fs.invalidate_cache(self.path)
        return self.fs.info(self.path)

    def verify(self) -> None:
        """Raise FileChanged when the object's size or version differs from the pin."""
        info = self._retrying(lambda: self._info(), f"{self.label}: metadata")
        now = {k: info[k] for k in _VERSION_FIELDS if info.get(k) is not None}
        now["size"] = int(info.get("size") or -1)
        if now != self.pin:
            raise with_context(FileChanged, f"{self.label} changed while open: {self.pin} at open, {now} now; "
                               "reopen it", path=self.label)

    # -- ranges ------------------------------------------------------------
    @property
    def direct(self) -> bool:
        """True when ``read_into`` reads answers straight into destinations."""
        return self._http_pool is not None

    def executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="fastensors-remote")
        return self._pool

    def read_into(self, start: int, end: int, view: memoryview) -> None:
        """Bytes [start, end) into ``view`` on a pooled connection; transient
        failures retried with doubling backoff within the deadline."""
        if not 0 <= start <= end <= self.size or len(view) != end - start:
            raise with_context(InvalidArgument, f"{self.label}: bytes {start}-{end} are outside the "
                               f"{self.size}-byte object", path=self.label)
        if start == end:
            return
        deadline = time.monotonic() + self.options.deadline_s
        delay = self.options.backoff_s
        for attempt in range(self.options.retries + 1):
            self.requests += 1
            try:
                self._http_pool.read_into(start, end, self.size, view, deadline)
                self.bytes_received += end - start
                return
            except Transient as e:
                last = e
            if time.monotonic() >= deadline:
                raise self._timeout((start, end))
            if attempt == self.options.retries:
                raise with_context(RemoteError, f"{self.label}: bytes {start}-{end} failed after {attempt + 1} "
                                   f"attempts: {last}", path=self.label)
            if time.monotonic() + delay >= deadline:
                raise self._timeout((start, end))
            time.sleep(delay)
            delay *= 2

    def read_many(self, ranges: List[Tuple[int, int]]) -> List[bytes]:
        """The bytes of each (start, end), in order; retried, checked."""
        if self._http_pool is not None:
            out = []
            for start, end in ranges:
                buf = bytearray(max(end - start, 0))
                self.read_into(start, end, memoryview(buf))
                out.append(bytes(buf))
            return out
        for start, end in ranges:
            if not 0 <= start <= end <= self.size:
                raise with_context(InvalidArgument, f"{self.label}: bytes {start}-{end} are outside the "
                                   f"{self.size}-byte object", path=self.label)
        out: List[Optional[bytes]] = [None] * len(ranges)
        pending = [i for i, (s, e) in enumerate(ranges) if s < e]
        for i, (s, e) in enumerate(ranges):
            if s == e:
                out[i] = b""
        deadline = time.monotonic() + self.options.deadline_s
        delay = self.options.backoff_s
        attempt = 0
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout(ranges[pending[0]])
            answers = self._fetch([ranges[i] for i in pending], left)
            self.requests += len(pending)
            again = []
            last = None
            for i, answer in zip(pending, answers):
                if isinstance(answer, BaseException):
                    err = self._classify(answer, ranges[i])
                    if err is not None:
                        raise err from answer
                    again.append(i)
                    last = answer
                else:
                    try:
                        out[i] = self._checked(answer, ranges[i])
                    except BadRangeResponse:
                        if not self.conditional:
                            self.verify()  # a changed object is the likelier cause: say FileChanged
                        raise
            pending = again
            if pending:
                attempt += 1
                if attempt > self.options.retries:
                    s, e = ranges[pending[0]]
                    raise with_context(RemoteError, f"{self.label}: bytes {s}-{e} failed after "
                                       f"{attempt} attempts: {type(last).__name__}: {last}", path=self.label) from last
                if time.monotonic() + delay >= deadline:
                    raise self._timeout(ranges[pending[0]])
                time.sleep(delay)
                delay *= 2
        return out  # type: ignore[return-value]

    def _fetch(self, ranges: List[Tuple[int, int]], timeout: float) -> list:
        """One attempt at every range; an exception in the place of a failed one."""
        if self._async:
            from fsspec.asyn import sync
            kw = {"headers": dict(self._headers)} if self._headers else {}
            try:
                return sync(self.fs.loop, self.fs._cat_ranges, [self.path] * len(ranges), [r[0] for r in ranges],
                            [r[1] for r in ranges], batch_size=self.options.concurrency, on_error="return",
                            timeout=timeout, **kw)
            except Exception as e:  # the whole batch timed out or failed
                return [e] * len(ranges)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="fastensors-remote")

        def one(r):
            try:
                return self.fs.cat_file(self.path, start=r[0], end=r[1])
            except Exception as e:
                return e
        return list(self._pool.map(one, ranges, timeout=timeout))

    def _checked(self, data, r: Tuple[int, int]) -> bytes:
        start, end = r
        want = end - start
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise with_context(BadRangeResponse, f"{self.label}: bytes {start}-{end}: the answer is "
                               f"{type(data).__name__}, not bytes", path=self.label)
        got = len(data)
        if got != want:
            if got == self.size:
                why = f"the server ignored Range and sent the whole {got}-byte object"
            elif got < want:
                why = f"the answer was cut short: {got} bytes"
            else:
                why = f"the answer has {got} bytes, more than asked"
            raise with_context(BadRangeResponse, f"{self.label}: bytes {start}-{end} ({want} bytes) asked; {why}; "
                               "nothing of it was used", path=self.label)
        self.bytes_received += got
        return bytes(data)

    def _classify(self, e: BaseException, r: Tuple[int, int]) -> Optional[SafetensorError]:
        """The error to raise for ``e``, or None when it is worth retrying."""
        start, end = r
        where = f"{self.label}: bytes {start}-{end}"
        if isinstance(e, SafetensorError):
            return e
        status = getattr(e, "status", None) or getattr(e, "code", None)
        if isinstance(status, int):
            if status in (412, 416):
                return with_context(FileChanged, f"{where}: the object changed since it was opened "
                                    f"(HTTP {status}); reopen it", path=self.label)
            if status in _TRANSIENT_STATUS:
                return None
            if status == 404:
                return _not_found(self.label)
            return with_context(RemoteError, f"{where}: HTTP {status}: {e}", path=self.label)
        if isinstance(e, FileNotFoundError):
            return _not_found(self.label)
        if isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError)):
            return with_context(RemoteError, f"{where}: {type(e).__name__}: {e}", path=self.label)
        if isinstance(e, (OSError, TimeoutError, ConnectionError, EOFError)):
            return None
        name = type(e).__module__ + "." + type(e).__name__
        if name.startswith(("aiohttp.", "asyncio.")) or "Timeout" in name:
            return None
        return with_context(RemoteError, f"{where}: {type(e).__name__}: {e}", path=self.label)

    def _timeout(self, r: Tuple[int, int]) -> RemoteTimeout:
        return with_context(RemoteTimeout, f"{self.label}: bytes {r[0]}-{r[1]} not read within the "
                            f"{self.options.deadline_s} s deadline", path=self.label)

    def _retrying(self, call, what: str):
        """``call()`` retried on transient errors within the deadline."""
        deadline = time.monotonic() + self.options.deadline_s
        delay = self.options.backoff_s
        for attempt in range(self.options.retries + 1):
            try:
                return call()
            except Exception as e:
                err = self._classify(e, (0, 0))
                if err is not None:
                    if isinstance(err, RemoteError) and not isinstance(err, FileNotFound):
                        err = with_context(RemoteError, f"{what}: {type(e).__name__}: {e}", path=self.label)
                    raise err from e
                if attempt == self.options.retries or time.monotonic() + delay >= deadline:
                    raise with_context(RemoteError, f"{what} failed after {attempt + 1} attempts: "
                                       f"{type(e).__name__}: {e}", path=self.label) from e
                time.sleep(delay)
                delay *= 2

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._http_pool is not None:
            self._http_pool.close()


def _not_found(url: str) -> FileNotFound:
    err = FileNotFound(_errno.ENOENT, "No such file or directory", url)
    err.path = url
    return err


def url_to_fs(url: str, storage_options: Optional[dict], options: RemoteOptions):
    """fsspec's file system and path for ``url``; an HTTP client without a
    timeout in ``storage_options`` gets ``options.timeout_s`` on socket reads."""
    fsspec = _fsspec()
    so = dict(storage_options or {})
    protocol = url.split("://", 1)[0].lower()
    if protocol in ("http", "https") and "timeout" not in so.get("client_kwargs", {}):
        import aiohttp
        client = dict(so.get("client_kwargs", {}))
        client["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=options.timeout_s,
                                                  sock_read=options.timeout_s)
        so["client_kwargs"] = client
    try:
        return fsspec.core.url_to_fs(url, **so)
    except (ImportError, ValueError) as e:
        raise with_context(InvalidArgument, f"{url}: fsspec cannot open this URL: {e}", path=url) from None
