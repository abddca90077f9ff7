"""Converting safetensors files on disk: ``convert_file`` for one file or a
sharded checkpoint directory (``*.safetensors.index.json``).

Tensor by tensor, through the C++ streaming converter: peak memory is a few
chunk buffers, not the model; each output file is written atomically with the
source's metadata. Only float tensors are converted (docs/dtypes.md)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Pattern, Tuple, Union

from .. import _core
from ..format.cast import FLOAT_CODES, can_convert, dtype_code
from ..errors import InvalidArgument, UnsupportedConversion
from ..sources import is_url
from ..sources.urls import stage
from .commit import FileSet, naming, stale_pattern
from .._util.patterns import Regex, compile_one
from .._util.progress import Progress

PathLike = Union[str, "os.PathLike[str]"]

INDEX_SUFFIX = ".safetensors.index.json"


@dataclass
class ConversionReport:
    """What ``convert_file`` did."""

    dtype: str                                             # the target code
    converted: List[str] = field(default_factory=list)     # tensors whose dtype changed
    kept: List[str] = field(default_factory=list)          # tensors copied unchanged
    files: List[str] = field(default_factory=list)         # safetensors files written
    copied_files: List[str] = field(default_factory=list)  # other files copied (directories)
    skipped: List[str] = field(default_factory=list)       # entries not copied (subdirectories)
    bytes_in: int = 0                                      # tensor data read
    bytes_out: int = 0                                     # tensor data written


def plan_targets(infos, target: str, only: Optional[Pattern[str]], keep: Optional[Pattern[str]],
                 path: str = "") -> Tuple[List[Tuple[str, str]], List[str], int, int]:
    """Which tensors of a file to convert: float tensors not already
    ``target``, matching ``only`` (when given) and not matching ``keep``.
    Returns (targets, kept names, data bytes in, data bytes out)."""
    out_width = _core.dtype_bits(target) // 8
    targets: List[Tuple[str, str]] = []
    kept: List[str] = []
    bytes_in = bytes_out = 0
    for name, code, shape, begin, end in infos:
        bytes_in += end - begin
        convert = (code in FLOAT_CODES and code != target and (only is None or only.search(name))
                   and not (keep is not None and keep.search(name)))
        if not convert:
            kept.append(name)
            bytes_out += end - begin
            continue
        if not can_convert(code, target):
            where = f" in '{path}'" if path else ""
            raise UnsupportedConversion(
                f"tensor '{name}'{where} is {code}, which cannot be converted to {target} in one rounding "
                f"(docs/dtypes.md); leave it as is with keep=/--keep, or convert to F32"
            )
        n = 1
        for d in shape:
            n *= d
        targets.append((name, target))
        bytes_out += n * out_width
    return targets, kept, bytes_in, bytes_out


def _durable(durable: Optional[bool]) -> bool:
    return _core.default_durable() if durable is None else bool(durable)


def convert_file(
    src: PathLike,
    dst: PathLike,
    dtype,
    *,
    only: Regex = None,
    keep: Regex = None,
    progress: bool = False,
    durable: Optional[bool] = None,
    storage_options: Optional[dict] = None,
) -> ConversionReport:
    """Write ``dst`` with the tensors of ``src`` converted to ``dtype`` ("bf16",
    "F16", ``np.float32``, ...), bit-exact with ml_dtypes (docs/dtypes.md).

    Only float tensors are converted; integer, BOOL and complex tensors are
    copied unchanged, and so are tensors whose name matches ``keep`` or, when
    ``only`` is given, does not match ``only`` (regular expressions, searched
    anywhere in the name). A float tensor that cannot be converted in one
    rounding (e.g. F64 or FP8 to BF16) raises :class:`UnsupportedConversion`
    before anything is written. Metadata is kept. Each output file is written
    atomically (``durable=False`` skips the fsyncs); memory use stays at a few
    chunk buffers whatever the model size. ``dst`` may be ``src``: the source
    stays open until the converted file is renamed over it.

    ``src`` may be a sharded checkpoint directory holding a
    ``*.safetensors.index.json``: every shard it lists is converted into the
    directory ``dst``, the index is rewritten with the new ``total_size``, and
    the other files (config.json, tokenizer files, ...) are copied, and the
    whole set replaces a checkpoint already in ``dst`` atomically
    (docs/sharding.md).
    ``progress=True`` shows a progress bar (tqdm when installed).

    ``src`` may be a URL (docs/remote.md; ``storage_options`` go to fsspec):
    every byte is needed, so its files are first copied by parallel range
    requests into a temporary folder, then converted from there."""
    target = dtype_code(dtype)
    if target not in FLOAT_CODES:
        raise UnsupportedConversion(f"convert_file converts float tensors to a float dtype, not to {target}")
    only_re, keep_re = compile_one(only, "only"), compile_one(keep, "keep")
    if is_url(src):
        with tempfile.TemporaryDirectory(prefix=".fastensors-stage-") as tmp:
            local = stage(src, tmp, storage_options)
            return convert_file(local, dst, target, only=only, keep=keep, progress=progress, durable=durable)
    src, dst = os.fspath(src), os.fspath(dst)
    if os.path.isdir(src):
        return _convert_directory(src, dst, target, only_re, keep_re, progress, _durable(durable))
    report = ConversionReport(dtype=target)
    _convert_one(src, dst, target, only_re, keep_re, progress, _durable(durable), report)
    return report


def _convert_one(src: str, dst: str, target: str, only, keep, show: bool, durable: bool,
                 report: ConversionReport, bar: Optional[Progress] = None, base: int = 0) -> None:
    f = _core.File(src, "pread")
    try:
        infos = f.infos()
    finally:
        f.close()
    targets, kept, bytes_in, bytes_out = plan_targets(infos, target, only, keep, src)
    own_bar = bar is None and show
    if own_bar:
        bar = Progress(bytes_out, f"convert {os.path.basename(src)}")

    def on_progress(done: int, total: int) -> None:
        # Count tensor data only: the header is the part of `total` past the data.
        bar.update_to(base + max(0, done - (total - bytes_out)))

    try:
        _core.convert_file(src, dst, targets, durable, on_progress if bar is not None else None)
    finally:
        if own_bar:
            bar.close()
    report.converted += [name for name, _ in targets]
    report.kept += kept
    report.files.append(dst)
    report.bytes_in += bytes_in
    report.bytes_out += bytes_out


def find_index(folder: str) -> str:
    """The one ``*.safetensors.index.json`` of a checkpoint directory."""
    found = sorted(n for n in os.listdir(folder) if n.endswith(INDEX_SUFFIX))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise InvalidArgument(f"'{folder}' has {what} *{INDEX_SUFFIX} file(s); a sharded checkpoint needs exactly one")
    return found[0]


class DirectoryPlan(NamedTuple):
    """A sharded conversion planned before anything is written."""

    index_name: str
    index: dict
    shards: List[str]
    plans: list  # plan_targets' result for each shard


def plan_directory(src: str, dst: str, target: str, only, keep) -> DirectoryPlan:
    """Check the index and plan every shard: errors surface before anything
    is written, and the progress total is known."""
    index_name = find_index(src)
    with open(os.path.join(src, index_name)) as fh:
        index = json.load(fh)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise InvalidArgument(f"'{index_name}' has no weight_map")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if os.path.basename(shard) != shard or shard in (".", ".."):
            raise InvalidArgument(f"'{index_name}' names a shard outside the directory: {shard!r}")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise InvalidArgument("the destination directory is the source directory")
    plans = []
    for shard in shards:
        f = _core.File(os.path.join(src, shard), "pread")
        try:
            infos = f.infos()
        finally:
            f.close()
        plans.append(plan_targets(infos, target, only, keep, os.path.join(src, shard)))
    return DirectoryPlan(index_name, index, shards, plans)


def open_directory_set(dst: str, plan: DirectoryPlan, durable: bool) -> FileSet:
    """The FileSet the converted shards are staged in: the new set (shards,
    index, other files) replaces whatever checkpoint ``dst`` held as one
    commit (docs/sharding.md), never a mix of old and new shards."""
    prefix = plan.index_name[: -len(INDEX_SUFFIX)]
    fs = FileSet(dst, durable=durable)
    fs.stale = [stale_pattern(prefix + "{suffix}.safetensors")]
    fs.shadows = [prefix + ".safetensors"]
    for shard in plan.shards:
        fs.add_weight(shard)
    return fs


def finish_directory(fs: FileSet, src: str, dst: str, plan: DirectoryPlan, report: ConversionReport) -> None:
    """Stage the new index and the other files of ``src`` once every shard
    is converted; the caller commits."""
    report.files = [os.path.join(dst, shard) for shard in plan.shards]
    new_index = dict(plan.index)
    meta = dict(plan.index.get("metadata") or {})
    meta["total_size"] = report.bytes_out
    new_index["metadata"] = meta
    fs.set_index(plan.index_name, new_index, lambda d: json.dumps(d, indent=2, sort_keys=False) + "\n")
    report.files.append(os.path.join(dst, plan.index_name))
    done = set(plan.shards) | {plan.index_name}
    for entry in sorted(os.listdir(src)):
        if entry in done:
            continue
        path = os.path.join(src, entry)
        if os.path.isfile(path):
            out = fs.add_companion(entry)
            with naming("copy", out):
                shutil.copy2(path, out)
            report.copied_files.append(entry)
        else:
            report.skipped.append(entry)


def _convert_directory(src: str, dst: str, target: str, only, keep, show: bool, durable: bool) -> ConversionReport:
    plan = plan_directory(src, dst, target, only, keep)
    total_out = sum(p[3] for p in plan.plans)
    report = ConversionReport(dtype=target)
    bar = Progress(total_out, f"convert {os.path.basename(os.path.normpath(src))}") if show else None
    with open_directory_set(dst, plan, durable) as fs:
        try:
            base = 0
            for shard, shard_plan in zip(plan.shards, plan.plans):
                if bar is not None:
                    bar.set_description(f"convert {shard}")
                _convert_one(os.path.join(src, shard), fs.path(shard), target, only, keep, False, durable,
                             report, bar, base)
                base += shard_plan[3]
        finally:
            if bar is not None:
                bar.close()
        finish_directory(fs, src, dst, plan, report)
        fs.commit()
    return report
