"""``convert_file`` split across the ranks of a process group (under
torchrun): each rank converts its share of a sharded checkpoint's shards
into the staging directory rank 0 opened, and rank 0 commits the set once
every rank has succeeded. The output is the one-process ``convert_file``'s,
file for file."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch.distributed as dist

from ..checkpoint.convert_file import (
    ConversionReport,
    _convert_one,
    _durable,
    convert_file as _convert_file,
    finish_directory,
    open_directory_set,
    plan_directory,
)
from .._util import ranks
from .._util.patterns import compile_one
from ..errors import SafetensorError, UnsupportedConversion
from ..format.cast import FLOAT_CODES, dtype_code

_EXPECTED = (SafetensorError, OSError, ValueError, TypeError)


# Shared with quant's multi-process quantize_model (_util/ranks.py).
_assign = ranks.assign
_agree = ranks.agree


def convert_file(src, dst, dtype, *, only=None, keep=None, durable: Optional[bool] = None,
                 process_group=None) -> ConversionReport:
    """``fastensors.convert_file`` on every rank of ``process_group`` at
    once: the shards of the sharded checkpoint ``src`` are shared out by
    size, each rank converts its own, rank 0 writes the index and the other
    files and commits the whole set atomically. A single file is converted
    by rank 0. Without an initialized process group this is
    ``fastensors.convert_file``.

    Args: as ``fastensors.convert_file``; ``dst`` must be on a filesystem
    every rank shares. Returns the same ConversionReport on every rank.
    Raises the failing rank's error there and RankFailed on the others (also
    for a rank that died, or the group's timeout passing); nothing is
    committed then."""
    if not (dist.is_available() and dist.is_initialized()):
        return _convert_file(src, dst, dtype, only=only, keep=keep, durable=durable)
    group = process_group
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.isdir(src):
        return _on_rank0(rank, group, lambda: _convert_file(src, dst, dtype, only=only, keep=keep,
                                                            durable=durable))

    error: Optional[BaseException] = None
    plan = fs = None
    staging: List[object] = [None]
    try:
        target = dtype_code(dtype)
        if target not in FLOAT_CODES:
            raise UnsupportedConversion(f"convert_file converts float tensors to a float dtype, not to {target}")
        only_re, keep_re = compile_one(only, "only"), compile_one(keep, "keep")
        durable = _durable(durable)
        plan = plan_directory(src, dst, target, only_re, keep_re)
        if rank == 0:
            fs = open_directory_set(dst, plan, durable)
            staging[0] = fs.staging
    except _EXPECTED as e:
        error = e

    # As in quantize_model: every collective's failure (a rank that died,
    # the group's timeout) is RankFailed, and rank 0 drops the staged set
    # whatever went wrong.
    try:
        _agree(error, group, "convert_file")
        with ranks.lost_ranks("convert_file"):
            dist.broadcast_object_list(staging, src=0, group=group)
        owner = _assign([p[3] for p in plan.plans], world)
        mine: Dict[str, ConversionReport] = {}
        try:
            for shard, who in zip(plan.shards, owner):
                if who == rank:
                    part = mine[shard] = ConversionReport(dtype=target)
                    _convert_one(os.path.join(src, shard), os.path.join(staging[0], shard), target, only_re,
                                 keep_re, False, durable, part)
        except _EXPECTED as e:
            error = e
        parts: List[object] = [None] * world
        with ranks.lost_ranks("convert_file"):
            dist.all_gather_object(parts, mine if error is None else None, group=group)
        _agree(error, group, "convert_file")
    except BaseException:
        if fs is not None:
            fs.abort()
        raise
    report = ConversionReport(dtype=target)
    merged = {shard: part for p in parts for shard, part in p.items()}
    for shard in plan.shards:
        part = merged[shard]
        report.converted += part.converted
        report.kept += part.kept
        report.bytes_in += part.bytes_in
        report.bytes_out += part.bytes_out
    def finish():
        with fs:
            finish_directory(fs, src, dst, plan, report)
            fs.commit()
        return report

    return _on_rank0(rank, group, finish)


def _on_rank0(rank: int, group, work):
    """``work()`` on rank 0; every rank then raises its error (RankFailed on
    the others) or returns its result."""
    return ranks.on_rank0(rank, group, work, _EXPECTED, lost="convert_file")


__all__ = ["convert_file"]
