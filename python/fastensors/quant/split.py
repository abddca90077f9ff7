"""``quantize_model`` shared out across the ranks of a ``torch.distributed``
process group (``quantize_model(..., process_group=...)``, under torchrun).

Every rank reads the source's headers and makes the same plan as the
one-process run (selection, scheme, shard split, headers from the shapes
alone). The output shards are shared out by the bytes of source tensors
they hold (``_util.ranks.assign``); each rank reads, quantizes and writes
only its own shards, into the staging directory rank 0 opened. The
per-tensor quality figures are gathered, and once every rank has
succeeded rank 0 writes the index, config.json and the other files and
commits the set (``FileSet``). Between the steps every rank learns whether
any failed (``ranks.agree``), so all raise together, and nothing is
committed then. The files are the one-process run's, byte for byte."""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple

from .._util import ranks
from ..checkpoint.commit import FileSet, fsync_file, naming
from ..checkpoint.sharding import shard_file_metadata, stage_index
from ..errors import InvalidArgument, RankFailed
from ..format import writer as _serialize
from ..sources import is_url
from .quantize_model import (
    EDGE_LADDER,
    EXTRA_STALE,
    FILENAME_PATTERN,
    QuantizationReport,
    _check_quality,
    _pick_edge_scheme,
    _plan_safetensors,
    _Progress,
    _Quantizer,
    _resolve_options,
    _select_items,
    _shard_writer,
    _Source,
    _tensor_reports,
)

# Any error of a rank's own work is shared with the others: an unexpected
# one left to propagate would leave them waiting in the next collective.
_EXPECTED = (Exception,)
_METRICS = ("cosine", "sqnr_db", "rmse", "max_abs_err")


def _group_of(process_group):
    """(group, rank, world) for ``process_group``: "default" or a group."""
    try:
        import torch.distributed as dist
    except ImportError as e:
        raise InvalidArgument("quantize_model(process_group=...) needs torch.distributed") from e
    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidArgument("quantize_model(process_group=...): torch.distributed is not initialized; call "
                              "torch.distributed.init_process_group first (under torchrun), or leave "
                              "process_group=None to quantize in this process")
    if isinstance(process_group, str):
        if process_group != "default":
            raise InvalidArgument(f"process_group must be a torch.distributed process group or 'default', "
                                  f"not {process_group!r}")
        group = None
    elif isinstance(process_group, dist.ProcessGroup):
        group = process_group
    else:
        raise InvalidArgument(f"process_group must be a torch.distributed process group or 'default', "
                              f"not {type(process_group).__name__}")
    return group, dist.get_rank(group), dist.get_world_size(group)


