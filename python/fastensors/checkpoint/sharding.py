"""Writing sharded checkpoints the way the Hugging Face tools do.

Split decisions and names follow ``huggingface_hub.save_torch_state_dict``:
tensors are taken greedily in the state dict's key order, a shard is closed
when the next tensor would push it over ``max_shard_size`` (decimal units:
"5GB" is 5 * 10**9 bytes), a tensor larger than the limit gets a shard of its
own, tensors that share storage go into the shard of the first of them, and
shards are named ``model-00001-of-00003.safetensors`` (one
``model.safetensors`` when everything fits). Tied tensors are stored once and
each dropped name is recorded in the metadata, mapped to the name kept.

The whole set (shards, index, companion files) is committed atomically; see
``_fileset`` and docs/sharding.md."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, Hashable, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from ..format.dtypes import code_from_numpy, nbytes_of
from ..errors import InvalidArgument
from .commit import FileSet, fsync_file, naming, stale_pattern
from ..format.writer import resolve_durable, write_specs

MAX_SHARD_SIZE = "5GB"
SAFETENSORS_PATTERN = "model{suffix}.safetensors"
PICKLE_PATTERN = "pytorch_model{suffix}.bin"

# Decimal units, as huggingface_hub parses them.
_UNITS = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3}

SizeLike = Union[int, str]


def parse_size(size: SizeLike) -> int:
    """Bytes in ``size``: an int, or digits and a decimal unit ("5GB",
    "500MB", "1.5GB", "100KB", "2TB"; case-insensitive)."""
    if isinstance(size, bool):
        raise InvalidArgument(f"max_shard_size must be an int or a string like '5GB', not {size!r}")
    if isinstance(size, (int, np.integer)):
        n = int(size)
    elif isinstance(size, str):
        text = size.strip()
        unit = text[-2:].upper()
        if unit not in _UNITS:
            raise InvalidArgument(f"size {size!r}: the unit must be one of TB, GB, MB, KB")
        try:
            value = float(text[:-2].strip())
        except ValueError:
            raise InvalidArgument(f"size {size!r}: {text[:-2].strip()!r} is not a number") from None
        n = int(value * _UNITS[unit])
    else:
        raise InvalidArgument(f"max_shard_size must be an int or a string like '5GB', not {type(size).__name__}")
    if n < 0:
        raise InvalidArgument(f"size {size!r} is negative")
    return n


class Entry(NamedTuple):
    """One tensor as the planner sees it."""

    name: str
    size: int  # bytes counted against the shard limit
    storage: Optional[Hashable]  # tensors with equal storage ids share a shard; None: not shared


@dataclass
class ShardPlan:
    """Where each tensor goes. Field names follow huggingface_hub's
    ``StateDictSplit``; ``metadata`` is the index's metadata."""

    filename_to_tensors: Dict[str, List[str]]
    tensor_to_filename: Dict[str, str]
    total_size: int
    metadata: Dict[str, object] = field(default_factory=dict)
    index_file: Optional[str] = None

    @property
    def is_sharded(self) -> bool:
        return len(self.filename_to_tensors) > 1


def check_pattern(filename_pattern: str) -> None:
    if "{suffix}" not in filename_pattern:
        raise InvalidArgument(f"filename_pattern {filename_pattern!r} must contain '{{suffix}}'")
    try:
        single = filename_pattern.format(suffix="")
    except (KeyError, IndexError, ValueError, AttributeError):  # other fields, or a bad format spec
        raise InvalidArgument(f"filename_pattern {filename_pattern!r} may use no field but '{{suffix}}'") from None
    if not single or "/" in single or "\\" in single or single.startswith("."):
        raise InvalidArgument(f"filename_pattern {filename_pattern!r} must name a plain, visible file")


