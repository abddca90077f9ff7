"""``fastensors.summary`` and ``fastensors inspect``: what a checkpoint holds,
from its headers alone (no tensor data is read).

The JSON document (``Summary.as_dict``) is stable; docs/surgery.md gives its
schema, and ``SCHEMA`` names its version."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

SCHEMA = "fastensors.summary/1"

# Modality rules, tried in this order on the lower-cased hints (architectures,
# model_type, _class_name); the first that matches wins. Short names are
# matched only where they are not inside a longer word ("dit" is not in
# "conditional", "code" is not in "encoder").
MODALITY_RULES: List[Tuple[str, str]] = [
    ("audio", r"audio|wav|whisper|speech|hubert|encodec"),
    ("image", r"image|vision|vae|autoencoderkl|unet|(?<![a-z])(dit|vit)|(dit|vit)(?![a-z])"),
    ("code", r"(?<!en)(?<!de)code"),
    ("text", r"text|mdlm|sedd|causallm|maskedlm|seq2seqlm|conditionalgeneration|(?<![a-z])(llama|bert|gpt|t5)"),
]
_HINT_KEYS = ("architectures", "model_type", "_class_name")


@dataclass
class TensorRow:
    name: str
    dtype: str
    shape: Tuple[int, ...]
    nbytes: int
    parameters: int
    file: str


@dataclass
class Summary:
    """A checkpoint's tensors, totals, shards, metadata and modality."""

    path: str
    sharded: bool
    files: List[Dict[str, Any]]
    tensors: List[TensorRow]
    metadata: Dict[str, str]
    index_metadata: Optional[Dict[str, Any]]
    modality: str
    modality_source: str
    by_dtype: Dict[str, Dict[str, int]] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(t.parameters for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "schema": SCHEMA,
            "path": self.path,
            "sharded": self.sharded,
            "files": self.files,
            "totals": {"tensors": len(self.tensors), "parameters": self.parameters, "bytes": self.nbytes,
                       "by_dtype": self.by_dtype},
            "modality": {"value": self.modality, "source": self.modality_source},
            "metadata": self.metadata,
            "index_metadata": self.index_metadata,
            "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "bytes": t.nbytes,
                         "parameters": t.parameters, "file": t.file} for t in self.tensors],
        }

    def table(self, *, max_rows: Optional[int] = None) -> str:
        """A readable report: the tensors, then the totals."""
        from .._util.progress import format_bytes

        rows = self.tensors if max_rows is None else self.tensors[:max_rows]
        name_w = max([len("name")] + [len(t.name) for t in rows])
        shape_w = max([len("shape")] + [len(str(list(t.shape))) for t in rows])
        lines = [f"{'name':<{name_w}}  {'dtype':<11}  {'shape':<{shape_w}}  {'bytes':>12}"
                 + ("  file" if self.sharded else "")]
        for t in rows:
            lines.append(f"{t.name:<{name_w}}  {t.dtype:<11}  {str(list(t.shape)):<{shape_w}}  {t.nbytes:>12}"
                         + (f"  {t.file}" if self.sharded else ""))
        if len(rows) < len(self.tensors):
            lines.append(f"... {len(self.tensors) - len(rows)} more tensors")
        lines.append("")
        for dtype, d in sorted(self.by_dtype.items()):
            lines.append(f"{dtype:<11} {d['tensors']:>7} tensors {d['parameters']:>15,} parameters"
                         f" {format_bytes(d['bytes']):>12}")
        lines.append(f"total: {len(self.tensors)} tensors, {self.parameters:,} parameters,"
                     f" {format_bytes(self.nbytes)} in {len(self.files)} file(s)")
        lines.append(f"modality: {self.modality} ({self.modality_source})")
        if self.metadata:
            lines.append("metadata:")
            for k, v in sorted(self.metadata.items()):
                v = v if len(v) <= 100 else v[:97] + "..."
                lines.append(f"  {k}: {v}")
        return "\n".join(lines)