def quantize_split(src, dst, process_group, *, scheme, group_size, symmetric, profile, format, ignore, only,
                   max_shard_size, validate, min_cosine, report, skip_unsupported, overwrite, progress,
                   durable) -> QuantizationReport:
    """``quantize_model`` on every rank of ``process_group`` at once (see
    its docstring for the arguments). Returns rank 0's report on every
    rank. Raises, on every rank, the rank's own error or RankFailed; the
    destination is untouched then."""
    import torch.distributed as dist

    group, rank, world = _group_of(process_group)
    started = time.perf_counter()
    error: Optional[BaseException] = None
    source = fs = None
    committed = False
    try:
        try:
            o = _resolve_options(scheme, group_size, symmetric, profile, format, ignore, only, validate,
                                 min_cosine, report)
            if o.format != "safetensors":
                raise InvalidArgument(f"quantize_model across ranks writes format='safetensors' only: a "
                                      f"{o.format!r} model is one file, written by one process; call "
                                      "quantize_model without process_group (on one rank)")
            if is_url(src):
                raise InvalidArgument("quantize_model across ranks reads a local model directory or file: copy "
                                      "the URL's files first, or call quantize_model without process_group")
            src, dst = os.fspath(src), os.fspath(dst)
            source = _Source(src)
            items, out = _select_items(source, src, dst, o, overwrite)
        except _EXPECTED as e:
            error = e
        ranks.agree(error, group, "quantize_model")
        chosen = o.chosen
        if o.edge_search:
            # The search is sequential (each tensor tried from the rung the
            # previous ones reached): done once, on rank 0, for the same choice.
            def search() -> Tuple[object, Dict[str, float]]:
                picked = _pick_edge_scheme(source, items, EDGE_LADDER, o.symmetric, o.min_cosine, o.format, out)
                return picked, out.candidates

            chosen, out.candidates = ranks.on_rank0(rank, group, search, _EXPECTED, "quantize_model")
            out.scheme, out.group_size, out.symmetric = chosen.scheme, chosen.group_size, chosen.symmetric

        staging: List[object] = [None]
        try:
            reports = _tensor_reports(items, chosen, skip_unsupported, out)
            plan = _plan_safetensors(source, items, chosen, reports, max_shard_size)
            dur = _serialize.resolve_durable(durable)
            if rank == 0:
                fs = FileSet(dst, durable=dur)
                staging[0] = fs.staging
        except _EXPECTED as e:
            error = e
        ranks.agree(error, group, "quantize_model")
        with ranks.lost_ranks("quantize_model"):
            dist.broadcast_object_list(staging, src=0, group=group)

        shards = list(plan.plan.filename_to_tensors)
        owner = ranks.assign([plan.source_bytes[f] for f in shards], world)
        mine = [f for f, r in zip(shards, owner) if r == rank]
        # The source tensors this rank reads: those its shards are made of.
        mine_items = {plan.outputs[name][3] for f in mine for name in plan.plan.filename_to_tensors[f]}
        measured: Dict[str, Tuple] = {}
        try:
            quantizer = _Quantizer(source, chosen, reports, o.validate)
            bar = _Progress(progress, sum(it.nbytes for it in items if it.name in mine_items))
            write_shard = _shard_writer(source, plan.outputs, quantizer, bar)
            base_meta = shard_file_metadata(plan.plan, {}, plan.file_meta)
            for fname in mine:
                path = os.path.join(staging[0], fname)
                write_shard(path, plan.plan.filename_to_tensors[fname], dict(base_meta))
                if dur:
                    fsync_file(path)
            measured = {n: tuple(getattr(reports[n], m) for m in _METRICS) for n in mine_items
                        if reports[n].cosine is not None}
        except _EXPECTED as e:
            error = e
        every: List[object] = [None] * world
        with ranks.lost_ranks("quantize_model"):
            dist.all_gather_object(every, None if error is not None else measured, group=group)
        ranks.agree(error, group, "quantize_model")
        for part in every:
            for name, values in part.items():
                for m, v in zip(_METRICS, values):
                    setattr(reports[name], m, v)
        try:
            _check_quality(out, o.min_cosine, dst)  # the same figures everywhere: the same verdict
        except _EXPECTED as e:
            error = e
        ranks.agree(error, group, "quantize_model")

        def commit() -> QuantizationReport:
            nonlocal committed
            # Shards staged by every rank: rank 0 adds what write_planned
            # would, in its order, then commits.
            for fname in shards:
                fs.add_weight(fname)
            stage_index(fs, plan.plan, filename_pattern=FILENAME_PATTERN, metadata={}, total_parameters=None,
                        extra_stale=EXTRA_STALE)
            for name, write in plan.companions.items():
                path = fs.add_companion(name)
                with naming("write", path):
                    write(path)
            fs.commit()
            committed = True
            out.files = shards + ([plan.plan.index_file] if plan.plan.index_file else [])
            out.copied_files = sorted(plan.companions)
            out.seconds = time.perf_counter() - started
            if report is not None:
                out.write(report)
            return out

        return ranks.on_rank0(rank, group, commit, _EXPECTED, "quantize_model")
    except BaseException:
        if fs is not None and not committed:
            fs.abort()
        raise
    finally:
        if source is not None:
            source.close()


__all__ = ["quantize_split"]
