"""``save`` and ``load``: ``torch.distributed.checkpoint.save``/``load``
with fastensors' storage, a load plan checked against the checkpoint first,
and the typed error of the rank that failed raised on every rank instead of
DCP's ``CheckpointException``."""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from ..checkpoint.sharding import MAX_SHARD_SIZE, SAFETENSORS_PATTERN, SizeLike
from ..errors import InvalidArgument, RankFailed, SafetensorError, StateDictMismatch, with_context
from .reader import StorageReader
from .writer import StorageWriter


def typed_failure(exc: CheckpointException, rank: Optional[int] = None) -> BaseException:
    """The error to raise for a failed DCP step: this rank's own fastensors
    error when it had one, else the first one of any rank (its rank named),
    else RankFailed summarizing every rank's failure."""
    failures = exc.failures
    own = failures.get(rank) if rank is not None else None
    if own is not None and isinstance(own[0], SafetensorError):
        return own[0]
    for r in sorted(failures):
        err = failures[r][0]
        if isinstance(err, SafetensorError):
            if r == rank:
                return err
            return with_context(type(err) if _rebuildable(type(err)) else RankFailed,
                                f"rank {r}: {err}", tensor=getattr(err, "tensor", None),
                                path=getattr(err, "path", None))
    summary = "; ".join(f"rank {r}: {type(e).__name__}: {e}" for r, (e, _tb) in sorted(failures.items()))
    return RankFailed(f"the distributed checkpoint step failed on {sorted(failures)}: {summary}")


def _rebuildable(cls) -> bool:
    try:
        cls("probe")
        return True
    except Exception:
        return False


def _rank() -> Optional[int]:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else None


class CheckedLoadPlanner(DefaultLoadPlanner):
    """DCP's default planner, checking the state dict against the checkpoint
    before planning: missing keys (unless ``allow_partial_load``), global
    shapes and dtypes raise StateDictMismatch on the rank that finds them."""

    def create_local_plan(self):
        md = self.metadata.state_dict_metadata
        for fqn, obj in self.state_dict.items():
            if not isinstance(obj, torch.Tensor):
                continue
            stored = md.get(fqn)
            if stored is None:
                if self.allow_partial_load:
                    continue
                raise with_context(StateDictMismatch, f"`{fqn}` is not in the checkpoint (pass strict=False for a"
                                   " partial load)", tensor=fqn)
            if tuple(obj.shape) != tuple(stored.size):
                raise with_context(StateDictMismatch, f"`{fqn}`: the checkpoint holds shape {list(stored.size)},"
                                   f" the state dict {list(obj.shape)}", tensor=fqn)
            if obj.dtype != stored.properties.dtype:
                raise with_context(StateDictMismatch, f"`{fqn}`: the checkpoint holds {stored.properties.dtype},"
                                   f" the state dict {obj.dtype}", tensor=fqn)
        return super().create_local_plan()


def save(state_dict: Dict[str, object], path, *, max_shard_size: SizeLike = MAX_SHARD_SIZE,
         durable: Optional[bool] = True, metadata: Optional[Dict[str, str]] = None,
         filename_pattern: str = SAFETENSORS_PATTERN, process_group=None) -> None:
    """Save a (distributed) state dict as a Hugging Face checkpoint in
    ``path``: ``torch.distributed.checkpoint.save`` with ``StorageWriter``.
    Call on every rank (or without a process group, in one process).

    Args:
        state_dict: tensors and DTensors by name.
        path: the checkpoint directory, on a filesystem every rank shares.
        max_shard_size, durable, metadata, filename_pattern: see StorageWriter.
        process_group: the group saving (default: the whole world).

    Raises the typed error (InvalidArgument, StateDictMismatch, an I/O error)
    on every rank; RankFailed on ranks whose peer failed otherwise."""
    writer = StorageWriter(path, max_shard_size=max_shard_size, durable=durable, metadata=metadata,
                           filename_pattern=filename_pattern)
    _check_state_dict(state_dict)
    try:
        dcp.save(state_dict, storage_writer=writer, process_group=process_group,
                 no_dist=not _distributed(process_group))
    except CheckpointException as e:
        raise typed_failure(e, _rank()) from None


def load(state_dict: Dict[str, object], path, *, strict: bool = True, process_group=None) -> None:
    """Load a checkpoint into ``state_dict`` in place (tensors and DTensors of
    any layout): ``torch.distributed.checkpoint.load`` with StorageReader.

    Args:
        state_dict: the destination; its shapes and dtypes must match.
        path: a file, an index, a checkpoint directory or torch's per-rank files.
        strict: False allows keys absent from the checkpoint (left untouched).
        process_group: the group loading (default: the whole world).

    Raises StateDictMismatch (missing key, shape, dtype), FileChanged,
    checkpoint errors, on every rank (RankFailed where a peer failed)."""
    _check_state_dict(state_dict)
    reader = StorageReader(path)
    try:
        dcp.load(state_dict, storage_reader=reader, planner=CheckedLoadPlanner(allow_partial_load=not strict),
                 process_group=process_group, no_dist=not _distributed(process_group))
    except CheckpointException as e:
        if reader.metadata_error is not None:  # the headers: DCP reports them untyped
            raise reader.metadata_error from None
        raise typed_failure(e, _rank()) from None


def _distributed(process_group) -> bool:
    dist = torch.distributed
    return process_group is not None or (dist.is_available() and dist.is_initialized())


def _check_state_dict(state_dict) -> None:
    if not isinstance(state_dict, dict):
        raise InvalidArgument(f"state_dict must be a dict of tensors, not {type(state_dict).__name__}")
    for k in state_dict:
        if not isinstance(k, str):
            raise InvalidArgument(f"state dict keys must be str, not {type(k).__name__}")


__all__ = ["save", "load", "CheckedLoadPlanner", "typed_failure"]
