"""Tensor-parallel loading without DCP's planning: every rank fills its own
pieces of the parameters (DTensors, or plain tensors given a placement per
name) straight from the checkpoint, reading only their bytes; or, with
``broadcast=True``, one rank reads each tensor once and broadcasts it (for
ranks that share no filesystem cache or no filesystem at all).

Whatever fails on one rank is raised on every rank: the ranks agree on
success with one small collective (under the process group's timeout)
before any data moves and once at the end."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

from ..errors import InvalidArgument, RankFailed, SafetensorError, StateDictMismatch, with_context
from .catalog import Catalog
from .io import ReadBatch
from .layout import overlap, torch_dtype
from .reader import BATCH_BYTES, read_piece_into


class LoadResult(NamedTuple):
    """Names of the destination absent from the checkpoint, and names of
    the checkpoint the destination lacks (as ``Module.load_state_dict``)."""

    missing_keys: List[str]
    unexpected_keys: List[str]


class _Target(NamedTuple):
    local: "torch.Tensor"  # the rank's piece, filled in place
    offsets: Tuple[int, ...]  # of the piece in the global tensor
    shape: Tuple[int, ...]  # global


def _targets(state_dict, placements, device_mesh, stored_shapes) -> Dict[str, _Target]:
    """Each tensor's local piece and its place in the global tensor. A plain
    tensor given placements takes the checkpoint's global shape (uneven
    shards cannot be told from a local shape)."""
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    out: Dict[str, _Target] = {}
    placements = dict(placements or {})
    unknown = sorted(set(placements) - set(state_dict))
    if unknown:
        raise InvalidArgument(f"placements name tensors the destination lacks: {unknown[:5]}")
    if placements and device_mesh is None:
        raise InvalidArgument("placements given without a device_mesh")
    for name, value in state_dict.items():
        if isinstance(value, DTensor):
            shape = tuple(value.shape)
            local_shape, offsets = compute_local_shape_and_global_offset(shape, value.device_mesh, value.placements)
            local = value.to_local()
        elif isinstance(value, torch.Tensor):
            local = value
            if name in placements and name in stored_shapes:
                shape = tuple(stored_shapes[name])
                placement = list(placements[name])
                if len(placement) != device_mesh.ndim or len(shape) != value.dim():
                    raise with_context(StateDictMismatch, f"`{name}`: {len(placement)} placements for a"
                                       f" {device_mesh.ndim}-dimensional mesh, a {value.dim()}-dimensional local"
                                       f" piece, and a checkpoint shape {list(shape)}", tensor=name)
                local_shape, offsets = compute_local_shape_and_global_offset(shape, device_mesh, placement)
            else:
                shape, local_shape, offsets = tuple(value.shape), tuple(value.shape), (0,) * value.dim()
        else:
            continue  # not a tensor: nothing of it is in a safetensors checkpoint
        if tuple(local.shape) != tuple(local_shape):
            raise with_context(StateDictMismatch, f"`{name}`: the local piece has shape {list(local.shape)}, its"
                               f" placement of the checkpoint's shape {list(shape)} needs {list(local_shape)}",
                               tensor=name)
        out[name] = _Target(local.detach(), tuple(int(o) for o in offsets), shape)
    return out


def _check(name: str, target: _Target, code: str, shape) -> None:
    if tuple(target.shape) != tuple(shape):
        raise with_context(StateDictMismatch, f"`{name}`: the checkpoint holds shape {list(shape)}, the destination"
                           f" {list(target.shape)}", tensor=name)
    dtype = torch_dtype(code, name)
    if target.local.dtype != dtype:
        raise with_context(StateDictMismatch, f"`{name}`: the checkpoint holds {dtype}, the destination"
                           f" {target.local.dtype}", tensor=name)


def _fill(target: _Target, piece, itemsize: int, read) -> None:
    """Copy the part of ``piece`` inside ``target``'s box: ``read(sub_offsets,
    lengths, dst)`` brings a box of the piece into ``dst``."""
    offs, sizes = overlap(target.offsets, target.local.shape, piece.offsets, piece.shape)
    if any(s == 0 for s in sizes):
        return
    dst = target.local
    for d, (o, s) in enumerate(zip(offs, sizes)):
        dst = dst.narrow(d, o - target.offsets[d], s)
    read([o - p for o, p in zip(offs, piece.offsets)], sizes, dst)


class _Agreement:
    """Success or failure, agreed by every rank of the group."""

    def __init__(self, group):
        self.group = group
        self.enabled = dist.is_available() and dist.is_initialized()

    def check(self, error: Optional[BaseException]) -> None:
        if self.enabled:
            flag = torch.tensor([1 if error is not None else 0], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
            failed = bool(flag.item())
        else:
            failed = error is not None
        if error is not None:
            raise error
        if failed:
            raise RankFailed("another rank failed to load its pieces (its own error is raised there)")


def load_tensor_parallel(target, path, *, placements: Optional[Dict[str, Sequence[object]]] = None,
                         device_mesh=None, broadcast: bool = False, src: int = 0, strict: bool = True,
                         process_group=None) -> LoadResult:
    """Fill the pieces a rank holds of each parameter from a checkpoint.

    Args:
        target: an ``nn.Module`` (its ``state_dict()``: DTensor parameters
            after ``parallelize_module``) or a dict of tensors and DTensors;
            filled in place.
        path: a safetensors file, an index, a checkpoint directory, or
            torch's per-rank files.
        placements: name -> placements (``[Shard(0)]``, ``[Replicate()]``)
            on ``device_mesh`` for plain tensors that hold this rank's piece;
            other plain tensors are loaded whole.
        broadcast: rank ``src`` reads each tensor once and broadcasts it;
            otherwise each rank reads its own bytes.
        strict: raise StateDictMismatch for destination names absent from
            the checkpoint (else they are left and reported).
        process_group: the group (default: the world); unused without
            ``torch.distributed`` initialized.

    Returns a LoadResult. Raises StateDictMismatch (shape, dtype, missing
    key), checkpoint and I/O errors on the rank that meets them and
    RankFailed on the others."""
    state_dict = target.state_dict() if isinstance(target, torch.nn.Module) else target
    if not isinstance(state_dict, dict):
        raise InvalidArgument(f"target must be an nn.Module or a dict of tensors, not {type(target).__name__}")
    if broadcast:
        return _load_broadcast(state_dict, path, placements, device_mesh, src, strict, process_group)
    agree = _Agreement(process_group)
    error: Optional[BaseException] = None
    result = LoadResult([], [])
    try:
        cat = Catalog(path)
        targets = _targets(state_dict, placements, device_mesh, {n: t.shape for n, t in cat.tensors.items()})
        result = _plan_names(targets, cat.tensors, strict)
        for name in targets:
            stored = cat.tensors.get(name)
            if stored is not None:
                _check(name, targets[name], stored.code, stored.shape)
        by_file: Dict[str, list] = {}
        for name, t in targets.items():
            stored = cat.tensors.get(name)
            for piece in stored.pieces if stored is not None else ():
                by_file.setdefault(piece.file, []).append((t, piece))
        # One plan of the read engine for every piece (run each BATCH_BYTES).
        batch, handles = ReadBatch(), {}
        try:
            for file, jobs in by_file.items():
                handles[file] = handle = cat.open(file)
                for t, piece in jobs:
                    itemsize = t.local.element_size()
                    _fill(t, piece, itemsize, lambda o, s, dst, p=piece, h=handle, n=itemsize:
                          read_piece_into(h, p, n, o, s, dst, batch))
                    if batch.nbytes >= BATCH_BYTES:
                        batch.run()
            batch.run()
        finally:
            for handle in handles.values():
                handle.close()
        for file in handles:
            cat.check_unchanged(file)
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as e:
        error = e
    agree.check(error)
    return result


def _plan_names(targets, stored, strict: bool) -> LoadResult:
    missing = sorted(n for n in targets if n not in stored)
    unexpected = sorted(n for n in stored if n not in targets)
    if missing and strict:
        raise with_context(StateDictMismatch, f"{len(missing)} tensors of the destination are not in the checkpoint:"
                           f" {missing[:5]} (pass strict=False for a partial load)", tensor=missing[0])
    return LoadResult(missing, unexpected)


def _load_broadcast(state_dict, path, placements, device_mesh, src, strict, group) -> LoadResult:
    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidArgument("broadcast=True needs torch.distributed to be initialized")
    agree = _Agreement(group)
    rank = dist.get_rank(group)
    error: Optional[BaseException] = None
    cat: Optional[Catalog] = None
    header: List[object] = [None]
    if rank == src:
        try:
            cat = Catalog(path)
            header[0] = {n: (s.code, s.shape) for n, s in cat.tensors.items()}
        except (SafetensorError, OSError, ValueError) as e:
            error = e
    agree.check(error)  # every rank raises if the source cannot read the checkpoint
    dist.broadcast_object_list(header, src=src, group=group)
    stored: Dict[str, Tuple[str, Tuple[int, ...]]] = header[0]
    result = LoadResult([], [])
    names: List[str] = []
    targets: Dict[str, _Target] = {}
    try:
        targets = _targets(state_dict, placements, device_mesh, {n: v[1] for n, v in stored.items()})
        result = _plan_names(targets, stored, strict)
        for name, t in targets.items():
            if name in stored:
                _check(name, t, *stored[name])
    except (SafetensorError, ValueError, TypeError, RuntimeError) as e:
        error = e
    agree.check(error)
    # The tensors every rank broadcasts, in one order (a rank lacking one still takes part).
    wanted = [sorted(n for n in targets if n in stored)]
    every: List[object] = [None] * dist.get_world_size(group)
    dist.all_gather_object(every, wanted[0], group=group)
    names = sorted(set().union(*every))
    for name in names:
        code, shape = stored[name]
        full = torch.empty(shape, dtype=torch_dtype(code, name))
        if rank == src and error is None:
            try:
                whole = _Target(full, (0,) * len(shape), tuple(shape))
                for piece in cat.tensors[name].pieces:
                    handle = cat.open(piece.file)
                    try:
                        _fill(whole, piece, full.element_size(),
                              lambda o, s, dst, p=piece, h=handle: read_piece_into(h, p, full.element_size(), o, s,
                                                                                   dst))
                    finally:
                        handle.close()
            except (SafetensorError, OSError, ValueError) as e:
                error = e  # keep broadcasting so no rank waits; all raise below
        device = targets[name].local.device if name in targets else full.device
        buf = full.to(device)
        # As bytes: every backend carries uint8, not every one bool or FP8.
        dist.broadcast(buf.reshape(-1).view(torch.uint8), src=src, group=group)
        t = targets.get(name)
        if t is not None and error is None:
            box = buf
            for d, (o, s) in enumerate(zip(t.offsets, t.local.shape)):
                box = box.narrow(d, o, s)
            t.local.copy_(box)
    agree.check(error)
    return result


__all__ = ["load_tensor_parallel", "LoadResult"]
