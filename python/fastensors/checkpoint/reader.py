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
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from .. import _core
from ..errors import (
    CheckpointNotFound,
    InvalidArgument,
    SafetensorError,
    ShardNotFound,
    TensorInMultipleShards,
    TensorMissingFromShard,
    TensorNotFound,
    UnlistedTensor,
    with_context as _error,
)
from ..format.dtypes import code_from_numpy, code_from_spec_name
from ..format.plans import ReadAhead, prefetch as _prefetch, read_arrays
from ..format.reader import TensorInfo, safe_open
from ..remap import KeySelection
from ..sources import check_backend, is_url, open_source, urls
from .index import MAX_INDEX_BYTES, check_file_entry, check_weight_map, parse_index

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
    ``safe_open`` handle.

    ``include``/``exclude`` (regexes), ``prefix`` (kept and stripped) and
    ``remap`` choose and rename the tensors seen, as in ``safe_open``: every
    method then speaks the new names, and ``weight_map`` maps them to files.
    Shards and the index keep their stored names; ``stored_name`` translates."""

    def __init__(self, path, framework: str = "np", *, lazy: bool = True, remap=None, include=None,
                 exclude=None, prefix=None, **safe_open_kwargs):
        self._framework = framework
        self._kwargs = safe_open_kwargs
        self._handles: Dict[str, safe_open] = {}
        self._lock = threading.Lock()
        self._checked = False
        self._files: Optional[List[str]] = None
        self._by_file_cache: Optional[Dict[str, List[str]]] = None
        self._counts: Optional[Dict[str, int]] = None
        self._ahead: Optional[ReadAhead] = None
        self._remote = is_url(path)
        # Local paths: the C++ Checkpoint locates, parses the index and checks
        # each shard against it as it opens it (the rules below, same errors).
        self._core: Optional[_core.Checkpoint] = None
        self._file_ids: Dict[str, int] = {}
        raw_index = None  # a remote index's bytes, kept for verify()
        if self._remote:  # docs/remote.md: the index is fetched whole, shard headers by ranges
            so, opts = safe_open_kwargs.get("storage_options"), safe_open_kwargs.get("remote")
            kind, found = urls.locate_url(path, so, opts)
            self.path = found
            self.directory: Optional[str] = urls.parent(found)
            if kind == "index":
                try:
                    raw_index = urls.fetch_small(found, MAX_INDEX_BYTES, so, opts)
                except FileNotFoundError:
                    raise _error(CheckpointNotFound, f"index {found!r} does not exist", path=found) from None
        else:
            check_backend(safe_open_kwargs.get("backend", "mmap"))
            self._core = _core.Checkpoint(_fs_bytes(path), safe_open_kwargs.get("backend", "mmap"))
            kind = "index" if self._core.sharded else "file"
            self.path = self._core.path
            self.directory = self._core.directory
        if kind == "index" and self._core is not None:
            self.is_sharded = True
            self.index_path: Optional[str] = self.path
            # Parsed, without duplicate keys, every entry checked (C++): one
            # pass, cheaper than Python's json for a large index.
            self._stored_map = self._core.weight_map()
            self.index_metadata = json.loads(self._core.index_metadata_json)
            self._files = self._core.files
            self._file_ids = {f: i for i, f in enumerate(self._files)}
            if not lazy:
                self.verify()
        elif kind == "index":
            self.is_sharded = True
            self.index_path = self.path
            # Entries are checked as shards are opened, and all at once by
            # verify(): opening and reading one tensor costs one JSON parse
            # and one shard header, like the reference way.
            self._raw_index = raw_index
            self._stored_map, self.index_metadata = parse_index(self.path, check_duplicates=not lazy, raw=raw_index)
            self._duplicates_checked = not lazy
            if not lazy:
                self.verify()
        elif self._core is not None:
            self.is_sharded = False
            self.index_path = None
            self.index_metadata = {}
            name = self._core.files[0]
            self._file_ids = {name: 0}
            self._stored_map = dict.fromkeys(sorted(self._core.weight_map()), name)
            self._files = [name]
            self._handles[name] = self._open_file(name)
            self._checked = True
        else:
            self.is_sharded = False
            self.index_path = None
            self.index_metadata = {}
            name = self.path.rstrip("/").rsplit("/", 1)[-1] if self._remote else os.path.basename(self.path)
            handle = self._open_file(name)
            self._handles[name] = handle
            self._stored_map = {k: name for k in handle.keys()}
            self._files = [name]
            self._checked = True
        self._select: Optional[KeySelection] = None
        self.weight_map: Dict[str, str] = self._stored_map
        if KeySelection.wanted(remap, include, exclude, prefix):
            try:
                self._select = KeySelection(self._stored_map, remap=remap, include=include, exclude=exclude,
                                            prefix=prefix)
            except BaseException:
                self.close()
                raise
            self.weight_map = {k: self._stored_map[v] for k, v in self._select.to_stored.items()}

    def stored_name(self, name: str) -> str:
        """The name ``name`` (as this object shows it) has in the files."""
        if self._select is None:
            return name
        return self._select.stored(name, f" in checkpoint {self.path!r}")

    def _public(self, stored_names) -> List[str]:
        """Stored names -> the names shown, dropping the unselected."""
        if self._select is None:
            return list(stored_names)
        public = self._select.to_public
        return [public[n] for n in stored_names if n in public]

    @property
    def files(self) -> List[str]:
        """The files holding the tensors, in order of first appearance in the index."""
        if self._files is None:
            self._files = list(dict.fromkeys(self._stored_map.values()))
        return self._files

    @property
    def _by_file(self) -> Dict[str, List[str]]:
        if self._by_file_cache is None:
            by_file: Dict[str, List[str]] = {f: [] for f in self.files}
            for tensor, fname in self._stored_map.items():
                by_file[fname].append(tensor)
            self._by_file_cache = by_file
        return self._by_file_cache

    # -- shards ----------------------------------------------------------------------
    def _join(self, fname: str) -> str:
        return urls.join(self.directory, fname) if self._remote else os.path.join(self.directory, fname)

    def _open_file(self, fname: str) -> safe_open:
        # A local shard is opened, and checked against the index, by the C++ Checkpoint.
        source = self._join(fname) if self._core is None else self._core.shard(self._file_ids[fname])
        handle = safe_open(source, self._framework, **self._kwargs)
        handle._read_ahead = False  # this object reads ahead across its shards (_touch)
        return handle

    def _shard(self, fname: str) -> safe_open:
        handle = self._handles.get(fname)
        if handle is not None:
            return handle
        with self._lock:  # shards are written from several threads when resharding
            return self._open_shard(fname)

    def _open_shard(self, fname: str) -> safe_open:
        handle = self._handles.get(fname)
        if handle is None and self._core is not None:
            handle = self._open_file(fname)
            self._handles[fname] = handle
        elif handle is None:
            if self.is_sharded:
                check_file_entry(self._stored_map, fname, self.path)
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
                     f" {listed[0]!r}{more} in it", tensor=listed[0], path=self._join(fname))

    def _check_shard(self, fname: str, handle: safe_open) -> None:
        """Every tensor of the shard maps to it in the index (tensors listed
        for it but absent are found by ``_check_counts`` or on access)."""
        shard_path = self._join(fname)
        names = handle.keys()
        weight_map = self._stored_map
        for tensor in names:
            listed = weight_map.get(tensor)
            if listed == fname:
                continue
            if listed is None:
                raise _error(UnlistedTensor, f"shard {fname!r} holds tensor {tensor!r}, which index {self.path!r}"
                             " does not list", tensor=tensor, path=shard_path)
            check_file_entry(weight_map, listed, self.path)  # before looking into that file
            other = self._join(listed)
            if tensor in self._peek_keys(listed):
                raise _error(TensorInMultipleShards, f"tensor {tensor!r} is stored in two shards, {listed!r} (where"
                             f" index {self.path!r} maps it) and {fname!r}", tensor=tensor, path=shard_path)
            raise _error(TensorMissingFromShard, f"index {self.path!r} lists tensor {tensor!r} in shard {listed!r},"
                         f" which does not hold it (shard {fname!r} does)", tensor=tensor, path=other)

    def _check_counts(self, fname: str) -> None:
        """The index maps no more tensors to ``fname`` than the shard holds."""
        if self._counts is None:
            self._counts = Counter(self._stored_map.values())
        names = self._handles[fname].keys()
        if self._counts[fname] != len(names):
            present = set(names)
            for tensor in self._by_file[fname]:
                if tensor not in present:
                    self._listed_but_absent(tensor, fname)

    def _listed_but_absent(self, tensor: str, fname: str):
        raise _error(TensorMissingFromShard, f"index {self.path!r} lists tensor {tensor!r} in shard {fname!r},"
                     " which does not hold it", tensor=tensor, path=self._join(fname))

    def _peek_keys(self, fname: str) -> set:
        handle = self._handles.get(fname)
        if handle is not None:
            return set(handle.keys())
        try:
            f = open_source(self._join(fname), "pread", storage_options=self._kwargs.get("storage_options"),
                            options=self._kwargs.get("remote"))
        except (FileNotFoundError, SafetensorError):
            return set()
        try:
            return set(f.keys())
        finally:
            f.close()

    def _handle_for(self, name: str) -> safe_open:
        fname = self._stored_map.get(name)
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
        if not self._checked and self._core is not None:
            self._core.verify()  # every shard exists and agrees with the index
            for fname in self.files:
                self._shard(fname)
            self._checked = True
        if not self._checked:
            if self.is_sharded:
                if not self._duplicates_checked:
                    parse_index(self.path, raw=self._raw_index)
                    self._duplicates_checked = True
                check_weight_map(self._stored_map, self.path)
                self._open_concurrently()
            for fname in self.files:
                self._shard(fname)
                self._check_counts(fname)
            self._checked = True
        return self

    def _open_concurrently(self) -> None:
        """Remote shards: their headers are fetched at once, not one by one."""
        todo = [f for f in self.files if f not in self._handles]
        if len(todo) < 2:
            return
        opened: Dict[str, safe_open] = {}

        def one(fname):
            try:
                opened[fname] = self._open_file(fname)
            except FileNotFoundError:
                pass  # reported as a missing shard, in index order, below

        with ThreadPoolExecutor(min(16, len(todo)), thread_name_prefix="fastensors-shard-headers") as pool:
            futures = [pool.submit(one, f) for f in todo]
        try:
            for fut in futures:
                fut.result()
        except BaseException:
            for h in opened.values():
                h.close()
            raise
        with self._lock:
            for fname in todo:  # checked against the index as if opened in order
                handle = opened.get(fname)
                if handle is None:
                    continue
                try:
                    self._check_shard(fname, handle)
                except BaseException:
                    for h in opened.values():
                        h.close()
                    raise
                self._handles.setdefault(fname, handle)

    # -- the safe_open interface ---------------------------------------------------------
    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, _exc_type, _exc, _tb) -> None:
        self.close()

    def close(self) -> None:
        """Close every open shard. Tensors already returned stay valid."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        if self._core is not None:
            self._core.close()
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
            out.extend(self._public(self._shard(fname).offset_keys()))
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
        stored = self.stored_name(name)
        return self._handle_for(stored).tensor_info(stored)

    def get_tensor(self, name: str, **kwargs):
        stored = self.stored_name(name)
        handle = self._handle_for(stored)
        if handle._file.backend == "mmap" and not handle._staged():
            self._read_ahead().touch(stored)
        return handle.get_tensor(stored, **kwargs)

    def read_into(self, name: str, out, *, start: Optional[Sequence[int]] = None,
                  stop: Optional[Sequence[int]] = None, dtype: Optional[str] = None) -> int:
        """Read a tensor, or the box ``[start, stop)`` of it, into caller
        memory: the C++ ``Checkpoint::read_box`` path, so only the box's
        bytes are read, by the parallel read engine, straight into ``out``.

        Args:
            name: the tensor.
            out: writable, C-contiguous memory of at least the bytes read: a
                numpy array or CPU ``torch.Tensor`` of the dtype read (of
                uint8 for raw bytes), or any writable buffer (``bytearray``,
                ``memoryview``, ``mmap``).
            start, stop: one index per axis (``0 <= start <= stop <=
                shape``); default the whole tensor. Elements come out
                row-major, back to back.
            dtype: ``"F32"``, ``"F16"`` or ``"BF16"`` to convert on the way
                (the conversions of ``fastensors.convert``); default the
                stored dtype.

        Returns:
            The number of bytes written at the start of ``out``.

        Raises:
            TensorNotFound, InvalidArgument (a box outside the tensor, a
            sub-byte box that does not end on a byte, memory that is not
            writable or contiguous, an ``out`` array or tensor whose dtype
            is not the one read (uint8 takes any bytes), a remote
            checkpoint), UnknownDtype, SizeMismatch
            (``out`` too small), UnsupportedConversion, Io, FileChanged.
        """
        if self._core is None:
            raise InvalidArgument("read_into reads local checkpoints; this one is remote (use get_tensor)")
        stored = self.stored_name(name)
        handle = self._handle_for(stored)  # the shard opened and checked against the index, errors as get_tensor's
        dst, elements = _out_bytes(out)
        box = [None if v is None else [_index(i, what) for i in _seq(v, what)] for v, what in ((start, "start"),
                                                                                           (stop, "stop"))]
        if dtype is not None and not isinstance(dtype, str):
            raise InvalidArgument(f"dtype must be a dtype name such as 'F32', not {type(dtype).__name__}")
        produced = dtype if dtype is not None else handle.tensor_info(stored).dtype
        if elements is not None and elements != produced:
            raise InvalidArgument(f"out holds {elements} elements, the read of {name!r} gives {produced}"
                                  + (" (pass dtype= to convert, or a uint8 view for raw bytes)" if dtype is None
                                     else ""))
        return self._core.read_into(stored, dst, box[0], box[1], dtype)

    def get_slice(self, name: str, **kwargs):
        stored = self.stored_name(name)
        return self._handle_for(stored).get_slice(stored, **kwargs)

    def get_tensors(self) -> Dict[str, object]:
        """Every tensor, shard by shard in data order. The mapped bytes of all
        shards are made resident first by one plan of the read engine, so
        every shard is read at once (docs/read_engine.md)."""
        self.verify()
        ranges = []
        for fname in self.files:
            handle = self._shard(fname)
            if handle._file.backend != "mmap" or handle._staged():
                continue
            for info in handle._file.infos():
                if self._select is None or info[0] in self._select.to_public:
                    ranges.append(handle._range(info))
        _prefetch(ranges)
        if self._select is not None:
            out = {}
            for name in self.offset_keys():
                stored = self.stored_name(name)
                out[name] = self._handle_for(stored).get_tensor(stored)
            return out
        out: Dict[str, object] = {}
        if self._remote:  # every shard's ranges in one call: the shards are fetched concurrently
            names, ranges = [], []
            for fname in self.files:
                handle = self._shard(fname)
                for info in handle._file.infos():
                    names.append((fname, info[0]))
                    ranges.append(handle._range(info))
            by_shard: Dict[str, Dict[str, np.ndarray]] = {f: {} for f in self.files}
            for (fname, name), raw in zip(names, read_arrays(ranges)):
                by_shard[fname][name] = raw
            for fname in self.files:
                out.update(self._shard(fname)._tensors(prefetched=True, raws=by_shard[fname]))
            return out
        for fname in self.files:
            handle = self._shard(fname)
            handle._check_dtypes()  # a dtype the framework lacks: a typed error naming the tensor
            out.update(handle._tensors(prefetched=True))
        return out

    def prefetch(self, names) -> None:
        """Start reading ``names`` (in this order) ahead of the ``get_tensor``
        calls that will follow, at most ``format.plans.READ_AHEAD_BYTES``
        ahead of them; returns at once. Errors show in ``get_tensor``."""
        stored = list(dict.fromkeys(self.stored_name(n) for n in names))  # each once, first place kept
        mapped = [n for n in stored if self._handle_for(n)._file.backend == "mmap"]
        self._read_ahead().expect(mapped)

    def _read_ahead(self) -> ReadAhead:
        if self._ahead is None:
            def orders():  # opens the shards, checked as usual; a broken one turns read-ahead off
                by_offset = [n for f in self.files for n in self._shard(f)._file.offset_keys()
                             if self._select is None or n in self._select.to_public]
                return [[self.stored_name(n) for n in sorted(self.weight_map)], by_offset]  # sorted: the usual loop

            def locate(stored: str):
                handle = self._handle_for(stored)
                return handle._range(handle._file.info(stored))

            self._ahead = ReadAhead(orders, locate)
        return self._ahead

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
        return self._public(self._by_file[fname])

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
        stored = self.stored_name(name)
        handle = self._handle_for(stored)
        if handle._file.backend == "mmap":
            handle._file.release(stored)

    def raw_spec(self, name: str, keep_alive: list) -> tuple:
        """``(name, code, shape, data, nbytes)`` of the tensor's stored
        bytes, for the writer: a zero-copy view of the mapping (mmap backend)
        or a fresh read (pread). The buffer is appended to ``keep_alive``."""
        stored = self.stored_name(name)
        handle = self._handle_for(stored)
        file = handle._file
        if file.backend == "mmap":
            self._read_ahead().touch(stored)
        _, dtype, shape, begin, end = file.info(stored)
        nbytes = end - begin
        if nbytes == 0:
            return (name, dtype, list(shape), None, 0)
        if file.backend == "mmap":
            raw = file.view(stored)
        else:
            raw = np.empty(nbytes, np.uint8)
            file.read_into(stored, 0, raw)
        keep_alive.append(raw)
        return (name, dtype, list(shape), raw, nbytes)

    def __repr__(self) -> str:
        kind = f"{len(self.files)} shards" if self.is_sharded else "1 file"
        selected = "" if self._select is None else f", {len(self.weight_map)} selected"
        return f"<fastensors.Checkpoint {self.path!r} ({kind}, {len(self._stored_map)} tensors{selected})>"


