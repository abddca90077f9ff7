"""Editing a checkpoint in place: a new header in front of the unchanged data
section, safe for files much larger than memory.

Each file is rewritten into a staging file on the same filesystem (new
header, then the data section copied by the kernel: ``copy_file_range``,
else ``sendfile``, else a chunked ``pread``/``write``), fsynced, and moved
over the original by ``_fileset.FileSet``, which commits a sharded
checkpoint's shards and index as one set. Until that commit the original is
untouched, so a crash at any point leaves it intact; ``backup`` keeps the
old bytes as ``NAME.backup`` (a hard link, made before the commit).

``_fileset._step_hook`` sees every step (``rewrite-staged:NAME`` after each
staged file, then the commit's own steps), which is where fault-injection
tests stop the process."""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from .. import _core
from ..checkpoint import commit as _fileset
from ..errors import InvalidArgument, TruncatedData
from ..checkpoint.commit import FileSet, fsync_file
from ..format.writer import _check_metadata, _check_names, resolve_durable

BACKUP_SUFFIX = ".backup"

# Errors after which the next copy method is tried (the first call failed:
# another filesystem, an old kernel, a file system without support).
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOTSUP, errno.EPERM}
_CHUNK = 16 << 20


@dataclass
class Header:
    """What an edit may change in one file: the metadata (None: no
    ``__metadata__``) and the tensors, in file order, as
    ``(name, dtype, shape, nbytes)``."""

    metadata: Optional[Dict[str, str]]
    tensors: List[Tuple[str, str, List[int], int]]
    data_start: int = 0
    data_size: int = 0


def read_header(path: str) -> Header:
    """The header of ``path`` (validated by the core; no tensor data read)."""
    f = _core.File(path, "pread")
    try:
        infos = f.infos()
        meta = f.metadata()
    finally:
        f.close()
    tensors = [(name, dtype, list(shape), end - begin) for name, dtype, shape, begin, end in infos]
    data_size = max((end for *_, end in infos), default=0)
    return Header(meta, tensors, os.path.getsize(path) - data_size, data_size)


def header_bytes(header: Header) -> bytes:
    """The serialized header for ``header``, tensors kept in their order so
    the data section can be copied unchanged."""
    specs = _check_names([[name, dtype, shape, None, nbytes] for name, dtype, shape, nbytes in header.tensors])
    return _core.plan_header_in_order([tuple(s) for s in specs], _check_metadata(header.metadata))


# -- copying the data section ----------------------------------------------------


def _copy_file_range(src: int, dst: int, offset: int, count: int) -> int:
    return os.copy_file_range(src, dst, count, offset)


def _sendfile(src: int, dst: int, offset: int, count: int) -> int:
    return os.sendfile(dst, src, offset, count)


def _pread_write(src: int, dst: int, offset: int, count: int) -> int:
    data = os.pread(src, min(count, _CHUNK), offset)
    view = memoryview(data)
    while view:
        n = os.write(dst, view)
        view = view[n:]
    return len(data)


COPY_METHODS: List[Tuple[str, Callable[[int, int, int, int], int]]] = [
    (name, fn) for name, fn in (("copy_file_range", _copy_file_range), ("sendfile", _sendfile),
                                ("pread", _pread_write))
    if name == "pread" or hasattr(os, name)
]


def copy_range(src: int, dst: int, offset: int, count: int, methods=None) -> str:
    """Append ``count`` bytes of ``src`` from ``offset`` to ``dst`` (at its
    current position). Returns the name of the method that finished."""
    methods = list(COPY_METHODS if methods is None else methods)
    done = 0
    while methods:
        name, fn = methods[0]
        try:
            while done < count:
                n = fn(src, dst, offset + done, min(count - done, 1 << 30))
                if n == 0:
                    raise TruncatedData(f"the file ended {count - done} bytes before its data section did")
                done += n
            return name
        except OSError as e:
            if e.errno not in _FALLBACK_ERRNOS or len(methods) == 1:
                raise
            methods.pop(0)
    return "none"


