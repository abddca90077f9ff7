"""Reading GGUF files back: tensors dequantized (``_core.ggml_dequantize``)
and, for files :func:`~fastensors.gguf.export_gguf` wrote, renamed to the
checkpoint's names with the converter's transforms undone (Q/K permutation,
GPT-2 transposes), in the source dtype. ``dequantize_gguf`` writes the
result as a safetensors checkpoint with its config.json."""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple, Union

import numpy as np

from ..errors import DestinationNotEmpty, InvalidArgument, NotAQuantizedModel
from . import archs as _archs
from . import types as _types
from .types import CONFIG_KEY, FORMAT_KEY

PathLike = Union[str, "os.PathLike[str]"]
FLOAT_OUT = ("F32", "F16", "BF16")


class GgufTensor(NamedTuple):
    """One tensor of a GGUF file as read back: the name it is known by
    (the checkpoint's for our exports, else the GGUF name), its GGUF name and
    type, the shape and dtype code :meth:`GgufModel.get` returns."""

    name: str
    gguf_name: str
    type: str
    shape: Tuple[int, ...]
    dtype: str


class GgufModel:
    """A GGUF file opened for reading (``gguf.GGUFReader``, memory-mapped).

    ``config``: the source config.json (None for files we did not write);
    ``exported``: whether the file records the checkpoint's names;
    ``metadata``: the scalar and string keys; ``tensors``: GgufTensor by name."""

    def __init__(self, path: PathLike):
        import gguf

        self.path = os.fspath(path)
        try:
            self._reader = gguf.GGUFReader(self.path)
        # gguf's reader indexes into the mapped bytes as the header says: a
        # truncated or corrupted file surfaces as whichever lookup failed.
        except (ValueError, OSError, IndexError, KeyError, OverflowError, struct.error) as e:
            raise NotAQuantizedModel(f"{self.path!r} is not a GGUF file gguf can read: {e}") from None
        self.metadata: Dict[str, object] = {}
        for key, f in self._reader.fields.items():
            if key.startswith("GGUF.") or not f.types or f.types[0] == gguf.GGUFValueType.ARRAY:
                continue
            self.metadata[key] = f.contents()
        cfg = self.metadata.get(CONFIG_KEY)
        self.config: Optional[dict] = json.loads(cfg) if isinstance(cfg, str) else None
        fmt = self.metadata.get(FORMAT_KEY)
        self._format = json.loads(fmt) if isinstance(fmt, str) else None
        if self._format is not None and self._format.get("version") != 1:
            raise NotAQuantizedModel(f"{self.path!r}: export format version {self._format.get('version')} is newer "
                                     "than this fastensors reads")
        self.exported = self._format is not None
        known = (self._format or {}).get("tensors", {})
        self._raw: Dict[str, object] = {}
        self.tensors: Dict[str, GgufTensor] = {}
        for t in self._reader.tensors:
            tname = _types.type_name_of(t.tensor_type)
            if tname is None or (tname not in ("f32", "f16", "bf16") and _types.ggml_member(tname) is None):
                raise NotAQuantizedModel(f"{self.path!r}: tensor {t.name!r} has GGML type {t.tensor_type.name}, "
                                         "which fastensors does not read")
            gshape = tuple(int(d) for d in reversed(t.shape.tolist()))
            if t.name in known:
                k = known[t.name]
                entry = GgufTensor(k["name"], t.name, tname, tuple(k["shape"]), k["dtype"])
            else:
                entry = GgufTensor(t.name, t.name, tname, gshape,
                                   {"f32": "F32", "f16": "F16", "bf16": "BF16"}.get(tname, "F32"))
            self.tensors[entry.name] = entry
            self._raw[entry.name] = t

    def names(self) -> List[str]:
        return list(self.tensors)

    def get(self, name: str, dtype: Optional[str] = None) -> np.ndarray:
        """Tensor ``name`` as the checkpoint held it: dequantized, transform
        undone, cast to ``dtype`` ("F32", "F16", "BF16"; default: the
        source's dtype for exports, F32 for block types otherwise)."""
        from ..format.cast import convert

        if name not in self.tensors:
            raise InvalidArgument(f"{self.path!r} has no tensor {name!r}")
        info = self.tensors[name]
        t = self._raw[name]
        gshape = tuple(int(d) for d in reversed(t.shape.tolist()))
        a = _types.decode(np.asarray(t.data), info.type, gshape)
        k = (self._format or {}).get("tensors", {}).get(info.gguf_name)
        if k is not None:
            a = _archs.undo(k.get("transform"), int(k.get("heads") or 0), a).reshape(info.shape)
        want = dtype or info.dtype
        if want not in FLOAT_OUT and want != info.dtype:
            raise InvalidArgument(f"dtype: expected F32, F16 or BF16, got {want!r}")
        from ..format.dtypes import NUMPY

        return a if a.dtype == NUMPY[want] else convert(np.ascontiguousarray(a), want)

    def items(self, dtype: Optional[str] = None) -> Iterator[Tuple[str, np.ndarray]]:
        for n in self.tensors:
            yield n, self.get(n, dtype)

    def state_dict(self, dtype: Optional[str] = None) -> Dict[str, np.ndarray]:
        """Every tensor, by the name :meth:`get` takes."""
        return dict(self.items(dtype))