def plan_shards(entries: Iterable[Entry], max_shard_size: SizeLike = MAX_SHARD_SIZE,
                filename_pattern: str = SAFETENSORS_PATTERN) -> ShardPlan:
    """Split ``entries`` (in state-dict order) into shards; see the module doc."""
    check_pattern(filename_pattern)
    limit = parse_size(max_shard_size)
    by_storage: Dict[Hashable, List[str]] = {}
    shards: List[List[str]] = []
    current: List[str] = []
    current_size = 0
    total = 0
    for e in entries:
        if e.storage is not None:
            names = by_storage.get(e.storage)
            if names is not None:  # placed with the first tensor of its storage, below
                names.append(e.name)
                continue
            by_storage[e.storage] = [e.name]
        if e.size > limit:
            total += e.size
            shards.append([e.name])
            continue
        if current_size + e.size > limit:
            shards.append(current)
            current, current_size = [], 0
        current.append(e.name)
        current_size += e.size
        total += e.size
    if current:
        shards.append(current)
    for names in by_storage.values():
        if len(names) > 1:
            for shard in shards:
                if names[0] in shard:
                    shard.extend(n for n in names[1:] if n not in shard)
                    break
    if not shards:  # an empty state dict is one empty file
        shards = [[]]
    count = len(shards)
    filename_to_tensors: Dict[str, List[str]] = {}
    tensor_to_filename: Dict[str, str] = {}
    for i, shard in enumerate(shards):
        suffix = "" if count == 1 else f"-{i + 1:05d}-of-{count:05d}"
        fname = filename_pattern.format(suffix=suffix)
        filename_to_tensors[fname] = list(shard)
        for name in shard:
            tensor_to_filename[name] = fname
    plan = ShardPlan(filename_to_tensors, tensor_to_filename, total)
    if plan.is_sharded:
        plan.index_file = filename_pattern.format(suffix="") + ".index.json"
    return plan


# -- writing a planned set ---------------------------------------------------------

ShardWriter = Callable[[str, List[str], Dict[str, str]], None]
"""write(path, tensor names, file metadata): writes one shard file, without
syncing (write_planned fsyncs when durable). Called from several threads."""


def hub_index_dumps(index: dict) -> str:
    """The index text huggingface_hub writes (``json.dump(..., indent=2)``)."""
    return json.dumps(index, indent=2)


def write_planned(
    directory,
    plan: ShardPlan,
    write_shard: ShardWriter,
    *,
    filename_pattern: str,
    metadata: Optional[Mapping[str, str]],
    total_parameters: Optional[int],
    durable: bool,
    file_metadata: Optional[Mapping[str, str]] = None,
    companions: Optional[Mapping[str, Callable[[str], None]]] = None,
    extra_shadows: Sequence[str] = (),
    extra_stale: Sequence[str] = (),
    index_dumps: Callable[[dict], str] = hub_index_dumps,
    max_workers: Optional[int] = None,
    before_commit: Optional[Callable[[], None]] = None,
) -> ShardPlan:
    """Write every shard of ``plan`` and its index into ``directory`` as one
    atomic set. Every shard carries ``file_metadata`` (``{"format": "pt"}``
    when None; pass ``{}`` for none); ``metadata`` goes where
    huggingface_hub puts it: into an unsharded file, else into the index.
    ``companions`` maps file names to functions writing them at a path.
    ``max_workers`` caps the shards written at once; ``before_commit`` runs
    when every file is staged and may raise to abandon the whole set."""
    user_meta = dict(metadata or {})
    _check_utf8(user_meta)
    base_meta = shard_file_metadata(plan, user_meta, file_metadata)
    with FileSet(directory, durable=durable) as fs:
        write_shards(fs, plan, write_shard, base_meta, durable, max_workers)
        stage_index(fs, plan, filename_pattern=filename_pattern, metadata=user_meta,
                    total_parameters=total_parameters, extra_shadows=extra_shadows, extra_stale=extra_stale,
                    index_dumps=index_dumps)
        for name, write in (companions or {}).items():
            path = fs.add_companion(name)
            with naming("write", path):
                write(path)
        if before_commit is not None:
            before_commit()
        fs.commit()
    return plan


def _check_utf8(metadata: Mapping[str, object]) -> None:
    """Metadata keys and text values must be valid Unicode (no lone
    surrogates): the index is JSON that other readers parse strictly, as the
    shards' headers are. Raises InvalidArgument naming the entry."""
    for k, v in metadata.items():
        for text in (k, v):
            if isinstance(text, str):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidArgument(f"metadata entry {k!r}: {text!r} is not valid Unicode text "
                                          "(a lone surrogate)") from None


