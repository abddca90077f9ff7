"""Opening a checkpoint as one object: a single safetensors file, or shards
listed by a ``model.safetensors.index.json``, behind the ``safe_open``
interface.

The index and the shards must agree: every shard the index names exists,
every tensor listed is in its shard, every tensor a shard holds is listed for
that shard (and for no other). Each rule broken has its own error naming the
tensor and the files.

Shards are opened lazily, and checked as they are: before a tensor is
returned, its shard has been opened and every tensor in it found listed for
it, and the tensor itself found in it. ``verify()`` checks everything
(index entries, duplicate keys in the index, every shard, tensors listed but
absent); ``keys()``, ``offset_keys()``, ``get_tensors()``, iteration and
``lazy=False`` run it. So opening a checkpoint and reading one tensor costs
one JSON parse and one shard header, as the reference way does."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from . import _core
from ._errors import (
    AmbiguousCheckpoint,
    CheckpointNotFound,
    InvalidIndex,
    SafetensorError,
    ShardNotFound,
    TensorInMultipleShards,
    TensorMissingFromShard,
    TensorNotFound,
    UnlistedTensor,
)
from ._open import TensorInfo, safe_open

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# An index is a name -> file map; anything this large is not one.
MAX_INDEX_BYTES = 64 << 20


def _error(cls, message: str, *, tensor: Optional[str] = None, path: Optional[str] = None):
    err = cls(message)
    err.tensor = tensor
    err.path = path
    return err


# -- finding the checkpoint ----------------------------------------------------------

def locate(path) -> Tuple[str, str]:
    """``("index", path)`` or ``("file", path)`` for a file, an index, or a
    directory. In a directory ``model.safetensors`` comes first, then
    ``model.safetensors.index.json`` (the order transformers uses), then a
    lone ``*.safetensors.index.json``, then a lone ``*.safetensors``."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise _error(CheckpointNotFound, f"no checkpoint at {path!r}: no such file or directory", path=path) from None
    if stat.S_ISREG(mode):
        return ("index" if path.endswith(".json") else "file"), path
    if not stat.S_ISDIR(mode):
        raise _error(CheckpointNotFound, f"no checkpoint at {path!r}: not a file or directory", path=path)
    for name, kind in ((SAFE_WEIGHTS_NAME, "file"), (SAFE_WEIGHTS_INDEX_NAME, "index")):
        candidate = os.path.join(path, name)
        if os.path.isfile(candidate):
            return kind, candidate
    names = sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))
    for suffix, kind in ((".safetensors.index.json", "index"), (".safetensors", "file")):
        found = [n for n in names if n.endswith(suffix)]
        if len(found) == 1:
            return kind, os.path.join(path, found[0])
        if len(found) > 1:
            raise _error(AmbiguousCheckpoint,
                         f"{path!r} holds several {suffix} files and none is named {SAFE_WEIGHTS_NAME!r}"
                         f" or {SAFE_WEIGHTS_INDEX_NAME!r}: {found}; open one of them", path=path)
    raise _error(CheckpointNotFound, f"no safetensors checkpoint in {path!r}", path=path)


def _no_duplicates(pairs):
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return out


def check_shard_name(name: str, index_path: str, extension: str = ".safetensors") -> None:
    """Shard names are relative paths inside the checkpoint's directory: no
    root, no drive, no ``..`` component, on any OS's reading of the name."""
    parts = name.replace("\\", "/").split("/")
    if (not name or name[0] in "/\\" or (len(name) > 1 and name[1] == ":") or ".." in parts):
        raise _error(InvalidIndex, f"index {index_path!r}: shard name {name!r} must be a relative path inside"
                     " the checkpoint directory", path=index_path)
    if not name.endswith(extension):
        raise _error(InvalidIndex, f"index {index_path!r}: shard name {name!r} does not end with {extension!r}",
                     path=index_path)


def parse_index(index_path: str, *, check_duplicates: bool = True) -> Tuple[Dict[str, object], Dict[str, object]]:
    """``(weight_map, metadata)`` of an index file: UTF-8 JSON (without
    duplicate keys unless ``check_duplicates`` is false) whose top level is an
    object with a ``weight_map`` object and an optional ``metadata`` object.
    Entries are checked by ``check_weight_map``."""
    raw = _read_index_bytes(index_path)
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, object_pairs_hook=_no_duplicates) if check_duplicates else json.loads(text)
    except UnicodeDecodeError as e:
        raise _error(InvalidIndex, f"index {index_path!r} is not UTF-8: {e}", path=index_path) from None
    except ValueError as e:
        raise _error(InvalidIndex, f"index {index_path!r} is not valid JSON: {e}", path=index_path) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise _error(InvalidIndex, f"index {index_path!r} must be a JSON object with a \"weight_map\" object",
                     path=index_path)
    meta = doc.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise _error(InvalidIndex, f"index {index_path!r}: \"metadata\" must be an object", path=index_path)
    return doc["weight_map"], meta


