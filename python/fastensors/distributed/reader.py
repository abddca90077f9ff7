"""``StorageReader``: ``torch.distributed.checkpoint.load`` from a single
safetensors file, a sharded checkpoint through its index, or torch's own
per-rank safetensors output, into any layout of the state dict (DTensors
sharded any way: DCP's planner intersects the stored pieces with each
rank's pieces). Each rank reads only the byte ranges its pieces need."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import torch
from torch.distributed.checkpoint import StorageReader as _TorchStorageReader
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner
from torch.futures import Future

from ..errors import InvalidArgument, SafetensorError, StateDictMismatch, with_context
from .catalog import Catalog, Piece
from .io import ReadBatch, Source
from .layout import byte_runs, torch_dtype


def read_piece_into(source: Source, piece: Piece, itemsize: int, offsets, lengths,
                    target: "torch.Tensor", batch: Optional[ReadBatch] = None) -> None:
    """Read the box ``offsets``/``lengths`` (relative to ``piece``) into
    ``target``, a CPU tensor of shape ``lengths`` of the stored dtype:
    straight into its memory when it is contiguous. With ``batch`` the read
    is added to it and ``target`` is filled when the batch runs; without,
    it is read at once."""
    starts, length = byte_runs(piece.shape, itemsize, offsets, lengths)
    if not len(starts):
        return
    direct = target.is_contiguous() and target.device.type == "cpu"
    buf = target if direct else torch.empty(tuple(lengths), dtype=target.dtype)
    own = batch is None
    batch = ReadBatch() if own else batch
    batch.add(source, piece.name, starts, length, buf.reshape(-1).view(torch.uint8).numpy(),
              then=None if direct else (lambda: target.copy_(buf)))
    if own:
        batch.run()


# Bytes a load reads by one plan before committing them and going on.
BATCH_BYTES = 256 << 20


class StorageReader(_TorchStorageReader):
    """Read a safetensors checkpoint at ``path`` with
    ``torch.distributed.checkpoint.load``.

    Args:
        path: a ``.safetensors`` file, an index, or a directory holding one of
            them (``fastensors.open_checkpoint`` rules: the index is followed
            and checked against the shards' headers), or a directory of
            torch's per-rank files (``DCP_SHARDING_INFO`` in each header).

    Every rank reads the headers and then only the bytes of the pieces DCP
    plans for it, with positioned reads, straight into the destination when
    it is contiguous. A destination of another dtype than the stored one
    raises StateDictMismatch (no silent cast); a file replaced or rewritten
    since its header was read raises FileChanged."""

    def __init__(self, path) -> None:
        super().__init__()
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidArgument(f"path must be a str or os.PathLike, not {type(path).__name__}")
        self.path = os.path.abspath(os.fspath(path))
        self._catalog: Optional[Catalog] = None
        self._pieces: Dict[MetadataIndex, tuple] = {}
        self.metadata_error: Optional[SafetensorError] = None

    @staticmethod
    def _finish(batch: ReadBatch, done: list, planner: LoadPlanner) -> None:
        batch.run()
        for req, target in done:
            planner.commit_tensor(req, target)
        done.clear()

    # -- torch's protocol -----------------------------------------------------------
    def reset(self, checkpoint_id=None) -> None:
        if checkpoint_id is not None:
            self.path = os.path.abspath(os.fspath(checkpoint_id))
        self._catalog = None
        self._pieces = {}

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id) -> bool:
        return isinstance(checkpoint_id, (str, os.PathLike)) and os.path.exists(checkpoint_id)

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog(self.path)
        return self._catalog

    def read_metadata(self, *args, **kwargs) -> Metadata:
        # DCP turns a failure here into an untyped AssertionError; the typed
        # one is kept for fastensors.distributed.load to raise.
        try:
            return self._read_metadata()
        except SafetensorError as e:
            self.metadata_error = e
            raise

    def _read_metadata(self) -> Metadata:
        cat = self.catalog
        sd_meta: Dict[str, TensorStorageMetadata] = {}
        storage: Dict[MetadataIndex, tuple] = {}
        for fqn, stored in cat.tensors.items():
            dtype = torch_dtype(stored.code, fqn)
            chunks = []
            for piece in stored.pieces:
                chunks.append(ChunkStorageMetadata(offsets=torch.Size(piece.offsets), sizes=torch.Size(piece.shape)))
                storage[MetadataIndex(fqn, piece.offsets)] = (piece, dtype)
            sd_meta[fqn] = TensorStorageMetadata(TensorProperties(dtype=dtype), torch.Size(stored.shape), chunks)
        self._pieces = storage
        return Metadata(state_dict_metadata=sd_meta, storage_data=storage,
                        storage_meta=StorageMeta(checkpoint_id=self.path))

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args, **kwargs) -> None:
        self._pieces = dict(metadata.storage_data or {})

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: List[LoadPlan]) -> List[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future:
        by_file: Dict[str, list] = {}
        for req in plan.items:
            if req.type != LoadItemType.TENSOR:
                raise with_context(StateDictMismatch, f"`{req.dest_index.fqn}` is not a tensor; a safetensors"
                                   " checkpoint holds tensors only", tensor=req.dest_index.fqn)
            try:
                piece, dtype = self._pieces[req.storage_index]
            except KeyError:
                raise with_context(StateDictMismatch, f"`{req.storage_index.fqn}`: no stored piece at"
                                   f" {list(req.storage_index.offset or [])}", tensor=req.storage_index.fqn) from None
            by_file.setdefault(piece.file, []).append((req, piece, dtype))
        cat = self.catalog
        # Every piece of every file in one plan of the read engine (a batch
        # runs when it holds BATCH_BYTES, bounding the staging of targets
        # that are not contiguous); committed once its bytes are in.
        handles: Dict[str, Source] = {}
        batch = ReadBatch()
        done: list = []
        try:
            for file, reqs in by_file.items():
                handles[file] = handle = cat.open(file)
                for req, piece, dtype in reqs:
                    target = planner.resolve_tensor(req).detach()
                    fqn = req.dest_index.fqn
                    if target.dtype != dtype:
                        raise with_context(StateDictMismatch, f"`{fqn}`: the checkpoint holds {dtype}, the state"
                                           f" dict {target.dtype} (cast after loading)", tensor=fqn, path=file)
                    if tuple(target.shape) != tuple(req.lengths):
                        raise with_context(StateDictMismatch, f"`{fqn}`: destination of shape {tuple(target.shape)}"
                                           f" for a piece of shape {tuple(req.lengths)}", tensor=fqn, path=file)
                    read_piece_into(handle, piece, target.element_size(), req.storage_offsets, req.lengths, target,
                                    batch)
                    done.append((req, target))
                    if batch.nbytes >= BATCH_BYTES:
                        self._finish(batch, done, planner)
            self._finish(batch, done, planner)
        finally:
            for handle in handles.values():
                handle.close()
        for file in handles:
            cat.check_unchanged(file)
        fut: Future = Future()
        fut.set_result(None)
        return fut


__all__ = ["StorageReader"]