def shard_file_metadata(plan: ShardPlan, metadata: Optional[Mapping[str, str]],
                        file_metadata: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The ``__metadata__`` every shard of ``plan`` carries: ``file_metadata``
    (``{"format": "pt"}`` when None), plus the user ``metadata`` when there is
    one file only (with several, it goes into the index)."""
    base: Dict[str, str] = {"format": "pt"} if file_metadata is None else dict(file_metadata)
    if not plan.is_sharded:
        base.update(dict(metadata or {}))
    return base


def stage_index(fs: FileSet, plan: ShardPlan, *, filename_pattern: str, metadata: Optional[Mapping[str, str]],
                total_parameters: Optional[int], extra_shadows: Sequence[str] = (),
                extra_stale: Sequence[str] = (), index_dumps: Callable[[dict], str] = hub_index_dumps) -> None:
    """Give ``fs`` (whose weights are staged) the index, shadows and stale
    patterns of ``plan``, as huggingface_hub lays them out; fills
    ``plan.metadata`` and ``plan.index_file``."""
    user_meta = dict(metadata or {})
    single = filename_pattern.format(suffix="")
    index_name = single + ".index.json"
    if plan.is_sharded:
        head: Dict[str, object] = {}
        if total_parameters is not None:
            head["total_parameters"] = int(total_parameters)
        head["total_size"] = int(plan.total_size)
        plan.metadata = {**head, **user_meta}
        plan.index_file = index_name
        fs.set_index(index_name, {"metadata": plan.metadata, "weight_map": dict(plan.tensor_to_filename)},
                     index_dumps)
        fs.shadows = list(extra_shadows) + [single]
    else:
        plan.metadata = {"total_size": int(plan.total_size)}
        plan.index_file = None
        fs.shadows = list(extra_shadows) + [index_name]
    fs.stale = [stale_pattern(filename_pattern)] + [stale_pattern(p) for p in extra_stale]


def write_threads() -> int:
    """Shards are independent files: up to this many are written at once
    (the core releases the GIL while writing). ``FASTENSORS_WRITE_THREADS``
    overrides (1 writes one shard at a time, e.g. for spinning disks)."""
    env = os.environ.get("FASTENSORS_WRITE_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise InvalidArgument(f"FASTENSORS_WRITE_THREADS={env!r} is not an integer") from None
    return max(1, min(4, os.cpu_count() or 1))


def write_shards(fs: FileSet, plan: ShardPlan, write_shard: ShardWriter, base_meta: Dict[str, str],
                 durable: bool, max_workers: Optional[int] = None) -> None:
    """Write every shard of ``plan`` into the staging directory of ``fs``,
    several at once. ``write_shard`` never syncs; when ``durable``, each file
    is fsynced in the background as soon as it is complete, so its writeback
    overlaps the writing of the next ones."""
    items = [(fs.add_weight(fname), names) for fname, names in plan.filename_to_tensors.items()]
    syncer = ThreadPoolExecutor(1) if durable else None
    synced: list = []

    def job(path: str, names: List[str]) -> None:
        write_shard(path, names, dict(base_meta))
        if syncer is not None:
            synced.append(syncer.submit(fsync_file, path))

    workers = min(len(items), write_threads() if max_workers is None else max(1, max_workers))
    try:
        if workers <= 1:
            for path, names in items:
                job(path, names)
        else:
            pool = ThreadPoolExecutor(workers)
            try:
                futures = [pool.submit(job, path, names) for path, names in items]
                for f in futures:
                    f.result()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        for f in list(synced):
            f.result()
    finally:
        if syncer is not None:
            syncer.shutdown(wait=True, cancel_futures=True)


# -- state dicts -------------------------------------------------------------------

def _is_torch(value) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _kind(state_dict: Mapping[str, object]) -> str:
    if not isinstance(state_dict, Mapping):
        raise InvalidArgument(f"expected a dict of tensors, not {type(state_dict).__name__}")
    kinds = set()
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise InvalidArgument(f"tensor names must be str, not {type(name).__name__}")
        if isinstance(value, np.ndarray):
            kinds.add("numpy")
        elif _is_torch(value):
            kinds.add("torch")
        else:
            raise InvalidArgument(f"tensor `{name}` must be a torch.Tensor or numpy.ndarray, not {type(value).__name__}")
    if len(kinds) > 1:
        raise InvalidArgument("a state dict must hold torch tensors or numpy arrays, not both")
    return kinds.pop() if kinds else "numpy"


class PreparedStateDict(NamedTuple):
    entries: List[Entry]
    write_shard: ShardWriter
    metadata: Dict[str, str]  # user metadata plus {dropped name: kept name}
    total_parameters: int


def prepare_torch(state_dict, metadata, force_contiguous: bool,
                  discard_names: Optional[List[str]] = None) -> PreparedStateDict:
    """Drop tied duplicates (recording them in the metadata, user keys win),
    and describe each tensor's storage the way huggingface_hub does."""
    from ..format import torch_specs

    sd = dict(state_dict)
    meta = dict(metadata or {})
    for name, t in sd.items():
        if t.device.type == "meta":
            raise InvalidArgument(f"Cannot copy out of meta tensor `{name}`: it has no data to save")
    for kept, dropped in torch_specs.remove_duplicate_names(sd, discard_names=discard_names).items():
        for name in dropped:
            meta.setdefault(name, kept)
            del sd[name]
    entries = []
    params = 0
    for name, t in sd.items():
        params += t.numel()
        if force_contiguous and not t.is_contiguous():
            # .contiguous() gives it a storage of its own, exactly its size
            entries.append(Entry(name, t.nelement() * t.element_size(), ("copy", name)))
        else:
            size = torch_specs.storage_size(t)
            entries.append(Entry(name, size, (t.device, torch_specs.storage_ptr(t), size)))

    def write_shard(path: str, names: List[str], file_meta: Dict[str, str]) -> None:
        shard = {n: sd[n].contiguous() if force_contiguous else sd[n] for n in names}
        keep_alive: list = []
        specs = torch_specs.torch_specs(shard, keep_alive)
        write_specs(specs, path, file_meta, False)

    return PreparedStateDict(entries, write_shard, meta, params)


def prepare_numpy(state_dict, metadata) -> PreparedStateDict:
    """numpy arrays: the same array (same memory, dtype, shape and strides)
    under several names is stored once, the alphabetically first name kept."""
    from ..format.specs import numpy_specs

    sd = dict(state_dict)
    meta = dict(metadata or {})
    groups: Dict[tuple, List[str]] = {}
    for name, arr in sd.items():
        if arr.nbytes:
            key = (arr.__array_interface__["data"][0], arr.dtype.str, arr.shape, arr.strides)
            groups.setdefault(key, []).append(name)
    for names in groups.values():
        if len(names) > 1:
            ordered = sorted(names)
            for name in ordered[1:]:
                meta.setdefault(name, ordered[0])
                del sd[name]
    entries = [Entry(name, nbytes_of(code_from_numpy(a.dtype), a.shape), None) for name, a in sd.items()]
    params = sum(int(a.size) for a in sd.values())

    def write_shard(path: str, names: List[str], file_meta: Dict[str, str]) -> None:
        keep_alive: list = []
        specs = numpy_specs({n: sd[n] for n in names}, keep_alive)
        write_specs(specs, path, file_meta, False)

    return PreparedStateDict(entries, write_shard, meta, params)


def save_sharded(
    state_dict: Mapping[str, object],
    directory: Union[str, "os.PathLike[str]"],
    *,
    max_shard_size: SizeLike = MAX_SHARD_SIZE,
    filename_pattern: str = SAFETENSORS_PATTERN,
    metadata: Optional[Dict[str, str]] = None,
    force_contiguous: bool = True,
    durable: Optional[bool] = None,
    remap=None,
) -> ShardPlan:
    """Save a torch or numpy state dict into ``directory`` as shards of at
    most ``max_shard_size`` bytes (a larger tensor gets a shard of its own),
    with ``model.safetensors.index.json`` when there is more than one shard.

    Files and index are those ``huggingface_hub.save_torch_state_dict`` writes
    for the same input, plus ``total_parameters`` in the index metadata. The
    new set replaces the previous checkpoint atomically; ``durable=False``
    skips the fsyncs but keeps the atomic commit. ``remap`` renames the
    tensors on the way (``fastensors.remap``). Returns the plan."""
    check_pattern(filename_pattern)
    if remap is not None:
        from ..remap import apply as remap_apply

        state_dict = remap_apply(state_dict, remap)
    kind = _kind(state_dict)
    if kind == "torch":
        prep = prepare_torch(state_dict, metadata, force_contiguous)
    else:
        prep = prepare_numpy(state_dict, metadata)
    plan = plan_shards(prep.entries, max_shard_size, filename_pattern)
    dur = resolve_durable(durable)
    return write_planned(
        directory, plan, prep.write_shard,
        filename_pattern=filename_pattern, metadata=prep.metadata,
        total_parameters=prep.total_parameters, durable=dur,
    )


# -- resharding and merging files on disk -------------------------------------------

def _weight_like(name: str) -> bool:
    return name.endswith((".safetensors", ".bin", ".index.json", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf"))


def json_companion(obj) -> Callable[[str], None]:
    """A companion writer putting ``obj`` as indented, key-sorted JSON (the
    way a rewritten config.json is stored)."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"

    def write(path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)

    return write


def companion_files(src_dir: str, exclude: Iterable[str]) -> Dict[str, Callable[[str], None]]:
    """Other regular files of a model directory (config.json, tokenizer
    files, README.md, ...), as companion writers that copy them."""
    import shutil

    skip = set(exclude)
    out: Dict[str, Callable[[str], None]] = {}
    for name in sorted(os.listdir(src_dir)):
        path = os.path.join(src_dir, name)
        if name in skip or name.startswith(".") or _weight_like(name) or not os.path.isfile(path):
            continue
        out[name] = lambda dst, src=path: shutil.copyfile(src, dst)
    return out


def reshard(src, dst, *, max_shard_size: SizeLike = MAX_SHARD_SIZE,
            filename_pattern: str = SAFETENSORS_PATTERN, durable: Optional[bool] = None,
            copy_companions: bool = True) -> ShardPlan:
    """Rewrite the checkpoint at ``src`` (a file, a directory or an index)
    as shards in the directory ``dst``. Tensor bytes stream from the source
    mapping; nothing is converted. Other files of a model directory (``src``
    a directory or an index) are carried over. The tensor order for the split is the source's: sorted
    names for a single file (the order ``load_file`` gives), the index order
    for a sharded checkpoint."""
    from .reader import open_checkpoint

    with open_checkpoint(src, framework="np") as ckpt:
        order = ckpt.keys() if not ckpt.is_sharded else list(ckpt.weight_map)
        ckpt.verify()
        entries = [Entry(n, ckpt.tensor_info(n).nbytes, None) for n in order]
        plan = plan_shards(entries, max_shard_size, filename_pattern)
        source_meta = ckpt.metadata() or {}
        file_format = source_meta.get("format", "pt")
        meta = {k: v for k, v in source_meta.items() if k != "format"}

        def write_shard(path: str, names: List[str], file_meta: Dict[str, str]) -> None:
            keep_alive: list = []
            specs = [ckpt.raw_spec(n, keep_alive) for n in names]
            write_specs(specs, path, file_meta, False)  # write_planned syncs

        dur = resolve_durable(durable)
        companions = {}
        from_model_dir = os.path.isdir(src) or ckpt.is_sharded  # not the neighbours of a lone file
        if copy_companions and from_model_dir and os.path.abspath(ckpt.directory) != os.path.abspath(dst):
            companions = companion_files(ckpt.directory, ckpt.files + ([ckpt.index_path] if ckpt.index_path else []))
        return write_planned(dst, plan, write_shard, filename_pattern=filename_pattern, metadata=meta,
                             total_parameters=ckpt.total_parameters(), durable=dur,
                             file_metadata={"format": file_format}, companions=companions)


def merge(src, dst_file, *, durable: Optional[bool] = None) -> str:
    """Write every tensor of the checkpoint at ``src`` into one safetensors
    file ``dst_file`` (atomically). Metadata: the first shard's, plus the
    index's own entries other than the sizes."""
    from .reader import open_checkpoint

    with open_checkpoint(src, framework="np") as ckpt:
        ckpt.verify()
        meta = dict(ckpt.metadata() or {})
        keep_alive: list = []
        specs = [ckpt.raw_spec(n, keep_alive) for n in ckpt.keys()]
        write_specs(specs, dst_file, meta if meta else None, resolve_durable(durable))
    return os.fspath(dst_file)


__all__ = ["save_sharded", "plan_shards", "parse_size", "ShardPlan", "Entry", "reshard", "merge", "MAX_SHARD_SIZE"]
