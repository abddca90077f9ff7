"""Sharing work across the ranks of a ``torch.distributed`` process group:
who does which piece (``assign``), every rank learning whether any rank
failed so all raise together instead of one hanging in the next collective
(``agree``), work done by rank 0 alone (``on_rank0``), and collectives whose
failure (a rank that died, a timeout) surfaces as ``RankFailed``
(``lost_ranks``).

Used by ``distributed`` and ``quant``, which are sibling layers: this is the
code they share. torch is imported only when a collective runs, so importing
this module never imports torch. No collective here waits forever if the
group was created with a timeout (``init_process_group(..., timeout=...)``)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Type, TypeVar

from ..errors import RankFailed

T = TypeVar("T")


def _dist():
    import torch.distributed as dist

    return dist


def assign(sizes: Sequence[int], world: int) -> List[int]:
    """The rank doing each piece of work of the given ``sizes``: largest
    first, to the least loaded rank (ties: the lower rank). Deterministic,
    so every rank computes the same answer without a collective."""
    load = [0] * world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += sizes[i]
    return owner


def agree(error: Optional[BaseException], group, lost: Optional[str] = None) -> None:
    """A collective every rank enters with its own error or None. Raises
    ``error`` on the rank that had it, and on the others RankFailed naming
    each failed rank and its error; returns only when no rank failed.
    With ``lost`` (what is being done), a failure of the collective itself
    raises RankFailed (``lost_ranks``) rather than the backend's error."""
    dist = _dist()
    every: List[object] = [None] * dist.get_world_size(group)
    with lost_ranks(lost) if lost else contextlib.nullcontext():
        dist.all_gather_object(every, None if error is None else f"{type(error).__name__}: {error}", group=group)
    if error is not None:
        raise error
    failed = [(r, e) for r, e in enumerate(every) if e is not None]
    if failed:
        raise RankFailed("; ".join(f"rank {r}: {e}" for r, e in failed))


def on_rank0(rank: int, group, work: Callable[[], T], expected: Tuple[Type[BaseException], ...],
             lost: Optional[str] = None) -> T:
    """``work()`` on rank 0 only; every rank then raises its error (an
    ``expected`` one raised by ``work``, RankFailed on the others) or
    returns rank 0's result. ``lost``: as for ``agree``."""
    dist = _dist()
    error, result = None, None
    if rank == 0:
        try:
            result = work()
        except expected as e:
            error = e
    agree(error, group, lost)
    box = [result]
    with lost_ranks(lost) if lost else contextlib.nullcontext():
        dist.broadcast_object_list(box, src=0, group=group)
    return box[0]


@contextlib.contextmanager
def lost_ranks(what: str) -> Iterator[None]:
    """Collectives inside that fail (gloo/NCCL report a peer that died, or
    the group's timeout passing, as RuntimeError) raise RankFailed instead,
    so callers handle one error type for "another rank is gone"."""
    try:
        yield
    except RankFailed:
        raise
    except RuntimeError as e:
        raise RankFailed(f"{what}: the process group failed (a rank died or the collective timed out): {e}") from e


__all__ = ["assign", "agree", "on_rank0", "lost_ranks"]
