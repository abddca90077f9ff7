"""Quantizing a whole model: a Hugging Face model directory (one file or
shards with an index) or a single safetensors file in, a smaller model out,
with a report of the quality kept.

Tensors stream one at a time: each shard's header is planned from the
shapes alone, then every quantized weight is read, quantized and written
when the writer reaches it, so memory holds about one tensor and its output.
The output (shards, index, config.json and the other files of the model
directory) is committed as one set (``_fileset``): an error or a crash
leaves no half-model at the destination. Layouts, profiles and selection
rules: docs/model_quantization.md.

With a ``torch.distributed`` process group the output shards are shared out
across its ranks and rank 0 commits (the last section; docs/distributed.md).
torch is imported only then."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Pattern, Sequence, Tuple, Union

import numpy as np

from .layouts import compressed_tensors as _ct_layout
from ..format import writer as _serialize
from .._util.patterns import compile_one
from .._util.jsonfile import read_json
from ..errors import (
    DestinationNotEmpty,
    InvalidArgument,
    QualityThresholdNotMet,
    UnsupportedTensorShape,
)
from .._util import ranks
from ..checkpoint.commit import FileSet, fsync_file, naming, stale_pattern
from .report import QuantizationReport, TensorReport
from ..sources import is_url
from ..sources.urls import stage
from .kernels import GGML_SCHEMES, INT_SCHEMES, KQUANT_SCHEMES, SCHEMES, QuantizedTensor, _aligned_f32, quality, quantize
from ..checkpoint.sharding import (MAX_SHARD_SIZE, Entry, SizeLike, companion_files, json_companion, plan_shards,
                                   shard_file_metadata, stage_index, write_planned)

PathLike = Union[str, "os.PathLike[str]"]
ProgressCallback = Callable[[int, int], None]

FORMATS = ("safetensors", "gguf", "parquet")
FLOAT_CODES = ("F32", "F16", "BF16")
GGUF_FILE = "model.gguf"
PARQUET_FILE = "model.parquet"

# Profiles: (scheme, group size) for safetensors/parquet output, GGML scheme for gguf.
PROFILES = {"cloud": ("int8", None), "local": ("int4", 128), "edge": ("int4", 32)}
GGUF_PROFILES = {"cloud": "q8_0", "local": "q4_1", "edge": "q4_0"}
# Most aggressive first: edge with min_cosine takes the first all tensors meet.
EDGE_LADDER = (("int2", 64), ("int2", 32), ("int4", 128), ("int4", 64), ("int4", 32), ("int8", None))
GGUF_LADDER = (("q4_0", None), ("q4_1", None), ("q5_0", None), ("q5_1", None), ("q8_0", None))

# Module names kept dense by default: embeddings, norms and the output head.
_DENSE_PARTS = re.compile(r"(embed|norm|lm_head|^wte$|^wpe$|^ln_|^ln\d*$)", re.IGNORECASE)


@dataclass
class _Item:
    """One source tensor and what becomes of it."""

    name: str
    code: str
    shape: Tuple[int, ...]
    nbytes: int
    quantize: bool
    reason: Optional[str] = None


def _dense_by_default(name: str) -> Optional[str]:
    module = name[: -len(".weight")]
    for part in module.split("."):
        m = _DENSE_PARTS.search(part)
        if m:
            word = m.group(1).lower()
            kind = "embedding" if word.startswith(("embed", "wte", "wpe")) else (
                "lm_head" if word == "lm_head" else "norm")
            return f"{kind} (kept dense by default)"
    return None


def select(infos: Iterable[Tuple[str, str, Tuple[int, ...], int]], ignore: Sequence[Pattern[str]] = (),
           only: Optional[Pattern[str]] = None) -> List[_Item]:
    """Which tensors to quantize: 2-D float ``*.weight`` tensors of linear
    layers; embeddings, norms, ``lm_head``, biases and 1-D tensors stay as
    they are. ``only`` replaces the default rule by a name pattern (still
    2-D float weights); ``ignore`` patterns keep matching tensors dense."""
    items = []
    for name, code, shape, nbytes in infos:
        reason = None
        if not name.endswith(".weight"):
            reason = "not a weight"
        elif code not in FLOAT_CODES:
            reason = f"dtype {code}"
        elif len(shape) != 2:
            reason = f"{len(shape)}-D"
        elif only is not None:
            if not only.search(name):
                reason = "not matched by only"
        else:
            reason = _dense_by_default(name)
        if reason is None and any(p.search(name) for p in ignore):
            reason = "matched by ignore"
        items.append(_Item(name, code, tuple(shape), nbytes, reason is None, reason))
    return items


def shape_problem(scheme: str, shape: Tuple[int, ...], group_size: Optional[int]) -> Optional[str]:
    """Why ``scheme`` cannot take a weight of ``shape``, or None."""
    rows, cols = shape
    if scheme in GGML_SCHEMES and cols % 32:
        return f"{scheme} packs blocks of 32 along the rows, and the row length {cols} is not a multiple of 32"
    if scheme in KQUANT_SCHEMES and cols % 256:
        return f"{scheme} packs super-blocks of 256 along the rows, and the row length {cols} is not a multiple of 256"
    if scheme in ("int4", "int2") and group_size and cols % group_size:
        return f"the row length {cols} is not a multiple of the group size {group_size}"
    return None


# -- options -----------------------------------------------------------------------------

@dataclass
class _Scheme:
    scheme: str
    group_size: Optional[int]
    symmetric: Optional[bool]

    @property
    def label(self) -> str:
        if self.scheme in ("int4", "int2"):
            return f"{self.scheme} g{self.group_size}{'' if self.symmetric else ' asym'}"
        return self.scheme


def _resolve_scheme(scheme: str, group_size: Optional[int], symmetric: Optional[bool], fmt: str) -> _Scheme:
    if scheme not in SCHEMES:
        raise InvalidArgument(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if fmt == "safetensors" and scheme not in _ct_layout.SAFETENSORS_SCHEMES:
        raise InvalidArgument(f"scheme {scheme!r} is a GGML block format: write it with format='gguf' "
                              f"(safetensors output takes {', '.join(_ct_layout.SAFETENSORS_SCHEMES)})")
    if fmt == "gguf" and scheme not in GGML_SCHEMES + KQUANT_SCHEMES:
        raise InvalidArgument(f"format 'gguf' takes the GGML schemes {', '.join(GGML_SCHEMES + KQUANT_SCHEMES)}, "
                              f"not {scheme!r}")
    if fmt != "gguf" and scheme in KQUANT_SCHEMES:
        raise InvalidArgument(f"scheme {scheme!r} is a GGML K-quant: write it with format='gguf'")
    if scheme in ("int4", "int2"):
        group_size = {"int4": 128, "int2": 64}[scheme] if group_size is None else int(group_size)
        if group_size <= 0:
            raise InvalidArgument(f"group_size must be positive, not {group_size}")
        symmetric = scheme != "int2" if symmetric is None else bool(symmetric)
    elif scheme == "int8":
        if group_size is not None:
            raise InvalidArgument("int8 is per channel: group_size does not apply")
        if symmetric is False:
            raise InvalidArgument("int8 is symmetric per channel: symmetric=False does not apply")
        symmetric = True
    else:
        fixed = {"nf4": 64, "fp8_e4m3": None}.get(scheme, 32)
        if group_size is not None and group_size != fixed:
            raise InvalidArgument(f"{scheme}: the group size is fixed by the format ({fixed})")
        if symmetric is not None:
            raise InvalidArgument(f"{scheme}: symmetric is fixed by the format")
        group_size = fixed
    return _Scheme(scheme, group_size, symmetric)


def _quantize_array(array: np.ndarray, s: _Scheme) -> QuantizedTensor:
    if s.scheme in INT_SCHEMES:
        return quantize(array, s.scheme, group_size=None if s.scheme == "int8" else s.group_size,
                        symmetric=s.symmetric)
    if s.scheme == "fp8_e4m3":
        return quantize(array, s.scheme, granularity="channel")
    return quantize(array, s.scheme)


def _check_destination(src: str, dst: str, overwrite: bool) -> None:
    if os.path.exists(dst):
        if not os.path.isdir(dst):
            raise DestinationNotEmpty(f"destination {dst!r} exists and is not a directory")
        entries = [n for n in os.listdir(dst) if not n.startswith(".fastensors-")]
        if entries and not overwrite:
            raise DestinationNotEmpty(f"destination {dst!r} is not empty ({len(entries)} entries); "
                                      "pass overwrite=True (--overwrite) to replace its model")
        if os.path.samefile(dst, src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))):
            raise InvalidArgument("the destination is the source's directory")


# -- reading the source -------------------------------------------------------------------

class _Source:
    """The source checkpoint, read tensor by tensor into fresh buffers (so
    memory drops once a tensor is done, whatever the model size)."""

    def __init__(self, src: str):
        from ..checkpoint import open_checkpoint

        self.path = src
        self.ckpt = open_checkpoint(src, framework="np")
        self.ckpt.verify()
        self.order = self.ckpt.offset_keys()
        self.from_dir = os.path.isdir(src) or self.ckpt.is_sharded
        self.infos = []
        for name in self.order:
            info = self.ckpt.tensor_info(name)
            self.infos.append((name, info.dtype, tuple(info.shape), info.nbytes))

    def read(self, name: str) -> np.ndarray:
        return self.ckpt.get_tensor(name)

    def raw(self, name: str, keep_alive: list) -> tuple:
        return self.ckpt.raw_spec(name, keep_alive)

    def release(self, name: str) -> None:
        # Done with a source tensor: its mapped pages leave the resident set,
        # so memory stays about one tensor whatever the model's size.
        self.ckpt.release(name)

    def config(self) -> Optional[dict]:
        if not self.from_dir:
            return None
        path = os.path.join(self.ckpt.directory, "config.json")
        if not os.path.isfile(path):
            return None
        return read_json(path)

    def companions(self) -> Dict[str, Callable[[str], None]]:
        if not self.from_dir:
            return {}
        exclude = list(self.ckpt.files) + ([self.ckpt.index_path] if self.ckpt.index_path else [])
        return companion_files(self.ckpt.directory, [os.path.basename(p) for p in exclude])

    def close(self) -> None:
        self.ckpt.close()


class _Quantizer:
    """Quantizes source tensors on demand and measures them once."""

    def __init__(self, source: _Source, scheme: _Scheme, reports: Dict[str, TensorReport], measure: bool):
        self.source = source
        self.scheme = scheme
        self.reports = reports
        self.measure = measure
        self._buf: Optional[np.ndarray] = None

    def _scratch(self, shape) -> np.ndarray:
        """One F32 buffer reused for every tensor's dequantization (a fresh
        array per tensor costs more in page faults than the kernel)."""
        n = int(np.prod(shape, dtype=np.int64))
        if self._buf is None or self._buf.size < n:
            self._buf = _aligned_f32(1, n).reshape(-1)
        return self._buf[:n].reshape(shape)

    def __call__(self, name: str) -> QuantizedTensor:
        array = self.source.read(name)
        qt = _quantize_array(array, self.scheme)
        rep = self.reports[name]
        if self.measure and rep.cosine is None:
            m = quality(array, qt.dequantize(out=self._scratch(qt.shape)))
            rep.cosine, rep.sqnr_db, rep.rmse, rep.max_abs_err = (m["cosine"], m["sqnr_db"], m["rmse"],
                                                                  m["max_abs_err"])
        return qt


class _Progress:
    def __init__(self, callback: Optional[ProgressCallback], total: int):
        self.callback = callback
        self.total = total
        self.done = 0
        self.seen: set = set()

    def tensor_done(self, name: str, nbytes: int) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        self.done += nbytes
        if self.callback is not None:
            self.callback(self.done, self.total)


# -- options -----------------------------------------------------------------------------

@dataclass
class _Options:
    """The arguments of ``quantize_model`` checked and resolved."""

    chosen: _Scheme
    profile: Optional[str]
    format: str
    symmetric: Optional[bool]
    ignore_re: List[Pattern[str]]
    only_re: Optional[Pattern[str]]
    validate: bool
    min_cosine: Optional[float]

    @property
    def edge_search(self) -> bool:
        return self.profile == "edge" and self.min_cosine is not None


def _resolve_options(scheme, group_size, symmetric, profile, format, ignore, only, validate, min_cosine,
                     report) -> _Options:
    if format not in FORMATS:
        raise InvalidArgument(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if (scheme is None) == (profile is None):
        raise InvalidArgument("give exactly one of scheme and profile")
    if profile is not None and profile not in PROFILES:
        raise InvalidArgument(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if min_cosine is not None:
        min_cosine = float(min_cosine)
        if not -1.0 <= min_cosine <= 1.0:
            raise InvalidArgument(f"min_cosine must be between -1 and 1, not {min_cosine}")
        validate = True
    if isinstance(ignore, (str, re.Pattern)):
        ignore = [ignore]
    ignore_re = [compile_one(p, "ignore") for p in ignore]
    only_re = compile_one(only, "only")
    if profile is not None:
        if group_size is not None:
            raise InvalidArgument(f"profile {profile!r} sets the group size")
        if format == "gguf":
            scheme, group_size = GGUF_PROFILES[profile], None
        else:
            scheme, group_size = PROFILES[profile]
    chosen = _resolve_scheme(scheme, group_size, symmetric, format)
    if report is not None and os.path.splitext(os.fspath(report))[1].lower() not in (".json", ".html", ".htm",
                                                                                      ".png"):
        raise InvalidArgument(f"report {os.fspath(report)!r}: the name must end in .json, .html or .png")
    return _Options(chosen, profile, format, symmetric, ignore_re, only_re, bool(validate), min_cosine)


def _select_items(source: "_Source", src: str, dst: str, o: _Options, overwrite: bool
                  ) -> Tuple[List[_Item], QuantizationReport]:
    """The destination checked, the tensors selected, an empty report."""
    _check_destination(src, dst, overwrite)
    items = select(source.infos, o.ignore_re, o.only_re)
    if not any(i.quantize for i in items):
        raise InvalidArgument(f"no tensor of {src!r} is selected for quantization "
                              "(2-D float *.weight tensors of linear layers; see ignore/only)")
    out = QuantizationReport(src=src, dst=dst, format=o.format, scheme=o.chosen.scheme,
                             group_size=o.chosen.group_size, symmetric=o.chosen.symmetric)
    return items, out


def _tensor_reports(items: List[_Item], chosen: _Scheme, skip_unsupported: bool,
                    out: QuantizationReport) -> Dict[str, TensorReport]:
    """Shapes checked (UnsupportedTensorShape, or dense with a warning),
    and one TensorReport per source tensor in ``out.tensors``."""
    _check_shapes(items, chosen, skip_unsupported, out)
    reports: Dict[str, TensorReport] = {}
    for it in items:
        reports[it.name] = TensorReport(it.name, list(it.shape), it.code, chosen.scheme if it.quantize else "dense",
                                        it.nbytes, it.nbytes, None if it.quantize else it.reason)
    out.tensors = [reports[it.name] for it in items]
    return reports


def _check_quality(out: QuantizationReport, min_cosine: Optional[float], dst: str) -> None:
    """QualityThresholdNotMet naming the worst tensors when any measured one
    is below ``min_cosine``."""
    if min_cosine is None:
        return
    bad = [t for t in out.quantized if t.cosine is not None and t.cosine < min_cosine]
    if bad:
        bad.sort(key=lambda t: t.cosine)
        worst = ", ".join(f"{t.name} (cosine {t.cosine:.6f})" for t in bad[:5])
        raise QualityThresholdNotMet(f"{len(bad)} tensor(s) below min_cosine {min_cosine}: {worst}; "
                                     f"nothing was written to {dst!r}")


# -- the public entry point ----------------------------------------------------------------

def quantize_model(
    src: PathLike,
    dst: PathLike,
    *,
    scheme: Optional[str] = None,
    group_size: Optional[int] = None,
    symmetric: Optional[bool] = None,
    profile: Optional[str] = None,
    format: str = "safetensors",
    ignore: Sequence[str] = (),
    only: Optional[str] = None,
    max_shard_size: SizeLike = MAX_SHARD_SIZE,
    validate: bool = False,
    min_cosine: Optional[float] = None,
    report: Optional[PathLike] = None,
    skip_unsupported: bool = False,
    overwrite: bool = False,
    progress: Optional[ProgressCallback] = None,
    durable: Optional[bool] = None,
    storage_options: Optional[dict] = None,
    process_group=None,
) -> QuantizationReport:
    """Quantize the linear layers of the model at ``src`` into the directory
    ``dst`` and return a :class:`QuantizationReport`.

    ``scheme`` (or a ``profile``: "cloud" int8 per channel, "local" int4
    group 128, "edge" int4 group 32) picks the quantization; ``format``
    "safetensors" writes the compressed-tensors layout transformers loads
    (NF4 in fastensors' own layout), "gguf" a ``model.gguf`` with the GGML
    schemes, "parquet" one row per tensor in ``model.parquet``. ``ignore``
    (regexes) keeps matching tensors dense; ``only`` quantizes just the 2-D
    weights it matches. ``validate`` measures every quantized tensor (cosine,
    SQNR, RMSE, max abs error); ``min_cosine`` implies it and fails the run,
    leaving ``dst`` untouched, when a tensor falls below it (with profile
    "edge": picks the most aggressive scheme that meets it). ``report``
    writes the report as .json, .html or .png. A shape the scheme cannot
    take is an error, or with ``skip_unsupported`` a warning and a dense
    tensor. ``progress(done_bytes, total_bytes)`` is called as source tensors
    are done. ``durable=False`` skips fsync; the commit stays atomic.

    ``src`` may be a URL (docs/remote.md; ``storage_options`` go to fsspec):
    every byte is read, so the model's files (and its config.json) are first
    copied by parallel range requests into a temporary folder.

    ``process_group``: None (the default) quantizes in this process. A
    ``torch.distributed`` process group, or ``"default"`` for the default
    group of an initialized ``torch.distributed``, shares the work out:
    call it on every rank with the same arguments (under torchrun); each
    rank quantizes the output shards assigned to it, rank 0 commits the
    set once all succeeded, and every rank returns the same report. The
    files are this function's without a group, byte for byte. safetensors
    output from a local ``src`` only (InvalidArgument otherwise); ``dst``
    must be on a filesystem every rank shares; ``progress`` counts this
    rank's share. Errors: the failing rank's own error there, RankFailed on
    the others (also when a rank dies or the group's timeout passes);
    nothing is committed then. docs/distributed.md."""
    if process_group is not None:
        return _quantize_split(
            src, dst, process_group, scheme=scheme, group_size=group_size, symmetric=symmetric, profile=profile,
            format=format, ignore=ignore, only=only, max_shard_size=max_shard_size, validate=validate,
            min_cosine=min_cosine, report=report, skip_unsupported=skip_unsupported, overwrite=overwrite,
            progress=progress, durable=durable)
    if is_url(src):
        kwargs = dict(scheme=scheme, group_size=group_size, symmetric=symmetric, profile=profile, format=format,
                      ignore=ignore, only=only, max_shard_size=max_shard_size, validate=validate,
                      min_cosine=min_cosine, report=report, skip_unsupported=skip_unsupported, overwrite=overwrite,
                      progress=progress, durable=durable)
        with tempfile.TemporaryDirectory(prefix=".fastensors-stage-") as tmp:
            out = quantize_model(stage(src, tmp, storage_options), dst, **kwargs)
            out.src = src
            return out
    started = time.perf_counter()
    o = _resolve_options(scheme, group_size, symmetric, profile, format, ignore, only, validate, min_cosine, report)
    chosen = o.chosen

    src, dst = os.fspath(src), os.fspath(dst)
    source = _Source(src)
    try:
        items, out = _select_items(source, src, dst, o, overwrite)
        if o.edge_search:
            ladder = GGUF_LADDER if format == "gguf" else EDGE_LADDER
            chosen = _pick_edge_scheme(source, items, ladder, symmetric, o.min_cosine, format, out)
            out.scheme, out.group_size, out.symmetric = chosen.scheme, chosen.group_size, chosen.symmetric
        reports = _tensor_reports(items, chosen, skip_unsupported, out)
        quantizer = _Quantizer(source, chosen, reports, o.validate or format == "parquet")
        bar = _Progress(progress, sum(it.nbytes for it in items))

        def check_quality() -> None:
            _check_quality(out, o.min_cosine, dst)

        dur = _serialize.resolve_durable(durable)
        if format == "safetensors":
            _write_safetensors(source, items, chosen, quantizer, dst, max_shard_size, dur, bar, out, check_quality)
        else:
            _write_single(source, items, chosen, quantizer, dst, format, dur, bar, out, check_quality)
    finally:
        source.close()
    out.seconds = time.perf_counter() - started
    if report is not None:
        out.write(report)
    return out


def _check_shapes(items: List[_Item], s: _Scheme, skip: bool, out: QuantizationReport) -> None:
    for it in items:
        if not it.quantize:
            continue
        why = shape_problem(s.scheme, it.shape, s.group_size)
        if why is None:
            continue
        msg = f"tensor {it.name!r} of shape {list(it.shape)} cannot be quantized with {s.label}: {why}"
        if not skip:
            raise UnsupportedTensorShape(msg + "; pass skip_unsupported=True (--skip-unsupported) to keep it dense")
        warnings.warn(msg + "; kept dense", stacklevel=3)
        out.warnings.append(msg + "; kept dense")
        it.quantize = False
        it.reason = f"unsupported shape: {why}"


def _pick_edge_scheme(source: _Source, items: List[_Item], ladder, symmetric: Optional[bool], min_cosine: float,
                      fmt: str, out: QuantizationReport) -> _Scheme:
    """The most aggressive rung of ``ladder`` every selected tensor meets
    ``min_cosine`` with. Each tensor is tried from the current choice up, so
    the search costs little more than one pass."""
    rungs = [_resolve_scheme(s, g, None if s == "int8" else symmetric, fmt) for s, g in ladder]
    at = 0
    worst: Dict[str, float] = {}
    for it in items:
        if not it.quantize:
            continue
        array = source.read(it.name)
        while at < len(rungs):
            r = rungs[at]
            if shape_problem(r.scheme, it.shape, r.group_size) is None:
                cos = quality(array, _quantize_array(array, r).dequantize())["cosine"]
                worst[r.label] = min(worst.get(r.label, 1.0), cos)
                if cos >= min_cosine:
                    break
            at += 1
        if at == len(rungs):
            out.candidates = worst
            raise QualityThresholdNotMet(f"no scheme of the edge profile keeps tensor {it.name!r} at cosine "
                                         f">= {min_cosine} (best tried: {rungs[-1].label}); nothing was written")
        del array
    out.candidates = worst
    return rungs[at]


# -- safetensors (compressed-tensors layout) -------------------------------------------

def _ignore_list(items: List[_Item], cfg: Optional[dict]) -> List[str]:
    """Linear layers left dense, as compressed-tensors lists them: module names."""
    names = []
    for it in items:
        if it.quantize or not it.name.endswith(".weight") or len(it.shape) != 2 or it.code not in FLOAT_CODES:
            continue
        module = _ct_layout.module_of(it.name)
        reason = _dense_by_default(it.name) or ""
        if reason.startswith(("embedding", "norm")):
            continue
        names.append(module)
    if "lm_head" not in names and not any(it.name == "lm_head.weight" and it.quantize for it in items):
        names.append("lm_head")  # tied to the embeddings, or absent: transformers still builds it
    return names


@dataclass
class _SafetensorsPlan:
    """The output of the compressed-tensors layout, planned from shapes alone."""

    outputs: Dict[str, tuple]  # output name -> (code, shape, nbytes, source name, suffix or None, small)
    plan: object  # checkpoint.sharding.ShardPlan, named by output tensors
    file_meta: Dict[str, str]
    companions: Dict[str, Callable[[str], None]]
    source_bytes: Dict[str, int]  # shard file -> bytes of the source tensors it is made of


FILENAME_PATTERN = "model{suffix}.safetensors"
EXTRA_STALE = ["model{suffix}.gguf", "model{suffix}.parquet"]


def _plan_safetensors(source: _Source, items: List[_Item], s: _Scheme, reports: Dict[str, TensorReport],
                      max_shard_size: SizeLike) -> _SafetensorsPlan:
    """Every output tensor, the shard split and the files beside the shards.
    Sets each quantized tensor's ``bytes_out`` in ``reports``."""
    outputs: Dict[str, tuple] = {}
    entries = []
    groups: Dict[str, List[str]] = {}
    for it in items:
        if it.quantize:
            module = _ct_layout.module_of(it.name)
            names = []
            total = 0
            for p in _ct_layout.plan_parts(s.scheme, it.shape, it.code, s.group_size, s.symmetric):
                oname = f"{module}.{p.suffix}"
                outputs[oname] = (p.code, p.shape, p.nbytes, it.name, p.suffix, p.small)
                names.append(oname)
                total += p.nbytes
            reports[it.name].bytes_out = total
        else:
            outputs[it.name] = (it.code, it.shape, it.nbytes, it.name, None, True)
            names, total = [it.name], it.nbytes
        groups[it.name] = names
        entries.append(Entry(it.name, total, None))
    # Plan by source tensor so a weight's parts share a shard, then name the parts.
    plan = plan_shards(entries, max_shard_size)
    by_name = {it.name: it.nbytes for it in items}
    source_bytes = {f: sum(by_name[n] for n in names) for f, names in plan.filename_to_tensors.items()}
    plan.filename_to_tensors = {f: [o for n in names for o in groups[n]] for f, names in
                                plan.filename_to_tensors.items()}
    plan.tensor_to_filename = {o: f for f, names in plan.filename_to_tensors.items() for o in names}

    qmeta = {"scheme": s.scheme, "group_size": s.group_size, "symmetric": s.symmetric,
             "format": _ct_layout.NF4_FORMAT if s.scheme == "nf4" else _ct_layout.CT_FORMAT[s.scheme],
             "dtype": next(it.code for it in items if it.quantize)}
    file_meta = {"format": "pt", "fastensors.quantization": json.dumps(qmeta)}
    cfg = source.config()
    companions = source.companions()
    if cfg is not None:
        new_cfg = dict(cfg)
        new_cfg["quantization_config"] = _ct_layout.quantization_config(s.scheme, s.group_size, s.symmetric,
                                                                        _ignore_list(items, cfg))
        companions["config.json"] = json_companion(new_cfg)
    return _SafetensorsPlan(outputs, plan, file_meta, companions, source_bytes)


def _shard_writer(source: _Source, outputs: Dict[str, tuple], quantizer: _Quantizer,
                  bar: _Progress) -> Callable[[str, List[str], Dict[str, str]], None]:
    """write(path, output names, file metadata): one shard, not synced."""

    def write_shard(path: str, names: List[str], meta: Dict[str, str]) -> None:
        # Written in the planned order, where the parts of each quantized
        # weight follow one another: each weight is quantized once, and only
        # its parts wait in memory until the writer takes them.
        specs = [(n, outputs[n][0], list(outputs[n][1]), None, outputs[n][2]) for n in names]
        pending: Dict[str, np.ndarray] = {}  # the parts of the weight named in current[0]
        current = [None]
        holder: list = []
        copied = [None]  # the dense tensor whose mapped bytes the writer holds until the next call

        def done_with_copied() -> None:
            holder.clear()
            if copied[0] is not None:
                source.release(copied[0])
                copied[0] = None

        def fill(index: int):
            done_with_copied()
            name = names[index]
            code, shape, nbytes, src_name, suffix, _small = outputs[name]
            if suffix is None:
                spec = source.raw(src_name, holder)
                copied[0] = src_name
                bar.tensor_done(src_name, nbytes)
                return spec[3]
            if current[0] != src_name:
                pending.clear()
                pending.update(_ct_layout.parts_of(quantizer(src_name)))
                source.release(src_name)
                current[0] = src_name
                bar.tensor_done(src_name, quantizer.reports[src_name].bytes_in)
            arr = np.ascontiguousarray(pending.pop(suffix))
            if arr.nbytes != nbytes:  # pragma: no cover - plan_parts and parts_of disagree
                raise RuntimeError(f"{name}: planned {nbytes} bytes, produced {arr.nbytes}")
            holder.append(arr)
            return _serialize.byte_view(arr)

        try:
            _serialize.write_specs_streaming(specs, path, meta, False, fill, keep_order=True)
        finally:
            done_with_copied()

    return write_shard


def _write_safetensors(source: _Source, items: List[_Item], s: _Scheme, quantizer: _Quantizer, dst: str,
                       max_shard_size: SizeLike, durable: bool, bar: _Progress, out: QuantizationReport,
                       check_quality: Callable[[], None]) -> None:
    p = _plan_safetensors(source, items, s, quantizer.reports, max_shard_size)
    write_shard = _shard_writer(source, p.outputs, quantizer, bar)
    write_planned(dst, p.plan, write_shard, filename_pattern=FILENAME_PATTERN, metadata=None,
                  total_parameters=None, durable=durable, file_metadata=p.file_meta, companions=p.companions,
                  extra_stale=EXTRA_STALE, max_workers=1, before_commit=check_quality)
    out.files = list(p.plan.filename_to_tensors) + ([p.plan.index_file] if p.plan.index_file else [])
    out.copied_files = sorted(p.companions)


# -- gguf and parquet: one file ------------------------------------------------------------

def _write_single(source: _Source, items: List[_Item], s: _Scheme, quantizer: _Quantizer, dst: str, fmt: str,
                  durable: bool, bar: _Progress, out: QuantizationReport, check_quality: Callable[[], None]) -> None:
    cfg = source.config()
    companions = source.companions()
    fname = GGUF_FILE if fmt == "gguf" else PARQUET_FILE
    with FileSet(dst, durable=durable) as fs:
        path = fs.add_weight(fname)
        if fmt == "gguf":
            from .layouts.gguf import write_gguf

            write_gguf(path, source, items, s, quantizer, cfg, bar)
        else:
            from .layouts.parquet import write_parquet

            write_parquet(path, source, items, s, quantizer, cfg, bar)
        if durable:
            fsync_file(path)
        for name, write in companions.items():
            write(fs.add_companion(name))
        fs.stale = [stale_pattern("model{suffix}.safetensors"), stale_pattern("model{suffix}.gguf"),
                    stale_pattern("model{suffix}.parquet")]
        check_quality()
        fs.commit()
    out.files = [fname]
    out.copied_files = sorted(companions)


# -- across the ranks of a process group ---------------------------------------------------
# quantize_model(..., process_group=...): every rank reads the source's
# headers and makes the one-process plan (selection, scheme, shard split,
# headers from the shapes alone). The output shards are shared out by the
# bytes of source tensors they hold; each rank reads, quantizes and writes
# only its own shards, into the staging directory rank 0 opened. The
# quality figures are gathered, and once every rank has succeeded rank 0
# stages the index, config.json and the other files and commits the set.
# Between the steps every rank learns whether any failed (ranks.agree), so
# all raise together and nothing is committed then.

# Any error of a rank's own work is shared with the others: an unexpected
# one left to propagate would leave them waiting in the next collective.
_EXPECTED = (Exception,)
_METRICS = ("cosine", "sqnr_db", "rmse", "max_abs_err")


def _group_of(process_group):
    """(group, rank, world) for ``process_group``: "default" or a group."""
    try:
        import torch.distributed as dist
    except ImportError as e:
        raise InvalidArgument("quantize_model(process_group=...) needs torch.distributed") from e
    if not (dist.is_available() and dist.is_initialized()):
        raise InvalidArgument("quantize_model(process_group=...): torch.distributed is not initialized; call "
                              "torch.distributed.init_process_group first (under torchrun), or leave "
                              "process_group=None to quantize in this process")
    if isinstance(process_group, str):
        if process_group != "default":
            raise InvalidArgument(f"process_group must be a torch.distributed process group or 'default', "
                                  f"not {process_group!r}")
        group = None
    elif isinstance(process_group, dist.ProcessGroup):
        group = process_group
    else:
        raise InvalidArgument(f"process_group must be a torch.distributed process group or 'default', "
                              f"not {type(process_group).__name__}")
    return group, dist.get_rank(group), dist.get_world_size(group)


def _quantize_split(src, dst, process_group, *, scheme, group_size, symmetric, profile, format, ignore, only,
                    max_shard_size, validate, min_cosine, report, skip_unsupported, overwrite, progress,
                    durable) -> QuantizationReport:
    """``quantize_model`` on every rank of ``process_group`` at once (see
    its docstring for the arguments). Returns rank 0's report on every
    rank. Raises, on every rank, the rank's own error or RankFailed; the
    destination is untouched then."""
    import torch.distributed as dist

    group, rank, world = _group_of(process_group)
    started = time.perf_counter()
    error: Optional[BaseException] = None
    source = fs = None
    committed = False
    try:
        try:
            o = _resolve_options(scheme, group_size, symmetric, profile, format, ignore, only, validate,
                                 min_cosine, report)
            if o.format != "safetensors":
                raise InvalidArgument(f"quantize_model across ranks writes format='safetensors' only: a "
                                      f"{o.format!r} model is one file, written by one process; call "
                                      "quantize_model without process_group (on one rank)")
            if is_url(src):
                raise InvalidArgument("quantize_model across ranks reads a local model directory or file: copy "
                                      "the URL's files first, or call quantize_model without process_group")
            src, dst = os.fspath(src), os.fspath(dst)
            source = _Source(src)
            items, out = _select_items(source, src, dst, o, overwrite)
        except _EXPECTED as e:
            error = e
        ranks.agree(error, group, "quantize_model")
        chosen = o.chosen
        if o.edge_search:
            # The search is sequential (each tensor tried from the rung the
            # previous ones reached): done once, on rank 0, for the same choice.
            def search() -> Tuple[object, Dict[str, float]]:
                picked = _pick_edge_scheme(source, items, EDGE_LADDER, o.symmetric, o.min_cosine, o.format, out)
                return picked, out.candidates

            chosen, out.candidates = ranks.on_rank0(rank, group, search, _EXPECTED, "quantize_model")
            out.scheme, out.group_size, out.symmetric = chosen.scheme, chosen.group_size, chosen.symmetric

        staging: List[object] = [None]
        try:
            reports = _tensor_reports(items, chosen, skip_unsupported, out)
            plan = _plan_safetensors(source, items, chosen, reports, max_shard_size)
            dur = _serialize.resolve_durable(durable)
            if rank == 0:
                fs = FileSet(dst, durable=dur)
                staging[0] = fs.staging
        except _EXPECTED as e:
            error = e
        ranks.agree(error, group, "quantize_model")
        with ranks.lost_ranks("quantize_model"):
            dist.broadcast_object_list(staging, src=0, group=group)

        shards = list(plan.plan.filename_to_tensors)
        owner = ranks.assign([plan.source_bytes[f] for f in shards], world)
        mine = [f for f, r in zip(shards, owner) if r == rank]
        # The source tensors this rank reads: those its shards are made of.
        mine_items = {plan.outputs[name][3] for f in mine for name in plan.plan.filename_to_tensors[f]}
        measured: Dict[str, Tuple] = {}
        try:
            quantizer = _Quantizer(source, chosen, reports, o.validate)
            bar = _Progress(progress, sum(it.nbytes for it in items if it.name in mine_items))
            write_shard = _shard_writer(source, plan.outputs, quantizer, bar)
            base_meta = shard_file_metadata(plan.plan, {}, plan.file_meta)
            for fname in mine:
                path = os.path.join(staging[0], fname)
                write_shard(path, plan.plan.filename_to_tensors[fname], dict(base_meta))
                if dur:
                    fsync_file(path)
            measured = {n: tuple(getattr(reports[n], m) for m in _METRICS) for n in mine_items
                        if reports[n].cosine is not None}
        except _EXPECTED as e:
            error = e
        every: List[object] = [None] * world
        with ranks.lost_ranks("quantize_model"):
            dist.all_gather_object(every, None if error is not None else measured, group=group)
        ranks.agree(error, group, "quantize_model")
        for part in every:
            for name, values in part.items():
                for m, v in zip(_METRICS, values):
                    setattr(reports[name], m, v)
        try:
            _check_quality(out, o.min_cosine, dst)  # the same figures everywhere: the same verdict
        except _EXPECTED as e:
            error = e
        ranks.agree(error, group, "quantize_model")

        def commit() -> QuantizationReport:
            nonlocal committed
            # Shards staged by every rank: rank 0 adds what write_planned
            # would, in its order, then commits.
            for fname in shards:
                fs.add_weight(fname)
            stage_index(fs, plan.plan, filename_pattern=FILENAME_PATTERN, metadata={}, total_parameters=None,
                        extra_stale=EXTRA_STALE)
            for name, write in plan.companions.items():
                path = fs.add_companion(name)
                with naming("write", path):
                    write(path)
            fs.commit()
            committed = True
            out.files = shards + ([plan.plan.index_file] if plan.plan.index_file else [])
            out.copied_files = sorted(plan.companions)
            out.seconds = time.perf_counter() - started
            if report is not None:
                out.write(report)
            return out

        return ranks.on_rank0(rank, group, commit, _EXPECTED, "quantize_model")
    except BaseException:
        if fs is not None and not committed:
            fs.abort()
        raise
    finally:
        if source is not None:
            source.close()
