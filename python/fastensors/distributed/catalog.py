"""What a checkpoint holds, as pieces of tensors: a single file, shards
listed by an index (checked against their headers), or the per-rank files
torch's ``HuggingFaceStorageWriter(save_distributed=True)`` writes (each
piece's offsets in ``DCP_SHARDING_INFO``). Only headers are read.

Files are opened for reading through ``Catalog.open``, which checks that
each is still the file whose header was read (same inode, size and
modification time): a checkpoint replaced or rewritten during a load raises
FileChanged instead of mixing two versions."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ..checkpoint.locate import locate
from ..checkpoint.reader import open_checkpoint
from ..errors import AmbiguousCheckpoint, FileChanged, InvalidMetadata, StateDictMismatch, with_context
from ..format.reader import safe_open
from .io import Source
from .layout import numel, overlap, storage_shape

# The metadata key torch's per-rank safetensors files carry.
DCP_SHARDING_INFO = "DCP_SHARDING_INFO"
_SAVED_OFFSETS = "saved_offsets"


@dataclass(frozen=True)
class Piece:
    """One stored box of a tensor: file (absolute path), the name in that
    file, the box's offsets and torch (storage) shape."""

    file: str
    name: str
    offsets: Tuple[int, ...]
    shape: Tuple[int, ...]


@dataclass
class StoredTensor:
    code: str
    shape: Tuple[int, ...]  # torch (storage) shape of the whole tensor
    pieces: List[Piece] = field(default_factory=list)


def _identity(path: str) -> Tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class Catalog:
    """The tensors of the checkpoint at ``path`` (see the module doc)."""

    def __init__(self, path) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.tensors: Dict[str, StoredTensor] = {}
        self.metadata: Dict[str, object] = {}
        self._identity: Dict[str, Tuple[int, int, int, int]] = {}
        try:
            kind, found = locate(self.path)
        except AmbiguousCheckpoint:
            self._scan_dcp(self._dcp_files(self.path, raise_if_not=True))
            return
        if kind == "file":
            with safe_open(found, framework="np", backend="pread") as f:
                is_dcp = DCP_SHARDING_INFO in (f.metadata() or {})
            if is_dcp:
                self._scan_dcp(self._dcp_files(os.path.dirname(found), raise_if_not=False) or [found])
                return
        self._scan_hf(found)

    # -- scanning --------------------------------------------------------------------
    def _scan_hf(self, found: str) -> None:
        with open_checkpoint(found, backend="pread", lazy=False) as ckpt:
            directory = os.path.dirname(ckpt.path)
            self.metadata = dict(ckpt.index_metadata) if ckpt.is_sharded else dict(ckpt.metadata() or {})
            for t in ckpt.tensors():
                file = os.path.join(directory, t.file)
                shape = tuple(storage_shape(t.dtype, t.shape))
                self.tensors[t.name] = StoredTensor(t.dtype, shape, [Piece(file, t.name, (0,) * len(shape), shape)])
            for fname in ckpt.files:
                file = os.path.join(directory, fname)
                self._identity[file] = _identity(file)

    @staticmethod
    def _dcp_files(directory: str, raise_if_not: bool) -> List[str]:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors") and not n.startswith("."))
        files = [os.path.join(directory, n) for n in names]
        for file in files:
            with safe_open(file, framework="np", backend="pread") as f:
                if DCP_SHARDING_INFO not in (f.metadata() or {}):
                    if not raise_if_not:
                        return []
                    raise with_context(AmbiguousCheckpoint, f"{directory!r} holds several .safetensors files, no"
                                       f" index, and {os.path.basename(file)!r} is not a torch per-rank file"
                                       f" (no {DCP_SHARDING_INFO}); open one of them", path=directory)
        return files

    def _scan_dcp(self, files: List[str]) -> None:
        for file in files:
            self._identity[file] = _identity(file)
            with safe_open(file, framework="np", backend="pread") as f:
                meta = f.metadata() or {}
                try:
                    info = json.loads(meta[DCP_SHARDING_INFO])
                    if not isinstance(info, dict):
                        raise ValueError("not an object")
                except (ValueError, TypeError) as e:
                    raise with_context(InvalidMetadata, f"{file!r}: {DCP_SHARDING_INFO} is not a JSON object ({e})",
                                       path=file) from None
                for name in f.offset_keys():
                    ti = f.tensor_info(name)
                    shape = tuple(storage_shape(ti.dtype, ti.shape))
                    offsets = info.get(name, {}).get(_SAVED_OFFSETS) if isinstance(info.get(name), dict) else None
                    if (not isinstance(offsets, list) or len(offsets) != len(shape)
                            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)):
                        raise with_context(InvalidMetadata, f"{file!r}: tensor `{name}` has no valid saved_offsets"
                                           f" in {DCP_SHARDING_INFO} (one non-negative int per dimension)",
                                           tensor=name, path=file)
                    stored = self.tensors.get(name)
                    if stored is None:
                        stored = self.tensors[name] = StoredTensor(ti.dtype, shape)
                    elif stored.code != ti.dtype or len(stored.shape) != len(shape):
                        raise with_context(StateDictMismatch, f"`{name}`: pieces of dtype {stored.code} and"
                                           f" {ti.dtype} (or another rank) in {file!r}", tensor=name, path=file)
                    stored.pieces.append(Piece(file, name, tuple(offsets), shape))
        for name, stored in self.tensors.items():
            ends = [max(p.offsets[d] + p.shape[d] for p in stored.pieces) for d in range(len(stored.shape))]
            stored.shape = tuple(ends)
            check_tiling(name, stored.shape, [(p.offsets, p.shape) for p in stored.pieces])

    # -- reading ---------------------------------------------------------------------
    def open(self, file: str) -> Source:
        """The file, opened for reading, after checking it is the one scanned."""
        handle = Source(file)
        self.check_unchanged(file)
        return handle

    def check_unchanged(self, file: str) -> None:
        try:
            now = _identity(file)
        except OSError:
            now = None
        if now != self._identity.get(file):
            raise with_context(FileChanged, f"{file!r} changed since its header was read (replaced, rewritten or"
                               " removed during the load); load again", path=file)


def check_tiling(fqn: str, shape, boxes) -> None:
    """The boxes ``[(offsets, sizes)]`` cover a tensor of ``shape`` exactly
    once (StateDictMismatch if not)."""
    shape = [int(d) for d in shape]
    for off, size in boxes:
        if len(off) != len(shape) or any(o < 0 or o + s > d for o, s, d in zip(off, size, shape)):
            raise with_context(StateDictMismatch, f"`{fqn}`: a piece at {list(off)} of size {list(size)} lies"
                               f" outside the tensor's shape {shape}", tensor=fqn)
    covered = sum(numel(s) for _, s in boxes)
    if covered != numel(shape):
        raise with_context(StateDictMismatch, f"`{fqn}`: the pieces hold {covered} elements, the tensor"
                           f" {numel(shape)}", tensor=fqn)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            _, sizes = overlap(*boxes[i], *boxes[j])
            if numel(sizes) and all(s > 0 for s in sizes):
                raise with_context(StateDictMismatch, f"`{fqn}`: two pieces overlap ({list(boxes[i][0])} and"
                                   f" {list(boxes[j][0])})", tensor=fqn)
