"""How remote sources are read: request sizes, parallelism, retries."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidArgument


@dataclass(frozen=True)
class RemoteOptions:
    """Tuning and fault policy of range reads from a URL or a file object.

    ``header_bytes``: the first request's size; a header that does not fit
    takes a second one. ``request_bytes``: the largest request (a tensor over
    it is fetched by several in parallel). ``gap_bytes``: neighbours closer
    than this share one request. ``window_bytes``: bytes in flight at once
    (the memory bound besides the destinations). ``concurrency``: requests in
    flight. ``retries``: attempts after the first for a transient error
    (connection dropped, timeout, 5xx, 429), waiting ``backoff_s`` doubled
    each time; ``deadline_s``: no read of one plan (retries included) runs
    longer. ``timeout_s``: a socket read that stalls this long fails (and is
    retried) — applied to HTTP(S) when ``storage_options`` set no client
    timeout. ``http_client``: "pooled" (HTTP(S) data requests on pooled
    connections read straight into the destination) or "fsspec" (every
    request through fsspec's aiohttp client, for its proxy and TLS
    settings)."""

    header_bytes: int = 64 * 1024
    request_bytes: int = 16 * 1024 * 1024
    gap_bytes: int = 64 * 1024
    window_bytes: int = 256 * 1024 * 1024
    concurrency: int = 16
    retries: int = 5
    backoff_s: float = 0.1
    deadline_s: float = 300.0
    timeout_s: float = 30.0
    http_client: str = "pooled"

    def __post_init__(self):
        if self.http_client not in ("pooled", "fsspec"):
            raise InvalidArgument(f"RemoteOptions.http_client must be \"pooled\" or \"fsspec\", not "
                                  f"{self.http_client!r}")
        for name in ("header_bytes", "request_bytes", "window_bytes", "concurrency"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"RemoteOptions.{name} must be a positive integer, not {value!r}")
        for name in ("gap_bytes", "retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"RemoteOptions.{name} must be a non-negative integer, not {value!r}")
        for name in ("backoff_s", "deadline_s", "timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:  # NaN too
                raise InvalidArgument(f"RemoteOptions.{name} must be a non-negative number, not {value!r}")