def _hints_from(doc: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    for key in _HINT_KEYS:
        value = doc.get(key)
        if isinstance(value, str):
            try:  # metadata holds lists as JSON text
                parsed = json.loads(value)
                value = parsed if isinstance(parsed, list) else value
            except ValueError:
                pass
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, str))
    return out


def classify(hints: Iterable[str]) -> Optional[str]:
    """The modality the first matching rule of ``MODALITY_RULES`` gives."""
    lowered = [h.lower() for h in hints]
    for modality, pattern in MODALITY_RULES:
        if any(re.search(pattern, h) for h in lowered):
            return modality
    return None


def detect_modality(metadata: Optional[Dict[str, str]], model_dir: Optional[str] = None) -> Tuple[str, str]:
    """``(modality, source)``: the ``modality`` metadata key; else the rules
    applied to the metadata's hints (``architectures``, ``model_type``,
    ``_class_name``, and those inside ``full_config``); else to config.json
    found in ``model_dir`` (the embed-config search order); else "unknown"."""
    from .metadata import find_config

    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of str to str or None, not {type(metadata).__name__}")
    metadata = metadata or {}
    if metadata.get("modality"):
        return metadata["modality"], "metadata:modality"
    hints = _hints_from(metadata)
    try:
        full = json.loads(metadata.get("full_config", "{}"))
        hints += _hints_from(full) if isinstance(full, dict) else []
    except ValueError:
        pass
    found = classify(hints)
    if found:
        return found, "metadata"
    if model_dir is not None:
        config_path = find_config(model_dir)
        if config_path is not None:
            try:
                with open(config_path, "rb") as f:
                    config = json.loads(f.read().decode("utf-8"))
            except (OSError, UnicodeDecodeError, ValueError):
                config = None
            if isinstance(config, dict):
                found = classify(_hints_from(config))
                if found:
                    return found, os.path.relpath(config_path, model_dir)
    return "unknown", "none"


def summary(path, **safe_open_kwargs) -> Summary:
    """What the checkpoint at ``path`` (a file, a model directory, an index
    JSON, a sharded directory, or any of these at a URL) holds; only headers
    are read (for a URL: the index and one range request per shard header,
    fetched concurrently). ``safe_open_kwargs`` (``storage_options``,
    ``remote``) go to each shard's ``safe_open``. A URL's config.json is not
    fetched: the modality then comes from the metadata alone."""
    from ..checkpoint import open_checkpoint

    with open_checkpoint(path, backend="pread", lazy=False, **safe_open_kwargs) as ckpt:
        rows = []
        by_dtype: Dict[str, Dict[str, int]] = {}
        per_file: Dict[str, Dict[str, int]] = {f: {"tensors": 0, "bytes": 0} for f in ckpt.files}
        for t in ckpt.tensors():
            n = int(np.prod(t.shape, dtype=np.int64)) if t.shape else 1
            nbytes = t.data_offsets[1] - t.data_offsets[0]
            rows.append(TensorRow(t.name, t.dtype, tuple(t.shape), nbytes, n, t.file))
            d = by_dtype.setdefault(t.dtype, {"tensors": 0, "parameters": 0, "bytes": 0})
            d["tensors"] += 1
            d["parameters"] += n
            d["bytes"] += nbytes
            per_file[t.file]["tensors"] += 1
            per_file[t.file]["bytes"] += nbytes
        files = [{"name": f, "tensors": v["tensors"], "tensor_bytes": v["bytes"],
                  "file_bytes": ckpt._shard(f)._file.file_size} for f, v in per_file.items()]
        meta = dict(ckpt.metadata() or {})
        modality, source = detect_modality(meta, None if ckpt._remote else ckpt.directory)
        return Summary(
            path=os.fspath(path), sharded=ckpt.is_sharded, files=files, tensors=rows, metadata=meta,
            index_metadata=dict(ckpt.index_metadata) if ckpt.is_sharded else None,
            modality=modality, modality_source=source, by_dtype=by_dtype,
        )


__all__ = ["summary", "Summary", "TensorRow", "detect_modality", "MODALITY_RULES", "SCHEMA"]
