"""The one place that turns byte ranges wanted into requests made.

A caller names (destination array, source offset) pairs; ``plan`` joins
neighbours whose gap is small (one request instead of several, the gap's
bytes read and dropped) and splits large ranges (so one tensor is fetched by
several requests at once); ``execute`` runs the requests a window at a time
(bounded memory) and copies each answer straight into its destinations."""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, Executor, wait
from typing import Callable, List, NamedTuple, Sequence, Tuple

import numpy as np

# One wanted range: a writable, contiguous uint8 destination and the source
# offset its first byte comes from (its length is the destination's).
Want = Tuple[np.ndarray, int]


class Piece(NamedTuple):
    dst: np.ndarray   # uint8, 1-d
    dst_at: int       # where in dst
    src_at: int       # where in the request's bytes
    size: int


class Request(NamedTuple):
    start: int
    end: int          # exclusive
    pieces: Tuple[Piece, ...]

    @property
    def size(self) -> int:
        return self.end - self.start


def plan(wants: Sequence[Want], *, gap: int, request_bytes: int) -> List[Request]:
    """Requests covering ``wants``, in source order. Ranges closer than ``gap``
    bytes share a request; no request is over ``request_bytes`` unless a
    join made it so (a join never grows a request past that bound)."""
    if request_bytes < 1 or gap < 0:
        raise ValueError("request_bytes must be >= 1 and gap >= 0")
    # Split first: each span is (start, end, dst, dst_at).
    spans = []
    for dst, offset in wants:
        n = int(dst.shape[0])
        at = 0
        while at < n:
            step = min(request_bytes, n - at)
            spans.append((offset + at, offset + at + step, dst, at))
            at += step
    spans.sort(key=lambda s: s[0])
    out: List[Request] = []
    cur_start = cur_end = None
    cur: list = []
    for start, end, dst, dst_at in spans:
        if cur and start <= cur_end + gap and max(end, cur_end) - cur_start <= request_bytes:
            cur_end = max(cur_end, end)
        else:
            if cur:
                out.append(_request(cur_start, cur_end, cur))
            cur_start, cur_end, cur = start, end, []
        cur.append((start, end, dst, dst_at))
    if cur:
        out.append(_request(cur_start, cur_end, cur))
    return out


def _request(start: int, end: int, spans: list) -> Request:
    return Request(start, end, tuple(Piece(dst, dst_at, s - start, e - s) for s, e, dst, dst_at in spans))


def windows(requests: Sequence[Request], window_bytes: int) -> List[List[Request]]:
    """Requests in groups of at most ``window_bytes`` (one request may be alone
    over it): the bytes of one group are in memory at once."""
    groups: List[List[Request]] = []
    size = 0
    for r in requests:
        if groups and size + r.size <= window_bytes:
            groups[-1].append(r)
            size += r.size
        else:
            groups.append([r])
            size = r.size
    return groups


def execute(requests: Sequence[Request], fetch: Callable[[List[Tuple[int, int]]], List[bytes]],
            *, window_bytes: int) -> int:
    """Fetch ``requests`` a window at a time with ``fetch`` (a list of
    (start, end) -> their bytes, each checked to be exactly that long by the
    source) and copy the bytes into the destinations. Returns bytes fetched."""
    total = 0
    for group in windows(requests, window_bytes):
        answers = fetch([(r.start, r.end) for r in group])
        for r, data in zip(group, answers):
            view = np.frombuffer(data, np.uint8)
            for p in r.pieces:
                p.dst[p.dst_at:p.dst_at + p.size] = view[p.src_at:p.src_at + p.size]
            total += len(data)
        del answers
    return total


def execute_into(requests: Sequence[Request], read_into: Callable[[int, int, memoryview], None],
                 pool: Executor) -> int:
    """Run ``requests`` on ``pool``, each answer read by ``read_into(start,
    end, view)`` straight into its destination when the request is one
    piece, else into a buffer of the request's size that is copied out (so
    memory beyond the destinations is at most the pool's workers times the
    largest request). The first error stops the requests not yet started and
    is raised. Returns bytes fetched."""
    return execute_many([(r, read_into) for r in requests], pool)


def execute_many(jobs: Sequence[Tuple[Request, Callable[[int, int, memoryview], None]]], pool: Executor) -> int:
    """``execute_into`` for requests of several sources on one pool, so that
    a checkpoint's shards share one bound on requests in flight."""
    def one(job) -> int:
        r, read_into = job
        p = r.pieces[0]
        if len(r.pieces) == 1 and p.src_at == 0 and p.size == r.size:
            read_into(r.start, r.end, memoryview(p.dst[p.dst_at:p.dst_at + p.size]))
        else:
            buf = np.empty(r.size, np.uint8)
            read_into(r.start, r.end, memoryview(buf))
            for q in r.pieces:
                q.dst[q.dst_at:q.dst_at + q.size] = buf[q.src_at:q.src_at + q.size]
        return r.size

    futures = [pool.submit(one, job) for job in jobs]
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    for f in pending:
        f.cancel()
    wait(pending)  # nothing still writes into the destinations once this returns
    for f in futures:
        if f.done() and not f.cancelled() and f.exception() is not None:
            raise f.exception()
    return sum(f.result() for f in futures)