def read_gguf(path: PathLike) -> GgufModel:
    """Open a GGUF file for reading back (see :class:`GgufModel`). Raises
    NotAQuantizedModel for a file gguf cannot parse or a tensor type
    fastensors has no kernel for."""
    return GgufModel(path)


def is_export(path: PathLike) -> bool:
    """Whether ``path`` is a GGUF file :func:`export_gguf` wrote (cheap:
    the header and metadata only)."""
    try:
        import gguf

        r = gguf.GGUFReader(os.fspath(path))
    except Exception:  # not GGUF, or unreadable: not ours either way
        return False
    return FORMAT_KEY in r.fields


def dequantize_gguf(src: PathLike, dst: PathLike, *, dtype: Optional[str] = None, max_shard_size="5GB",
                    overwrite: bool = False, durable: Optional[bool] = None) -> List[str]:
    """Write the tensors of the GGUF file ``src`` as a dense safetensors
    checkpoint in the directory ``dst`` (with config.json when the file
    records it). ``dtype``: F32, F16 or BF16 for every tensor (default: each
    source tensor's dtype). Returns the files written. Raises
    NotAQuantizedModel, DestinationNotEmpty, InvalidArgument."""
    from ..checkpoint.sharding import Entry, json_companion, plan_shards, write_planned
    from ..format import writer as _serialize
    from ..format.cast import dtype_code
    from ..format.dtypes import nbytes_of

    src, dst = os.fspath(src), os.fspath(dst)
    target = dtype_code(dtype) if dtype is not None else None
    if target is not None and target not in FLOAT_OUT:
        raise InvalidArgument(f"dequantized weights are F32, F16 or BF16, not {target}")
    model = read_gguf(src)
    if os.path.exists(dst):
        if not os.path.isdir(dst):
            raise DestinationNotEmpty(f"destination {dst!r} exists and is not a directory")
        if [n for n in os.listdir(dst) if not n.startswith(".fastensors-")] and not overwrite:
            raise DestinationNotEmpty(f"destination {dst!r} is not empty; pass overwrite=True to replace its model")
    infos = [(t.name, target or t.dtype, t.shape) for t in model.tensors.values()]
    plan = plan_shards([Entry(n, nbytes_of(c, s), None) for n, c, s in infos], max_shard_size)
    specs_of = {n: (n, c, list(s), None, nbytes_of(c, s)) for n, c, s in infos}
    codes = {n: c for n, c, _ in infos}

    def write_shard(path: str, names: List[str], meta: Dict[str, str]) -> None:
        holder: list = []

        def fill(index: int):
            holder.clear()
            arr = np.ascontiguousarray(model.get(names[index], codes[names[index]]))
            holder.append(arr)
            return _serialize.byte_view(arr)

        _serialize.write_specs_streaming([specs_of[n] for n in names], path, meta, False, fill)

    companions = {"config.json": json_companion(model.config)} if model.config is not None else {}
    write_planned(dst, plan, write_shard, filename_pattern="model{suffix}.safetensors", metadata=None,
                  total_parameters=None, durable=_serialize.resolve_durable(durable), companions=companions,
                  max_workers=1)
    return list(plan.filename_to_tensors) + ([plan.index_file] if plan.index_file else []) + sorted(companions)


