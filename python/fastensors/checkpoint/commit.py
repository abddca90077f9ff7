"""Committing a set of files (weight shards, their index, companion files such
as config.json) into a directory so that, at every instant, the directory
holds a complete old checkpoint or a complete new one, whatever the reader's
rule for choosing between ``model.safetensors`` and its index.

New files are first written to a staging directory on the same filesystem,
then moved in with rename(2); the index (or the single weights file) is moved
last, and files of the previous checkpoint are removed only once the new one
is in place. When new shard names equal names the current index uses, the new
shards come in under interim names, an interim index pointing at them is
committed, and only then are the final names (hard links) and the final
index put in place. A set with companion files (config.json, ...) that
replaces an existing directory is committed by exchanging the whole directory
with a staged copy (renameat2 RENAME_EXCHANGE), so weights and config change
together. docs/sharding.md states the protocol and why each step is where it
is."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import sys
from typing import Callable, Iterable, Iterator, List, Optional, Pattern, Set

from ..errors import _io_error

STAGING_MARK = ".fastensors-staging-"
INTERIM_MARK = ".fastensors-interim-"

# Called with a label before every step that changes the target directory.
# Tests install a hook that kills the process at a chosen step; None otherwise.
_step_hook: Optional[Callable[[str], None]] = None


def _step(label: str) -> None:
    if _step_hook is not None:
        _step_hook(label)


@contextlib.contextmanager
def naming(what: str, path: str) -> Iterator[None]:
    """OSErrors raised inside name ``path``: os.fsync, file writes and
    copies report only the errno, which says nothing about which file of a
    set failed."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise _io_error(e.errno, f"{what} failed: {e.strerror or e}", path) from e


def fsync_dir(path: str) -> None:
    # A failed fsync is final: never retried (the kernel may have dropped the
    # dirty pages, so a second fsync could succeed with the data lost).
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with naming("fsync of the directory", path):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        with naming("fsync", path):
            os.fsync(fd)
    finally:
        os.close(fd)


def stale_pattern(filename_pattern: str) -> Pattern[str]:
    """Names a save with ``filename_pattern`` owns: the single file, its shards
    and its index (``model.safetensors``, ``model-00001-of-00002.safetensors``,
    ``model.safetensors.index.json``)."""
    prefix, _, suffix = filename_pattern.partition("{suffix}")
    return re.compile(re.escape(prefix) + r"(-\d{5}-of-\d{5})?" + re.escape(suffix) + r"(\.index\.json)?")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_pid(name: str, mark: str) -> Optional[int]:
    """The writer's pid encoded in a staging/interim name, if it is one."""
    i = name.find(mark)
    if i < 0:
        return None
    rest = name[i + len(mark):]
    pid = rest.split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def final_name(name: str) -> str:
    """The name a shard committed under an interim name (by a writer killed
    between its interim and final index) was meant to have."""
    if not name.startswith(INTERIM_MARK):
        return name
    parts = name[len(INTERIM_MARK):].split("-", 2)
    if len(parts) == 3 and parts[0].isdigit() and parts[2] and not parts[2].startswith("link-"):
        return parts[2]
    return name


def _referenced(directory: str, patterns: Iterable[Pattern[str]]) -> Set[str]:
    """Files the checkpoint currently in ``directory`` may depend on: every name
    any ``*.index.json`` there maps to. When an index cannot be parsed, every
    file matching ``patterns`` counts (the safe side)."""
    out: Set[str] = set()
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return out
    pats = list(patterns)
    for name in names:
        if not name.endswith(".index.json"):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                weight_map = json.loads(f.read()).get("weight_map")
            out.update(v for v in weight_map.values() if isinstance(v, str))
        except (OSError, ValueError, AttributeError):
            out.update(n for n in names if any(p.fullmatch(n) for p in pats))
    return out