def _seq(value, what: str) -> list:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise InvalidArgument(f"{what} must be a sequence of ints, one per axis, not {type(value).__name__}")
    return list(value)


def _index(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgument(f"{what} must hold ints, not {type(value).__name__}")
    if not 0 <= int(value) < 1 << 63:
        raise InvalidArgument(f"{what} must hold non-negative ints below 2**63, not {int(value)}")
    return int(value)


def _out_bytes(out) -> Tuple[np.ndarray, Optional[str]]:
    """``out`` as a writable 1-D uint8 view of the same memory, and the
    safetensors code of its elements (None for bytes: uint8 arrays and
    plain buffers take any dtype's bytes)."""
    code: Optional[str] = None
    if type(out).__module__.split(".")[0] == "torch":
        import torch

        if not isinstance(out, torch.Tensor) or out.device.type != "cpu" or not out.is_contiguous():
            raise InvalidArgument("out must be a contiguous CPU tensor")
        if out.dtype != torch.uint8:
            code = code_from_spec_name(str(out.dtype).split(".")[-1])
        out = out.detach().reshape(-1).view(torch.uint8).numpy()
    if isinstance(out, np.ndarray):
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise InvalidArgument("out must be a writable, C-contiguous array")
        if code is None and out.dtype != np.uint8:
            code = code_from_numpy(out.dtype)
        return out.reshape(-1).view(np.uint8), code
    try:
        view = memoryview(out)
    except TypeError:
        raise InvalidArgument(f"out must be an array or a writable buffer, not {type(out).__name__}") from None
    if view.readonly or not view.c_contiguous:
        raise InvalidArgument("out must be writable, C-contiguous memory")
    return np.frombuffer(view.cast("B"), np.uint8), None


def _fs_bytes(path) -> bytes:
    """A local path as the bytes the OS sees (names that are not UTF-8 too)."""
    path = os.fspath(path)
    return path if isinstance(path, bytes) else os.fsencode(path)


def open_checkpoint(path, framework: str = "np", *, lazy: bool = True, remap=None, include=None, exclude=None,
                    prefix=None, **safe_open_kwargs) -> Checkpoint:
    """Open a single safetensors file, a directory holding one, or a sharded
    checkpoint (its directory or its index JSON) as one object with the
    ``safe_open`` interface. ``safe_open_kwargs`` (``device``, ``backend``,
    ...) go to each shard's ``safe_open``. ``lazy=False`` checks every shard
    against the index now instead of on first use.

    ``include``/``exclude`` (regexes), ``prefix`` (kept and stripped) and
    ``remap`` choose and rename the tensors seen (``fastensors.remap``).

    Raises ``CheckpointNotFound``, ``AmbiguousCheckpoint``, ``InvalidIndex``
    and the errors of ``safe_open`` for the shards it opens."""
    return Checkpoint(path, framework, lazy=lazy, remap=remap, include=include, exclude=exclude, prefix=prefix,
                      **safe_open_kwargs)


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


def get_safetensors_metadata(path, **safe_open_kwargs) -> SafetensorsCheckpointMetadata:
    """Headers of a safetensors file or sharded checkpoint (a path or a URL;
    ``safe_open_kwargs`` such as ``storage_options`` go to each shard's
    ``safe_open``); no tensor data is read."""
    with open_checkpoint(path, backend="pread", **safe_open_kwargs) as ckpt:
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


def list_safetensors_tensors(path, **safe_open_kwargs) -> List[CheckpointTensor]:
    """Every tensor of a safetensors file or sharded checkpoint (name, file,
    dtype, shape, offsets), sorted by name; no tensor data is read."""
    with open_checkpoint(path, backend="pread", **safe_open_kwargs) as ckpt:
        return ckpt.tensors()


__all__ = [
    "open_checkpoint", "Checkpoint", "CheckpointTensor", "get_safetensors_metadata", "list_safetensors_tensors",
    "SafetensorsFileMetadata", "SafetensorsCheckpointMetadata",
]
