"""llama.cpp importance-matrix files (``llama-imatrix`` output) read into the
per-column weights ``llama-quantize --imatrix`` derives from them.

Two layouts exist. The current one is a GGUF file: for each weight tensor
``T`` of the model, an F32 tensor ``T.in_sum2`` (sums of squared
activations, one row of ``ne0`` values per expert) and an F32 tensor
``T.counts`` (one count per expert), plus the keys ``imatrix.datasets``,
``imatrix.chunk_count`` and ``imatrix.chunk_size``. The weight of column
``i`` of expert ``j`` is ``in_sum2[j, i] / count[j]`` (count rounded to an
integer first), or 1 where the count is not positive. The legacy one is a
little-endian binary ``.dat`` file::

    int32 n_entries (>= 1)
    n_entries times: int32 name_len, name bytes, int32 ncall,
                     int32 nval (>= 1), nval float32 (sums already / count * ncall)
    optional: int32 chunk_count, int32 dataset_len, dataset bytes

where the weights are ``values / ncall`` (the values themselves when ncall
<= 0). Every division is in float32, as llama-quantize does it."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Union

import numpy as np

from ..errors import InvalidArgument

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["read_imatrix", "ImatrixError"]

_GGUF_MAGIC = b"GGUF"
_INT64_MIN = -(2 ** 63)


class ImatrixError(InvalidArgument):
    """An importance-matrix file that llama-quantize would refuse: truncated,
    garbled, missing its metadata, mismatched sums and counts, or weights
    that are negative or not finite."""


@dataclass
class _Imatrix:
    weights: Dict[str, np.ndarray]
    datasets: List[str] = field(default_factory=list)
    chunk_count: int = 0


def read_imatrix(path: PathLike) -> Dict[str, np.ndarray]:
    """The importance matrix in the llama.cpp file ``path`` (GGUF or legacy
    ``.dat``), as llama-quantize loads it.

    Returns GGUF tensor name -> 1-D float32 weights: ``ne0`` values for a
    matrix, ``n_expert * ne0`` (expert by expert) for stacked experts.
    Raises ImatrixError (an InvalidArgument) for a file llama-quantize would
    refuse or that is malformed, including weights that are negative or not
    finite; InvalidArgument when ``path`` cannot be read."""
    return _load(path).weights


def _load(path: PathLike) -> _Imatrix:
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read imatrix file {path!r}: {e.strerror or e}") from None
    # llama.cpp tries GGUF first and falls back to the legacy layout; a file
    # with the GGUF magic that does not parse is reported as GGUF.
    out = _gguf(path, data) if data[:4] == _GGUF_MAGIC else _legacy(path, data)
    for name, w in out.weights.items():
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise ImatrixError(f"{path!r}: weight {i} of {name!r} is {float(w[i])!r}; weights must be finite and >= 0")
    return out


def _legacy(path: str, data: bytes) -> _Imatrix:
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise ImatrixError(f"{path!r}: truncated legacy imatrix file (reading {what} at byte {pos})")
        pos += n
        return data[pos - n:pos]

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = i32("the entry count") if len(data) >= 4 else 0
    if n_entries < 1:
        raise ImatrixError(f"{path!r}: not an imatrix file (no GGUF magic, legacy entry count {n_entries})")
    sums: Dict[str, np.ndarray] = {}
    ncalls: Dict[str, int] = {}
    for i in range(n_entries):
        n = i32(f"entry {i}'s name length")
        if n < 0:
            raise ImatrixError(f"{path!r}: entry {i} has a negative name length {n}")
        raw = take(n, f"entry {i}'s name")
        # llama.cpp keeps the name up to its first NUL byte
        try:
            name = raw.split(b"\0", 1)[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ImatrixError(f"{path!r}: entry {i}'s name is not UTF-8") from None
        ncall = i32(f"entry {i}'s call count")
        nval = i32(f"entry {i}'s value count")
        if nval < 1:
            raise ImatrixError(f"{path!r}: entry {i} ({name!r}) has {nval} values")
        sums[name] = np.frombuffer(take(4 * nval, f"entry {i}'s values"), dtype="<f4").astype(np.float32)
        ncalls[name] = ncall  # a repeated name replaces the earlier entry, as in llama.cpp
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):  # the optional trailer; llama.cpp ignores a damaged one
        chunk_count = i32("the chunk count")
        if pos + 4 <= len(data):
            n = i32("the dataset name length")
            if 0 < n <= len(data) - pos:
                datasets.append(take(n, "the dataset name").split(b"\0", 1)[0].decode("utf-8", "replace"))
    weights = {}
    with np.errstate(all="ignore"):  # damaged values are reported by _load
        for name, s in sums.items():
            ncall = ncalls[name]
            weights[name] = s / np.float32(ncall) if ncall > 0 else s
    return _Imatrix(weights, datasets, chunk_count)


def _lround(v: np.ndarray) -> np.ndarray:
    """C's lround of float32 values on x86-64: half away from zero; NaN,
    infinities and values out of int64's range give INT64_MIN."""
    d = v.astype(np.float64)
    out = np.full(d.shape, _INT64_MIN, dtype=np.int64)
    ok = np.isfinite(d) & (np.abs(d) < 2.0 ** 63)
    r = np.where(d >= 0, np.floor(d + 0.5), -np.floor(-d + 0.5))
    ok &= np.abs(r) < 2.0 ** 63
    out[ok] = r[ok].astype(np.int64)
    return out