class GgufSummary:
    """What ``fastensors inspect`` shows of a GGUF file, from its header and
    metadata only: architecture, file type, tokenizer, the tensors (GGUF
    name, type, numpy-order shape, bytes) and the scalar metadata."""

    def __init__(self, path: str, model: GgufModel):
        import gguf

        self.path = path
        self.architecture = model.metadata.get("general.architecture")
        self.file_type = model.metadata.get("general.file_type")
        self.exported = model.exported
        tokens = model._reader.fields.get("tokenizer.ggml.tokens")
        self.tokenizer = model.metadata.get("tokenizer.ggml.model")
        self.n_tokens = len(tokens.data) if tokens is not None else 0
        self.metadata = {k: v for k, v in model.metadata.items()
                         if k not in (CONFIG_KEY, FORMAT_KEY) and not (isinstance(v, str) and len(v) > 200)}
        self.tensors: List[Tuple[str, str, str, Tuple[int, ...], int]] = []
        for name, info in model.tensors.items():
            t = model._raw[name]
            self.tensors.append((info.gguf_name, name, info.type, tuple(int(d) for d in reversed(t.shape.tolist())),
                                 int(t.n_bytes)))
        self.total_bytes = sum(t[4] for t in self.tensors)
        self.types: Dict[str, int] = {}
        for t in self.tensors:
            self.types[t[2]] = self.types.get(t[2], 0) + 1
        self.n_params = sum(int(np.prod(t[3], dtype=np.int64)) for t in self.tensors)
        del gguf

    def as_dict(self) -> dict:
        """A JSON-ready document (the ``--json`` output)."""
        return {"path": self.path, "format": "gguf", "architecture": self.architecture,
                "file_type": self.file_type, "exported_by_fastensors": self.exported,
                "tokenizer": {"model": self.tokenizer, "tokens": self.n_tokens},
                "totals": {"tensors": len(self.tensors), "parameters": self.n_params, "bytes": self.total_bytes,
                           "types": dict(sorted(self.types.items()))},
                "tensors": [{"name": g, "source_name": n, "type": t, "shape": list(s), "bytes": b}
                            for g, n, t, s, b in self.tensors],
                "metadata": {k: v if isinstance(v, (str, int, float, bool)) else str(v)
                             for k, v in sorted(self.metadata.items())}}

    def table(self, max_rows: Optional[int] = None) -> str:
        """A plain-text table: totals, then one line per tensor."""
        lines = [f"{self.path}: GGUF, architecture {self.architecture}, file type {self.file_type}",
                 f"{len(self.tensors)} tensors, {self.n_params:,} parameters, {self.total_bytes:,} bytes of tensor data"
                 f" ({', '.join(f'{n} {t}' for t, n in sorted(self.types.items()))})",
                 f"tokenizer: {self.tokenizer or 'none'}, {self.n_tokens} tokens"]
        rows = self.tensors if max_rows is None else self.tensors[:max(max_rows, 0)]
        width = max((len(r[0]) for r in rows), default=4)
        lines.append(f"{'name':<{width}}  {'type':<5}  {'shape':<18}  bytes")
        for g, _n, t, s, b in rows:
            lines.append(f"{g:<{width}}  {t:<5}  {str(list(s)):<18}  {b:,}")
        if len(rows) < len(self.tensors):
            lines.append(f"... {len(self.tensors) - len(rows)} more")
        return "\n".join(lines)


def inspect_gguf(path: PathLike) -> GgufSummary:
    """The header-only summary of a GGUF file (``fastensors inspect``).
    Raises NotAQuantizedModel when the file is not GGUF fastensors reads."""
    p = os.fspath(path)
    return GgufSummary(p, GgufModel(p))


def looks_like_gguf(path: PathLike) -> bool:
    """Whether ``path`` is a local file that starts with GGUF's magic."""
    try:
        with open(os.fspath(path), "rb") as fh:
            return fh.read(4) == b"GGUF"
    except (OSError, TypeError, ValueError):
        return False