def write_rewritten(src: str, header: Header, dst: str, durable: bool) -> None:
    """Write ``header`` then the data section of ``src`` to ``dst`` (new)."""
    new_head = header_bytes(header)
    in_fd = os.open(src, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(in_fd).st_size
        if size != header.data_start + header.data_size:
            raise TruncatedData(f"{src!r} changed while being edited")
        out_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            with _fileset.naming("write", dst):
                view = memoryview(new_head)
                while view:
                    view = view[os.write(out_fd, view):]
                copy_range(in_fd, out_fd, header.data_start, header.data_size)
                os.chmod(dst, os.fstat(in_fd).st_mode & 0o7777)
            if durable:
                with _fileset.naming("fsync", dst):
                    os.fsync(out_fd)
        finally:
            # close() reports write-back errors of file systems that defer them.
            with _fileset.naming("close", dst):
                os.close(out_fd)
    finally:
        os.close(in_fd)


# -- single files and sharded checkpoints -----------------------------------------

Edit = Callable[[str, Header], Header]


def _backup(path: str, durable: bool) -> str:
    """``path`` + ``.backup``: a second name for the current bytes."""
    target = path + BACKUP_SUFFIX
    mark = _fileset.STAGING_MARK.strip("-.") + "-"
    tmp = f"{target}.{mark}{os.getpid()}"
    # Temporaries of backups whose writer was killed.
    directory, base = os.path.split(target)
    for name in os.listdir(directory):
        if name.startswith(f"{base}.{mark}"):
            pid = _fileset._owner_pid(name, mark)
            if pid is not None and (pid == os.getpid() or not _fileset._pid_alive(pid)):
                _fileset._unlink(os.path.join(directory, name))
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
        if durable:
            fsync_file(tmp)
    _fileset._step(f"backup:{os.path.basename(path)}")
    os.replace(tmp, target)
    # rename(2) does nothing when both names are links to one file (a backup
    # made by an editor killed before its commit): drop the temporary name.
    _fileset._unlink(tmp)
    return target


def rewrite_file(path, edit: Edit, *, backup: bool = False, durable: Optional[bool] = None) -> str:
    """Apply ``edit`` (``(name, header) -> new header``) to the safetensors
    file ``path`` in place. Returns the path."""
    path = os.path.abspath(os.fspath(path))
    durable = resolve_durable(durable)
    header = read_header(path)
    new = edit(os.path.basename(path), header)
    directory, name = os.path.split(path)
    # Staged next to the file: a single-file edit touches nothing outside its directory.
    with FileSet(directory, durable=durable, stage_inside=True) as fs:
        write_rewritten(path, new, fs.add_weight(name), durable)
        _fileset._step(f"rewrite-staged:{name}")
        if backup:
            _backup(path, durable)
        if durable:
            _fileset.fsync_dir(directory)
        fs.commit()
    return path


def rewrite_checkpoint(path, edit: Edit, *, index_edit: Optional[Callable[[dict], dict]] = None,
                       backup: bool = False, durable: Optional[bool] = None) -> List[str]:
    """Apply ``edit`` to every file of the checkpoint at ``path`` (a file,
    a directory, or an index JSON); for a sharded checkpoint the shards and
    the index (changed by ``index_edit``, which also gets the renamed
    weight map) are committed as one set. Returns the files rewritten."""
    from ..checkpoint import locate, parse_index

    kind, where = locate(path)
    if kind == "file":
        return [rewrite_file(where, edit, backup=backup, durable=durable)]
    durable = resolve_durable(durable)
    directory, index_name = os.path.split(os.path.abspath(where))
    weight_map, _ = parse_index(where)
    with open(where, "rb") as f:
        index = json.loads(f.read().decode("utf-8"))
    shards = list(dict.fromkeys(weight_map.values()))
    for fname in shards:
        if "/" in fname or "\\" in fname:
            raise InvalidArgument(f"shard {fname!r} is in a subdirectory; edits need shards beside their index")
    new_map: Dict[str, str] = {}
    written = []
    with FileSet(directory, durable=durable) as fs:
        for fname in shards:
            src = os.path.join(directory, fname)
            header = read_header(src)
            new = edit(fname, header)
            # A checkpoint left on interim names by a killed writer gets its
            # final names back; the interim files are then removed as stale.
            out_name = _fileset.final_name(fname)
            for (old_name, *_), (new_name, *_) in zip(header.tensors, new.tensors):
                if old_name in weight_map:
                    new_map[new_name] = out_name
            write_rewritten(src, new, fs.add_weight(out_name), durable)
            _fileset._step(f"rewrite-staged:{out_name}")
            written.append(src)
        index["weight_map"] = new_map
        if index_edit is not None:
            index = index_edit(index)
        fs.set_index(index_name, index, _index_dumps)
        if backup:
            for fname in shards + [index_name]:
                _backup(os.path.join(directory, fname), durable)
        if durable:
            _fileset.fsync_dir(directory)
        fs.commit()
    return written


def _index_dumps(index: dict) -> str:
    return json.dumps(index, indent=2, ensure_ascii=False) + "\n"


def renamed(header: Header, mapping: Mapping[str, str]) -> Header:
    """``header`` with tensors renamed by ``mapping`` (absent names kept)."""
    return Header(header.metadata,
                  [(mapping.get(n, n), d, s, b) for n, d, s, b in header.tensors],
                  header.data_start, header.data_size)
