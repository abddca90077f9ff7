"""torch tensors for an accelerator, read through a small ring of pinned host
buffers (docs/read_engine.md): the read engine fills half of the ring while
the copies out of the other half run on a side stream, so the file is never
held in pinned memory whole and the device copies overlap the reads."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from .. import _core
from ..errors import InvalidArgument

RING_BUFFERS = 4
BUFFER_BYTES = 64 << 20


def _chunks(file, wanted, buffer_bytes: int) -> List[List[Tuple[str, int, int, int, int]]]:
    """The ring's fills, in file order: each a list of (name, offset in the
    tensor, size, absolute file offset, offset in the buffer), at most
    ``buffer_bytes`` in all; tensors larger than a buffer are split."""
    fills: List[List[Tuple[str, int, int, int, int]]] = []
    current: List[Tuple[str, int, int, int, int]] = []
    used = 0
    for _, (name, _, _, begin, end) in wanted:
        at, left = 0, end - begin
        while left > 0:
            if used == buffer_bytes:
                fills.append(current)
                current, used = [], 0
            take = min(left, buffer_bytes - used)
            current.append((name, at, take, file.data_start + begin + at, used))
            used += take
            at += take
            left -= take
    if current:
        fills.append(current)
    return fills


def load_staged(file, wanted: Sequence[Tuple[str, tuple]], fw, device, *, buffers: int = RING_BUFFERS,
                buffer_bytes: int = BUFFER_BYTES) -> Dict[str, object]:
    """``{key: tensor on device}`` for ``wanted`` ((key, info) pairs of
    ``file``). On a CUDA device the ring is pinned and copies are
    asynchronous on a side stream, synchronized before returning; on other
    devices the same ring is copied synchronously."""
    torch = fw.torch
    if buffers < 2 or buffers % 2 or buffer_bytes <= 0:
        raise InvalidArgument(f"a staging ring needs an even number (>= 2) of buffers of > 0 bytes, got "
                              f"{buffers} x {buffer_bytes}")
    dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    cuda = dev.type == "cuda"
    dests = {name: torch.empty(end - begin, dtype=torch.uint8, device=dev) for _, (name, _, _, begin, end) in wanted}
    fills = _chunks(file, wanted, buffer_bytes)
    if fills:
        size = min(buffer_bytes, max(sum(c[2] for c in f) for f in fills))
        ring = [torch.empty(size, dtype=torch.uint8, pin_memory=cuda) for _ in range(min(buffers, len(fills)))]
        stream = torch.cuda.Stream(device=dev) if cuda else None
        done = [None] * len(ring)  # the event after the last copy out of each buffer
        half = max(1, len(ring) // 2)
        for first in range(0, len(fills), half):
            wave = list(range(first, min(first + half, len(fills))))
            plan = _core.ReadPlan()
            entries = []
            for k in wave:
                slot = k % len(ring)
                if done[slot] is not None:
                    done[slot].synchronize()  # its previous copies have left the buffer
                buf = ring[slot].numpy()
                entries.append([plan.read(file, offset, buf[at:at + n]) for _, _, n, offset, at in fills[k]])
            job = _core.ReadJob(plan)
            try:
                for k, fill_entries in zip(wave, entries):
                    for entry in fill_entries:  # this fill's bytes are in its buffer
                        job.wait_entry(entry)
                    slot = k % len(ring)
                    if cuda:
                        with torch.cuda.stream(stream):
                            for name, at_t, n, _, at in fills[k]:
                                dests[name][at_t:at_t + n].copy_(ring[slot][at:at + n], non_blocking=True)
                            done[slot] = torch.cuda.Event()
                            done[slot].record(stream)
                    else:
                        for name, at_t, n, _, at in fills[k]:
                            dests[name][at_t:at_t + n].copy_(ring[slot][at:at + n])
                job.wait()
            finally:
                job.close()
        if cuda:
            stream.synchronize()
    return {key: fw.from_uint8(dests[info[0]] if info[4] > info[3] else None, info[1], info[2], dev)
            for key, info in wanted}
