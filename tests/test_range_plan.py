"""The range planner of fastensors.sources: every wanted byte lands in its
destination (oracle: slices of the source buffer), requests stay within
their bound, neighbours are joined and large ranges split, memory is
bounded by the window."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastensors.sources import ranges

SOURCE = np.random.default_rng(5).integers(0, 256, 1 << 16, dtype=np.uint8)


def fetcher(log):
    def fetch(spans):
        log.append(list(spans))
        return [SOURCE[a:b].tobytes() for a, b in spans]
    return fetch


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, (1 << 16) - 1), st.integers(0, 5000)), max_size=20),
       st.integers(0, 3000), st.integers(1, 20000), st.integers(1, 50000))
def test_every_byte_lands_where_it_belongs(wants, gap, request_bytes, window):
    wants = [(off, min(n, (1 << 16) - off)) for off, n in wants]
    dsts = [np.zeros(n, np.uint8) for _, n in wants]
    reqs = ranges.plan([(d, off) for d, (off, _) in zip(dsts, wants)], gap=gap, request_bytes=request_bytes)
    log = []
    fetched = ranges.execute(reqs, fetcher(log), window_bytes=window)
    for d, (off, n) in zip(dsts, wants):
        assert d.tobytes() == SOURCE[off:off + n].tobytes()
    assert all(r.size <= request_bytes for r in reqs)
    assert fetched == sum(r.size for r in reqs)
    starts = [r.start for r in reqs]
    assert starts == sorted(starts)
    for group in log:  # a window's bytes, unless one request alone is over it
        assert len(group) == 1 or sum(b - a for a, b in group) <= window


def test_neighbours_join_and_large_ranges_split():
    a, b = np.zeros(100, np.uint8), np.zeros(100, np.uint8)
    joined = ranges.plan([(a, 0), (b, 150)], gap=64, request_bytes=1 << 20)
    assert [(r.start, r.end) for r in joined] == [(0, 250)]
    apart = ranges.plan([(a, 0), (b, 300)], gap=64, request_bytes=1 << 20)
    assert [(r.start, r.end) for r in apart] == [(0, 100), (300, 400)]
    big = np.zeros(1000, np.uint8)
    split = ranges.plan([(big, 10)], gap=0, request_bytes=300)
    assert [(r.start, r.end) for r in split] == [(10, 310), (310, 610), (610, 910), (910, 1010)]


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        ranges.plan([], gap=0, request_bytes=0)
    with pytest.raises(ValueError):
        ranges.plan([], gap=-1, request_bytes=10)