def _read_index_bytes(index_path: str) -> bytes:
    try:
        fd = os.open(index_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _error(CheckpointNotFound, f"index {index_path!r} does not exist", path=index_path) from None
    try:
        size = os.fstat(fd).st_size
        if size > MAX_INDEX_BYTES:
            raise _error(InvalidIndex, f"index {index_path!r} is {size} bytes, over the {MAX_INDEX_BYTES}-byte"
                         " limit for an index", path=index_path)
        chunks = []
        total = 0
        while True:  # one read in practice; loop for short reads and files still growing
            chunk = os.read(fd, max(size + 1 - total, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_INDEX_BYTES:
                raise _error(InvalidIndex, f"index {index_path!r} is over the {MAX_INDEX_BYTES}-byte limit for an"
                             " index", path=index_path)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    finally:
        os.close(fd)


def check_file_entry(weight_map: Dict[str, object], fname: object, index_path: str,
                     extension: str = ".safetensors") -> None:
    """One weight_map value: a string naming a file inside the directory."""
    if not isinstance(fname, str):
        tensor = next(k for k, v in weight_map.items() if v is fname or v == fname)
        raise _error(InvalidIndex, f"index {index_path!r}: tensor {tensor!r} maps to {fname!r}, not a file name",
                     tensor=tensor, path=index_path)
    check_shard_name(fname, index_path, extension)


def check_weight_map(weight_map: Dict[str, object], index_path: str, extension: str = ".safetensors") -> None:
    """Every value of ``weight_map`` is a valid shard name."""
    for value in weight_map.values():
        if not isinstance(value, str):
            check_file_entry(weight_map, value, index_path, extension)
    for fname in set(weight_map.values()):
        check_shard_name(fname, index_path, extension)


def read_index(index_path: str, extension: str = ".safetensors") -> Tuple[Dict[str, str], Dict[str, object]]:
    """``(weight_map, metadata)`` of an index file, every entry validated."""
    weight_map, meta = parse_index(index_path)
    check_weight_map(weight_map, index_path, extension)
    return weight_map, meta


# -- the checkpoint ----------------------------------------------------------------

class CheckpointTensor(NamedTuple):
    """One tensor of a checkpoint: where it is and what the header says."""

    name: str
    file: str
    dtype: str
    shape: Tuple[int, ...]
    data_offsets: Tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]


class Checkpoint:
    """A checkpoint with the ``safe_open`` interface: ``keys``,
    ``get_tensor``, ``get_slice``, ``metadata``, ``tensor_info``,
    ``offset_keys``, ``get_tensors``, context manager. Extra keyword
    arguments of ``get_tensor``/``get_slice`` are passed to the shard's
    ``safe_open`` handle."""

    def __init__(self, path, framework: str = "np", *, lazy: bool = True, **safe_open_kwargs):
        self._framework = framework
        self._kwargs = safe_open_kwargs
        self._handles: Dict[str, safe_open] = {}
        self._lock = threading.Lock()
        self._checked = False
        self._files: Optional[List[str]] = None
        self._by_file_cache: Optional[Dict[str, List[str]]] = None
        self._counts: Optional[Dict[str, int]] = None
        kind, found = locate(path)
        self.path = os.path.abspath(found)
        self.directory: Optional[str] = os.path.dirname(self.path)
        if kind == "index":
            self.is_sharded = True
            self.index_path: Optional[str] = self.path
            # Entries are checked as shards are opened, and all at once by
            # verify(): opening and reading one tensor costs one JSON parse
            # and one shard header, like the reference way.
            self.weight_map, self.index_metadata = parse_index(self.path, check_duplicates=not lazy)
            self._duplicates_checked = not lazy
            if not lazy:
                self.verify()
        else:
            self.is_sharded = False
            self.index_path = None
            self.index_metadata = {}
            name = os.path.basename(self.path)
            handle = self._open_file(name)
            self._handles[name] = handle
            self.weight_map = {k: name for k in handle.keys()}
            self._files = [name]
            self._checked = True

    @property
    def files(self) -> List[str]:
        """The files holding the tensors, in order of first appearance in the index."""
        if self._files is None:
            self._files = list(dict.fromkeys(self.weight_map.values()))
        return self._files

    @property
    def _by_file(self) -> Dict[str, List[str]]:
        if self._by_file_cache is None:
            by_file: Dict[str, List[str]] = {f: [] for f in self.files}
            for tensor, fname in self.weight_map.items():
                by_file[fname].append(tensor)
            self._by_file_cache = by_file
        return self._by_file_cache

    # -- shards ----------------------------------------------------------------------
    def _open_file(self, fname: str) -> safe_open:
        return safe_open(os.path.join(self.directory, fname), self._framework, **self._kwargs)

    def _shard(self, fname: str) -> safe_open:
        handle = self._handles.get(fname)
        if handle is not None:
            return handle
        with self._lock:  # shards are written from several threads when resharding
            return self._open_shard(fname)

    def _open_shard(self, fname: str) -> safe_open:
        handle = self._handles.get(fname)
        if handle is None:
            if self.is_sharded:
                check_file_entry(self.weight_map, fname, self.path)
            try:
                handle = self._open_file(fname)
            except FileNotFoundError:
                self._missing_shard(fname)
            try:
                self._check_shard(fname, handle)
            except BaseException:
                handle.close()
                raise
            self._handles[fname] = handle
        return handle

    def _missing_shard(self, fname: str):
        listed = self._by_file[fname]
        more = f" and {len(listed) - 1} more" if len(listed) > 1 else ""
        raise _error(ShardNotFound, f"shard {fname!r} does not exist; index {self.path!r} lists tensor"
                     f" {listed[0]!r}{more} in it", tensor=listed[0], path=os.path.join(self.directory, fname))

    def _check_shard(self, fname: str, handle: safe_open) -> None:
        """Every tensor of the shard maps to it in the index (tensors listed
        for it but absent are found by ``_check_counts`` or on access)."""
        shard_path = os.path.join(self.directory, fname)
        names = handle.keys()
        weight_map = self.weight_map
        for tensor in names:
            listed = weight_map.get(tensor)
            if listed == fname:
                continue
            if listed is None:
                raise _error(UnlistedTensor, f"shard {fname!r} holds tensor {tensor!r}, which index {self.path!r}"
                             " does not list", tensor=tensor, path=shard_path)
            check_file_entry(weight_map, listed, self.path)  # before looking into that file
            other = os.path.join(self.directory, listed)
            if tensor in self._peek_keys(listed):
                raise _error(TensorInMultipleShards, f"tensor {tensor!r} is stored in two shards, {listed!r} (where"
                             f" index {self.path!r} maps it) and {fname!r}", tensor=tensor, path=shard_path)
            raise _error(TensorMissingFromShard, f"index {self.path!r} lists tensor {tensor!r} in shard {listed!r},"
                         f" which does not hold it (shard {fname!r} does)", tensor=tensor, path=other)

    def _check_counts(self, fname: str) -> None:
        """The index maps no more tensors to ``fname`` than the shard holds."""
        if self._counts is None:
            self._counts = Counter(self.weight_map.values())
        names = self._handles[fname].keys()
        if self._counts[fname] != len(names):
            present = set(names)
            for tensor in self._by_file[fname]:
                if tensor not in present:
                    self._listed_but_absent(tensor, fname)

    def _listed_but_absent(self, tensor: str, fname: str):
        raise _error(TensorMissingFromShard, f"index {self.path!r} lists tensor {tensor!r} in shard {fname!r},"
                     " which does not hold it", tensor=tensor, path=os.path.join(self.directory, fname))

    def _peek_keys(self, fname: str) -> set:
        handle = self._handles.get(fname)
        if handle is not None:
            return set(handle.keys())
        try:
            f = _core.File(os.path.join(self.directory, fname), "pread")
        except (FileNotFoundError, SafetensorError):
            return set()
        try:
            return set(f.keys())
        finally:
            f.close()

    def _handle_for(self, name: str) -> safe_open:
        fname = self.weight_map.get(name)
        if fname is None:
            raise _error(TensorNotFound, f"no tensor named {name!r} in checkpoint {self.path!r}", tensor=name,
                         path=self.path)
        handle = self._shard(fname)
        if name not in handle._file:
            self._listed_but_absent(name, fname)
        return handle

    def verify(self) -> "Checkpoint":
        """Check the whole checkpoint: every index entry names a valid file,
        every shard exists, and every shard agrees with the index."""
        if not self._checked:
            if self.is_sharded:
                if not self._duplicates_checked:
                    parse_index(self.path)
                    self._duplicates_checked = True
                check_weight_map(self.weight_map, self.path)
                present = set(os.listdir(self.directory))
                for fname in self.files:
                    if fname not in present and not os.path.isfile(os.path.join(self.directory, fname)):
                        self._missing_shard(fname)
            for fname in self.files:
                self._shard(fname)
                self._check_counts(fname)
            self._checked = True
        return self

    # -- the safe_open interface ---------------------------------------------------------
    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, _exc_type, _exc, _tb) -> None:
        self.close()

    def close(self) -> None:
        """Close every open shard. Tensors already returned stay valid."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._checked = False

    def keys(self) -> List[str]:
        """Tensor names, sorted (every shard is checked first)."""
        self.verify()
        return sorted(self.weight_map)

    def offset_keys(self) -> List[str]:
        """Tensor names shard by shard, in the order of their data."""
        self.verify()
        out: List[str] = []
        for fname in self.files:
            out.extend(self._shard(fname).offset_keys())
        return out

    def __contains__(self, name: object) -> bool:
        return name in self.weight_map

    def __len__(self) -> int:
        return len(self.weight_map)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def file_of(self, name: str) -> str:
        """The file (relative to the checkpoint's directory) holding ``name``."""
        if name not in self.weight_map:
            raise _error(TensorNotFound, f"no tensor named {name!r} in checkpoint {self.path!r}", tensor=name,
                         path=self.path)
        return self.weight_map[name]

    def metadata(self) -> Optional[Dict[str, str]]:
        """A single file's ``__metadata__``. For shards: the first shard's,
        updated with the index's metadata other than ``total_size`` and
        ``total_parameters`` (non-string values as JSON text)."""
        if not self.files:
            return dict(self.index_metadata) or None
        base = self._shard(self.files[0]).metadata()
        if not self.is_sharded:
            return base
        out = dict(base or {})
        for k, v in self.index_metadata.items():
            if k not in ("total_size", "total_parameters"):
                out[k] = v if isinstance(v, str) else json.dumps(v)
        return out or None

    def tensor_info(self, name: str) -> TensorInfo:
        return self._handle_for(name).tensor_info(name)

    def get_tensor(self, name: str, **kwargs):
        return self._handle_for(name).get_tensor(name, **kwargs)

    def get_slice(self, name: str, **kwargs):
        return self._handle_for(name).get_slice(name, **kwargs)

    def get_tensors(self) -> Dict[str, object]:
        """Every tensor, shard by shard in data order."""
        self.verify()
        out: Dict[str, object] = {}
        for fname in self.files:
            out.update(self._shard(fname).get_tensors())
        return out

    # -- extras ----------------------------------------------------------------------
    def tensors(self) -> List[CheckpointTensor]:
        """Every tensor's file, dtype, shape and offsets, sorted by name."""
        out = []
        for name in self.keys():
            info = self.tensor_info(name)
            out.append(CheckpointTensor(name, self.weight_map[name], info.dtype, info.shape, info.data_offsets))
        return out

    def tensors_in_file(self, fname: str) -> List[str]:
        """Names the index maps to ``fname``, in index order."""
        return list(self._by_file[fname])

    def total_parameters(self) -> int:
        """Elements in all tensors (sub-byte types counted per value)."""
        total = 0
        for t in self.tensors():
            total += int(np.prod(t.shape, dtype=np.int64)) if t.shape else 1
        return total

    def release(self, name: str) -> None:
        """Internal, for streaming over checkpoints larger than memory: drop
        this process's mapped pages of a tensor (they stay in the page cache
        and are read again if touched). Writes through zero-copy views of
        them are lost, so only for tensors no view of the caller modifies."""
        handle = self._handle_for(name)
        if handle._file.backend == "mmap":
            handle._file.release(name)

    def raw_spec(self, name: str, keep_alive: list) -> tuple:
        """``(name, code, shape, data, nbytes)`` of the tensor's stored
        bytes, for the writer: a zero-copy view of the mapping (mmap backend)
        or a fresh read (pread). The buffer is appended to ``keep_alive``."""
        handle = self._handle_for(name)
        file = handle._file
        _, dtype, shape, begin, end = file.info(name)
        nbytes = end - begin
        if nbytes == 0:
            return (name, dtype, list(shape), None, 0)
        if file.backend == "mmap":
            raw = file.view(name)
        else:
            raw = np.empty(nbytes, np.uint8)
            file.read_into(name, 0, raw)
        keep_alive.append(raw)
        return (name, dtype, list(shape), raw, nbytes)

    def __repr__(self) -> str:
        kind = f"{len(self.files)} shards" if self.is_sharded else "1 file"
        return f"<fastensors.Checkpoint {self.path!r} ({kind}, {len(self.weight_map)} tensors)>"


def open_checkpoint(path, framework: str = "np", *, lazy: bool = True, remap=None, include=None, exclude=None,
                    prefix=None, **safe_open_kwargs) -> Checkpoint:
    """Open a single safetensors file, a directory holding one, or a sharded
    checkpoint (its directory or its index JSON) as one object with the
    ``safe_open`` interface. ``safe_open_kwargs`` (``device``, ``backend``,
    ...) go to each shard's ``safe_open``. ``lazy=False`` checks every shard
    against the index now instead of on first use.

    ``include``/``exclude`` (regexes), ``prefix`` (kept and stripped) and
    ``remap`` choose and rename the tensors seen (``fastensors.remap``)."""
    ckpt = Checkpoint(path, framework, lazy=lazy, **safe_open_kwargs)
    from .remap import KeySelection

    if not KeySelection.wanted(remap, include, exclude, prefix):
        return ckpt
    from ._selected import SelectedCheckpoint

    try:
        selection = KeySelection(ckpt.weight_map, remap=remap, include=include, exclude=exclude, prefix=prefix)
    except BaseException:
        ckpt.close()
        raise
    return SelectedCheckpoint(ckpt, selection)


# -- metadata helpers -------------------------------------------------------------

@dataclass(frozen=True)
class SafetensorsFileMetadata:
    """One file's header: ``metadata`` (``__metadata__``), ``tensors`` and the
    number of parameters per dtype (the names huggingface_hub uses)."""

    metadata: Dict[str, str]
    tensors: Dict[str, TensorInfo]
    parameter_count: Dict[str, int]


@dataclass(frozen=True)
class SafetensorsCheckpointMetadata:
    """A checkpoint's headers: ``metadata`` is the index's metadata (None for
    a single file), ``weight_map`` maps each tensor to its file,
    ``files_metadata`` holds each file's header and ``parameter_count`` the
    parameters per dtype over all files."""

    metadata: Optional[Dict[str, object]]
    sharded: bool
    weight_map: Dict[str, str]
    files_metadata: Dict[str, SafetensorsFileMetadata]
    parameter_count: Dict[str, int]


def get_safetensors_metadata(path) -> SafetensorsCheckpointMetadata:
    """Headers of a safetensors file or sharded checkpoint; no tensor data is read."""
    with open_checkpoint(path, backend="pread") as ckpt:
        ckpt.verify()
        files: Dict[str, SafetensorsFileMetadata] = {}
        totals: Dict[str, int] = {}
        for fname in ckpt.files:
            handle = ckpt._shard(fname)
            tensors: Dict[str, TensorInfo] = {}
            counts: Dict[str, int] = {}
            for name in handle.offset_keys():
                info = handle.tensor_info(name)
                tensors[name] = info
                n = int(np.prod(info.shape, dtype=np.int64)) if info.shape else 1
                counts[info.dtype] = counts.get(info.dtype, 0) + n
                totals[info.dtype] = totals.get(info.dtype, 0) + n
            files[fname] = SafetensorsFileMetadata(handle.metadata() or {}, tensors, counts)
        return SafetensorsCheckpointMetadata(
            metadata=dict(ckpt.index_metadata) if ckpt.is_sharded else None,
            sharded=ckpt.is_sharded,
            weight_map=dict(ckpt.weight_map),
            files_metadata=files,
            parameter_count=totals,
        )


def list_safetensors_tensors(path) -> List[CheckpointTensor]:
    """Every tensor of a safetensors file or sharded checkpoint (name, file,
    dtype, shape, offsets), sorted by name; no tensor data is read."""
    with open_checkpoint(path, backend="pread") as ckpt:
        return ckpt.tensors()


__all__ = [
    "open_checkpoint", "Checkpoint", "CheckpointTensor", "get_safetensors_metadata", "list_safetensors_tensors",
    "SafetensorsFileMetadata", "SafetensorsCheckpointMetadata", "read_index", "locate",
]