def _gguf(path: str, data: bytes) -> _Imatrix:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
        tensors = [(t.name, t.tensor_type, np.asarray(t.data)) for t in reader.tensors]
        fields = reader.fields
        has_meta = all(k in fields for k in ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"))
        datasets: List[str] = []
        f = fields.get("imatrix.datasets")
        if f is not None and f.types[:2] == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING]:
            datasets = [bytes(f.parts[i]).decode("utf-8", "replace") for i in f.data]
        f = fields.get("imatrix.chunk_count")
        chunk_count = int(f.parts[f.data[0]][0]) if f is not None and f.data else 0
    except ImatrixError:
        raise
    except Exception as e:  # the reader's errors on damaged files are of many kinds
        raise ImatrixError(f"{path!r}: not a readable GGUF imatrix file ({type(e).__name__}: {e})") from None
    if not tensors:
        raise ImatrixError(f"{path!r}: the GGUF imatrix file holds no tensors")
    if not has_meta:
        raise ImatrixError(f"{path!r}: missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, "
                           "imatrix.chunk_size); llama-quantize refuses such a file")
    pairs: Dict[str, list] = {}
    for name, ttype, arr in tensors:
        if not name:
            continue
        for suffix, slot in ((".in_sum2", 0), (".counts", 1)):
            if name.endswith(suffix):
                pairs.setdefault(name[:-len(suffix)], [None, None])[slot] = (ttype, arr)
                break
    weights: Dict[str, np.ndarray] = {}
    for name in sorted(pairs):
        s, c = pairs[name]
        if s is None or c is None:
            raise ImatrixError(f"{path!r}: mismatched sums and counts for {name!r}")
        if s[0] != gguf.GGMLQuantizationType.F32 or c[0] != gguf.GGMLQuantizationType.F32:
            raise ImatrixError(f"{path!r}: sums and counts for {name!r} must be F32")
        sums = np.ascontiguousarray(s[1], dtype=np.float32).reshape(-1)
        counts = _lround(np.ascontiguousarray(c[1], dtype=np.float32).reshape(-1)).astype(np.float32)
        if counts.size == 0:
            raise ImatrixError(f"{path!r}: {name!r} has no counts")
        ne0 = sums.size // counts.size
        # values past ncounts * ne0 (sums not a whole number of rows) stay 0, as in llama.cpp
        w = np.zeros(sums.size, dtype=np.float32)
        with np.errstate(all="ignore"):  # damaged values are reported by _load
            for j, count in enumerate(counts):
                row = slice(j * ne0, (j + 1) * ne0)
                w[row] = sums[row] / count if count > 0 else np.float32(1)
        weights[name] = w
    return _Imatrix(weights, datasets, chunk_count)


def resolve(imatrix) -> _Imatrix:
    """The exporter's ``imatrix`` argument (a file path or a mapping of GGUF
    tensor name -> weights) as weights plus what the file says about
    itself. Raises InvalidArgument for anything else or bad weights."""
    if isinstance(imatrix, (str, os.PathLike)):
        return _load(imatrix)
    if not isinstance(imatrix, Mapping):
        raise InvalidArgument(f"imatrix must be a file path or a mapping of tensor name -> weights, "
                              f"not {type(imatrix).__name__}")
    weights = {}
    for name, w in imatrix.items():
        if not isinstance(name, str):
            raise InvalidArgument(f"imatrix keys must be GGUF tensor names (str), got {name!r}")
        a = np.asarray(w)
        if a.dtype.kind not in "fiu" or a.ndim != 1:
            raise InvalidArgument(f"imatrix[{name!r}] must be a 1-D array of weights, got {a.dtype} {a.shape}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        bad = ~np.isfinite(a) | (a < 0)
        if bad.any():
            i = int(np.argmax(bad))
            raise InvalidArgument(f"imatrix[{name!r}][{i}] is {float(a[i])!r}; weights must be finite and >= 0")
        weights[name] = a
    return _Imatrix(weights)