class FileSet:
    """New files for ``directory``, staged and then committed as one set.

    Use as a context manager: leaving the block without ``commit()`` (an
    exception) removes the staging directory and leaves the target untouched.

    - ``weights``: weight files (shards, or the single file) in commit order;
      write each at ``path(name)``.
    - ``index``: the index file name and its content, or None for one file.
    - ``companions``: other files (config.json, ...) to move in after the
      weights are committed.
    - ``shadows``: names that loaders would prefer over the new set while they
      exist (``model.safetensors`` shadows a sharded save for transformers,
      the index shadows a single file for index-first readers); removed right
      after the commit, in order.
    - ``stale``: patterns of names owned by previous saves; matching files not
      in the new set are removed once the new set is complete.
    """

    def __init__(self, directory, *, durable: bool, stage_inside: bool = False):
        self.directory = os.path.abspath(os.fspath(directory))
        self.stage_inside = stage_inside
        self.durable = durable
        self.token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.weights: List[str] = []
        self.index_name: Optional[str] = None
        self.index_dumps: Callable[[dict], str] = lambda d: json.dumps(d, indent=2)
        self.index: Optional[dict] = None
        self.companions: List[str] = []
        self.shadows: List[str] = []
        self.stale: List[Pattern[str]] = []
        self._moved_in: List[str] = []  # new files renamed into the target before the commit
        self._committed = False
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise NotADirectoryError(errno.ENOTDIR, "the target exists and is not a directory", self.directory)
        self.staging = self._make_staging()

    # -- staging ---------------------------------------------------------------
    def _make_staging(self) -> str:
        parent = os.path.dirname(self.directory)
        base = os.path.basename(self.directory)
        exists = os.path.isdir(self.directory)
        # Beside the target (so a new directory appears whole by one rename),
        # unless the target is another filesystem's mount point or the parent
        # is not writable, or the caller edits files of an existing directory
        # in place (stage_inside): then inside the target.
        places = []
        if not exists or (not self.stage_inside and os.stat(parent).st_dev == os.stat(self.directory).st_dev):
            places.append(os.path.join(parent, f".{base}{STAGING_MARK}{self.token}"))
        if exists:
            places.append(os.path.join(self.directory, f"{STAGING_MARK}{self.token}"))
        last: Optional[OSError] = None
        for path in places:
            try:
                os.mkdir(path)
                self._staging_in_target = os.path.dirname(path) == self.directory
                return path
            except PermissionError as e:
                last = e
        if last is None:  # pragma: no cover - places is never empty
            raise RuntimeError("no staging place")
        raise last

    def path(self, name: str) -> str:
        """Where to write the staged file ``name``."""
        _check_name(name)
        return os.path.join(self.staging, name)

    def add_weight(self, name: str) -> str:
        self.weights.append(name)
        return self.path(name)

    def add_companion(self, name: str) -> str:
        self.companions.append(name)
        return self.path(name)

    def set_index(self, name: str, index: dict, dumps: Optional[Callable[[dict], str]] = None) -> None:
        _check_name(name)
        self.index_name = name
        self.index = index
        if dumps is not None:
            self.index_dumps = dumps

    def _write_text(self, path: str, text: str) -> None:
        with naming("write", path), open(path, "w", encoding="utf-8") as f:
            f.write(text)
            if self.durable:
                f.flush()
                os.fsync(f.fileno())

    # -- commit ------------------------------------------------------------------
    def commit(self) -> None:
        D, S = self.directory, self.staging
        if self.index_name is not None:
            self._write_text(os.path.join(S, self.index_name), self.index_dumps(self.index))
        for name in self.companions:  # companions may have been copied without syncing
            if self.durable:
                fsync_file(os.path.join(S, name))
        if not os.path.isdir(D) and not self._staging_in_target:
            self._commit_new_directory()
            return
        if self.companions and not self._staging_in_target and self._commit_by_exchange():
            return
        new_names = set(self.weights) | set(self.companions)
        if self.index_name:
            new_names.add(self.index_name)
        referenced = _referenced(D, self.stale) if self.index_name else set()
        colliding = [n for n in self.weights if n in referenced]
        if colliding:
            self._commit_over_referenced_names()
        else:
            for name in self.weights:
                _step(f"move-weight:{name}")
                os.rename(os.path.join(S, name), os.path.join(D, name))
                self._moved_in.append(name)
            if not self.index_name:
                self._committed = True  # the single weights file is in place
            self._sync(D)
            if self.index_name:
                _step("commit-index")
                os.rename(os.path.join(S, self.index_name), os.path.join(D, self.index_name))
                self._committed = True
                self._sync(D)
        for name in self.companions:
            _step(f"move-companion:{name}")
            os.rename(os.path.join(S, name), os.path.join(D, name))
        for name in self.shadows:
            if name in new_names:
                continue
            _step(f"remove-shadow:{name}")
            _unlink(os.path.join(D, name))
        self._sync(D)
        self._remove_stale(new_names)
        self._sync(D)
        shutil.rmtree(S, ignore_errors=True)
        self._remove_dead_stagings()

    def _commit_new_directory(self) -> None:
        D, S = self.directory, self.staging
        self._sync(S)
        _step("rename-directory")
        os.rename(S, D)
        self._committed = True
        self._sync(os.path.dirname(D))
        self._remove_dead_stagings()

    def _commit_by_exchange(self) -> bool:
        """Weights, index and companions as one set: the staging directory
        gets every other file of the target (hard links), then the two
        directories are exchanged in one step. False where the filesystem
        or the OS cannot exchange (nothing has changed in the target then)."""
        D, S = self.directory, self.staging
        new_names = set(self.weights) | set(self.companions)
        if self.index_name:
            new_names.add(self.index_name)
        dropped = set(self.shadows)
        for name in sorted(os.listdir(D)):
            if name in new_names or name in dropped or name.startswith((STAGING_MARK, INTERIM_MARK)):
                continue
            if any(p.fullmatch(name) for p in self.stale):
                continue
            _replicate(os.path.join(D, name), os.path.join(S, name), self.durable)
        st = os.stat(D)
        os.chmod(S, stat.S_IMODE(st.st_mode))
        self._sync(S)
        _step("exchange-directory")
        if not exchange_paths(S, D):
            for name in os.listdir(S):  # back to what the ordinary protocol stages
                if name not in new_names:
                    path = os.path.join(S, name)
                    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else _unlink(path)
            return False
        self._committed = True
        self._sync(os.path.dirname(D))
        shutil.rmtree(S, ignore_errors=True)  # the previous checkpoint, now under the staging name
        self._remove_dead_stagings()
        return True

    def _commit_over_referenced_names(self) -> None:
        """New shard names equal names the current index maps to: replacing
        them in place would mix old and new shards under the old index. So the
        new shards come in under interim names, an interim index pointing at
        them is committed, then the final names are linked to the same files
        and the final index replaces the interim one."""
        D, S = self.directory, self.staging
        interim = {n: f"{INTERIM_MARK}{self.token}-{n}" for n in self.weights}
        for name in self.weights:
            _step(f"move-interim:{name}")
            os.rename(os.path.join(S, name), os.path.join(D, interim[name]))
            self._moved_in.append(interim[name])
        self._sync(D)
        index = dict(self.index)
        index["weight_map"] = {k: interim.get(v, v) for k, v in self.index["weight_map"].items()}
        tmp_index = os.path.join(S, INTERIM_MARK + self.index_name)
        self._write_text(tmp_index, self.index_dumps(index))
        _step("commit-interim-index")
        os.rename(tmp_index, os.path.join(D, self.index_name))
        self._committed = True
        self._sync(D)
        for name in self.weights:
            # The old file under `name` is no longer referenced by the index.
            tmp = os.path.join(D, f"{INTERIM_MARK}{self.token}-link-{name}")
            _link_or_copy(os.path.join(D, interim[name]), tmp, self.durable)
            _step(f"place-final:{name}")
            final = os.path.join(D, name)
            # Exchanged, then the old file (now under tmp) unlinked: a rename
            # over it would also make ext4 (auto_da_alloc) write the new
            # file out before returning, the fsync a durable=False save
            # skips (55-110 ms per 128 MiB file here).
            if os.path.isfile(final) and not os.path.islink(final) and exchange_paths(tmp, final):
                _step(f"drop-replaced:{name}")
                _unlink(tmp)
            else:
                os.rename(tmp, final)
        self._sync(D)
        _step("commit-index")
        os.rename(os.path.join(S, self.index_name), os.path.join(D, self.index_name))
        self._sync(D)
        for name in self.weights:
            _step(f"remove-interim:{name}")
            _unlink(os.path.join(D, interim[name]))

    def _remove_stale(self, keep: Set[str]) -> None:
        D = self.directory
        for name in sorted(os.listdir(D)):
            if name in keep:
                continue
            if name.startswith(INTERIM_MARK):
                pid = _owner_pid(name, INTERIM_MARK)
                if pid is None or (pid != os.getpid() and _pid_alive(pid)):
                    continue
            elif not any(p.fullmatch(name) for p in self.stale):
                continue
            path = os.path.join(D, name)
            if os.path.isfile(path) and not os.path.islink(path):
                _step(f"remove-stale:{name}")
                _unlink(path)

    def _remove_dead_stagings(self) -> None:
        """Staging directories left by writers that were killed."""
        parent = os.path.dirname(self.directory)
        base = os.path.basename(self.directory)
        for where, prefix in ((parent, f".{base}{STAGING_MARK}"), (self.directory, STAGING_MARK)):
            try:
                names = os.listdir(where)
            except OSError:
                continue
            for name in names:
                if not name.startswith(prefix):
                    continue
                pid = _owner_pid(name, STAGING_MARK)
                if pid is not None and not _pid_alive(pid):
                    shutil.rmtree(os.path.join(where, name), ignore_errors=True)

    def _sync(self, directory: str) -> None:
        if self.durable:
            fsync_dir(directory)

    def abort(self) -> None:
        """After an error: remove the staging directory and whatever this
        save put in the target that the target's checkpoint does not use
        (new files moved in before the commit; after it, interim names no
        index refers to). Best effort: the error being handled is the one
        reported."""
        shutil.rmtree(self.staging, ignore_errors=True)
        D = self.directory
        if not self._committed:
            for name in self._moved_in:
                _unlink(os.path.join(D, name))
            return
        mine = f"{INTERIM_MARK}{self.token}-"
        try:
            names = os.listdir(D)
        except OSError:
            return
        used = _referenced(D, self.stale)
        for name in names:
            if name.startswith(mine) and name not in used:
                _unlink(os.path.join(D, name))

    def __enter__(self) -> "FileSet":
        return self

    def __exit__(self, exc_type, _exc, _tb) -> None:
        if exc_type is not None:
            self.abort()


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"file name {name!r} must be a plain name inside the directory")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: str, b: str) -> bool:
    """Swap two directory entries atomically (Linux renameat2 with
    RENAME_EXCHANGE). False where the OS or the filesystem cannot; other
    failures raise OSError."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:  # glibc before 2.28, or another libc
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a, None, b)


def _replicate(src: str, dst: str, durable: bool) -> None:
    """``dst`` becomes a copy of the entry ``src`` sharing its files: hard
    links for files, new directories holding links, symlinks copied."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), dst)
    elif os.path.isdir(src):
        os.mkdir(dst)
        for name in os.listdir(src):
            _replicate(os.path.join(src, name), os.path.join(dst, name), durable)
        os.chmod(dst, stat.S_IMODE(os.stat(src).st_mode))
        if durable:
            fsync_dir(dst)
    elif os.path.isfile(src):
        _link_or_copy(src, dst, durable)
    # Sockets, FIFOs and devices are not part of a checkpoint: left behind.


def _link_or_copy(src: str, dst: str, durable: bool) -> None:
    """A second name for ``src``: a hard link, or a copy where links are not
    supported by the filesystem."""
    _unlink(dst)
    try:
        os.link(src, dst)
        return
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
    with naming("copy", dst):
        shutil.copyfile(src, dst)
    if durable:
        fsync_file(dst)

