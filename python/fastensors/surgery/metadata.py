"""Metadata tools: show, set, delete, embed a config.json, validate, diff.

safetensors metadata maps strings to strings; values that are not strings
are stored as their JSON text. Edits rewrite the header in front of the
unchanged data section (``_rewrite``): atomic, safe for files larger than
memory, applied to every shard of a sharded checkpoint as one set."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ..errors import InvalidArgument, MetadataKeyNotFound, SafetensorError
from .rewrite import Header, rewrite_checkpoint

# Searched in this order by embed_config (diffusers pipelines keep the
# transformer's config in a subdirectory).
CONFIG_LOCATIONS = ("transformer/config.json", "config.json", "transformer.config.json")
# Copied from config.json into the metadata by embed_config, when present.
CONFIG_KEYS = ("model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "max_position_embeddings", "torch_dtype")
# Index metadata the sharding writer computes; edits leave it alone.
_INDEX_OWNED = ("total_size", "total_parameters")


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def show(path) -> Dict[str, str]:
    """The checkpoint's metadata (for shards, the first shard's updated with
    the index's, as ``Checkpoint.metadata``); ``{}`` when there is none."""
    from ..checkpoint import open_checkpoint

    with open_checkpoint(path, backend="pread") as ckpt:
        return dict(ckpt.metadata() or {})


def _edit(path, update: Mapping[str, str], remove: Sequence[str], *, backup: bool, durable: Optional[bool]
          ) -> List[str]:
    def edit(_name: str, header: Header) -> Header:
        meta = dict(header.metadata or {})
        for k in remove:
            meta.pop(k, None)
        meta.update(update)
        present = header.metadata is not None or bool(meta)
        return Header(meta if present else None, header.tensors, header.data_start, header.data_size)

    def index_edit(index: dict) -> dict:
        meta = index.get("metadata")
        if isinstance(meta, dict):
            for k in remove:
                meta.pop(k, None)
            for k, v in update.items():
                if k in meta:  # the index's value would win over the shards'
                    meta[k] = v
        return index

    return rewrite_checkpoint(path, edit, index_edit=index_edit, backup=backup, durable=durable)


def _check_keys(path, keys: Iterable[str]) -> None:
    from ..checkpoint import locate

    kind, _ = locate(path)
    for k in keys:
        if not isinstance(k, str) or not k:
            raise InvalidArgument(f"metadata keys must be non-empty strings, not {k!r}")
        if kind == "index" and k in _INDEX_OWNED:
            raise InvalidArgument(f"{k!r} of a sharded checkpoint is computed by the writer and kept in the index;"
                                  " it cannot be edited")


def set(path, items: Mapping[str, Any], *, backup: bool = False, durable: Optional[bool] = None) -> Dict[str, str]:
    """Set metadata keys (non-string values stored as JSON text) in the file
    or every shard; returns the metadata after the edit."""
    values = {k: _as_text(v) for k, v in dict(items).items()}
    _check_keys(path, values)
    _edit(path, values, (), backup=backup, durable=durable)
    return show(path)


def delete(path, keys: Iterable[str], *, missing_ok: bool = False, backup: bool = False,
           durable: Optional[bool] = None) -> Dict[str, str]:
    """Remove metadata keys from the file or every shard (and the index);
    a key that is not there raises ``MetadataKeyNotFound`` unless
    ``missing_ok``. Returns the metadata after the edit."""
    keys = list(keys)
    _check_keys(path, keys)
    current = show(path)
    absent = [k for k in keys if k not in current]
    if absent and not missing_ok:
        err = MetadataKeyNotFound(f"no metadata key {', '.join(repr(k) for k in absent)} in {os.fspath(path)!r}")
        err.path = os.fspath(path)
        raise err
    _edit(path, {}, keys, backup=backup, durable=durable)
    return show(path)


def find_config(model_dir) -> Optional[str]:
    """The first of ``CONFIG_LOCATIONS`` that exists under ``model_dir``."""
    for rel in CONFIG_LOCATIONS:
        candidate = os.path.join(os.fspath(model_dir), rel)
        if os.path.isfile(candidate):
            return candidate
    return None


def config_metadata(config: Mapping[str, Any], source: str) -> Dict[str, str]:
    """The metadata ``embed_config`` writes for ``config``."""
    out = {k: _as_text(config[k]) for k in CONFIG_KEYS if k in config}
    out["full_config"] = json.dumps(config, ensure_ascii=False, sort_keys=True)
    out["metadata_source"] = source
    return out


# A pipeline config is a few kilobytes; anything this large is not one.
_MAX_PIPELINE_YAML = 1 << 20


def model_dir_from_yaml(config_yaml, model_path=None) -> str:
    """The model directory that a diffusion pipeline config names (a
    deepcompressor-style YAML such as ``flux.1-dev.yaml``): its
    ``pipeline.path``; without that key ``model_path``; then a directory
    named after ``pipeline.name`` (the model name), looked for in the
    current directory and beside the YAML file. Relative paths in the YAML
    are taken from the YAML file's directory.

    Raises ``InvalidArgument`` when PyYAML is missing, the file is not a YAML
    mapping with a ``pipeline`` mapping, neither key nor ``model_path``
    gives a directory, or the directory named does not exist."""
    try:
        import yaml
    except ImportError:
        raise InvalidArgument("reading a pipeline config needs PyYAML: pip install 'fastensors[yaml]'") from None
    config_yaml = os.fspath(config_yaml)
    try:
        with open(config_yaml, "rb") as f:
            text = f.read(_MAX_PIPELINE_YAML + 1)
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"cannot read pipeline config {config_yaml!r}: {getattr(e, 'strerror', None) or e}"
                              ) from None
    if len(text) > _MAX_PIPELINE_YAML:
        raise InvalidArgument(f"{config_yaml!r} is over {_MAX_PIPELINE_YAML} bytes: not a pipeline config")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InvalidArgument(f"{config_yaml!r} is not valid YAML: {e}") from None
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise InvalidArgument(f"{config_yaml!r} nests too deeply to be a pipeline config") from None
    pipeline = doc.get("pipeline") if isinstance(doc, dict) else None
    if not isinstance(pipeline, dict):
        raise InvalidArgument(f"{config_yaml!r} has no 'pipeline' mapping (expected pipeline.path or pipeline.name)")
    here = os.path.dirname(os.path.abspath(config_yaml))

    def existing(where: str, what: str) -> str:
        if not os.path.isdir(where):
            raise InvalidArgument(f"{what} {where!r} (from {config_yaml!r}) is not a directory")
        return where

    path = pipeline.get("path")
    if path is not None:
        if not isinstance(path, str) or not path:
            raise InvalidArgument(f"{config_yaml!r}: pipeline.path must be a non-empty string, not {path!r}")
        return existing(os.path.join(here, os.path.expanduser(path)), "pipeline.path")
    if model_path is not None:
        return existing(os.fspath(model_path), "--model-path")
    name = pipeline.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{config_yaml!r} has no pipeline.path and no pipeline.name, and no model path was"
                              " given")
    for candidate in (os.path.abspath(name), os.path.join(here, name)):
        if os.path.isdir(candidate):
            return candidate
    raise InvalidArgument(f"{config_yaml!r} has no pipeline.path, and no directory named after its pipeline.name"
                          f" {name!r} exists here or beside the YAML; pass a model path")


def embed_config(path, model_dir=None, *, config_yaml=None, backup: bool = False, durable: Optional[bool] = None
                 ) -> Optional[Dict[str, str]]:
    """Copy config.json (searched in ``CONFIG_LOCATIONS`` under ``model_dir``,
    by default the checkpoint's directory) into the metadata: the keys of
    ``CONFIG_KEYS`` present, the whole config as ``full_config`` and its
    location as ``metadata_source``. Without a config.json, warns and returns
    None (nothing is written).

    ``config_yaml``: a diffusion pipeline config whose ``pipeline.path``
    names the model directory (``model_dir_from_yaml``; ``model_dir`` is then
    its fallback)."""
    from ..checkpoint import locate

    if config_yaml is not None:
        model_dir = model_dir_from_yaml(config_yaml, model_dir)
    if model_dir is None:
        _, where = locate(path)
        model_dir = os.path.dirname(os.path.abspath(where))
    found = find_config(model_dir)
    if found is None:
        warnings.warn(f"no config.json in {os.fspath(model_dir)!r} (looked for {', '.join(CONFIG_LOCATIONS)});"
                      " metadata left unchanged", stacklevel=2)
        return None
    try:
        with open(found, "rb") as f:
            config = json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgument(f"{found!r} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise InvalidArgument(f"{found!r} does not hold a JSON object")
    values = config_metadata(config, os.path.relpath(found, os.fspath(model_dir)))
    _edit(path, values, (), backup=backup, durable=durable)
    return values


@dataclass
class ValidationReport:
    """``ok`` when no problem was found; ``problems`` says what failed."""

    path: str
    ok: bool
    problems: List[str] = field(default_factory=list)
    metadata: Dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok


def validate(path, require: Iterable[str] = ()) -> ValidationReport:
    """Check the checkpoint: every header is valid (which includes metadata
    values being strings), the ``require``d keys are present and
    ``full_config``, when present, is a JSON object."""
    from ..checkpoint import open_checkpoint

    problems: List[str] = []
    meta: Dict[str, str] = {}
    try:
        with open_checkpoint(path, backend="pread", lazy=False) as ckpt:
            meta = dict(ckpt.metadata() or {})
    except (SafetensorError, OSError) as e:
        problems.append(f"invalid checkpoint: {e}")
        return ValidationReport(os.fspath(path), False, problems)
    for k in require:
        if k not in meta:
            problems.append(f"required metadata key {k!r} is missing")
    if "full_config" in meta:
        try:
            if not isinstance(json.loads(meta["full_config"]), dict):
                problems.append("full_config is JSON but not an object")
        except ValueError as e:
            problems.append(f"full_config is not valid JSON: {e}")
    return ValidationReport(os.fspath(path), not problems, problems, meta)


@dataclass
class CheckpointDiff:
    """What differs from checkpoint A to checkpoint B."""

    metadata_added: Dict[str, str] = field(default_factory=dict)
    metadata_removed: Dict[str, str] = field(default_factory=dict)
    metadata_changed: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    tensors_added: Dict[str, Tuple[str, Tuple[int, ...]]] = field(default_factory=dict)
    tensors_removed: Dict[str, Tuple[str, Tuple[int, ...]]] = field(default_factory=dict)
    dtype_changed: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    shape_changed: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return not any((self.metadata_added, self.metadata_removed, self.metadata_changed, self.tensors_added,
                        self.tensors_removed, self.dtype_changed, self.shape_changed))

    def lines(self, width: Optional[int] = 120) -> List[str]:
        """One line per difference (values cut to ``width`` characters)."""
        def cut(v: str) -> str:
            return v if width is None or len(v) <= width else v[: width - 3] + "..."

        def t(info) -> str:
            return f"{info[0]} {list(info[1])}"

        out = [f"+ metadata {k} = {cut(v)!s}" for k, v in sorted(self.metadata_added.items())]
        out += [f"- metadata {k} = {cut(v)!s}" for k, v in sorted(self.metadata_removed.items())]
        out += [f"~ metadata {k}: {cut(a)} -> {cut(b)}" for k, (a, b) in sorted(self.metadata_changed.items())]
        out += [f"+ tensor {k} {t(v)}" for k, v in sorted(self.tensors_added.items())]
        out += [f"- tensor {k} {t(v)}" for k, v in sorted(self.tensors_removed.items())]
        out += [f"~ dtype {k}: {a} -> {b}" for k, (a, b) in sorted(self.dtype_changed.items())]
        out += [f"~ shape {k}: {list(a)} -> {list(b)}" for k, (a, b) in sorted(self.shape_changed.items())]
        return out

    def as_dict(self) -> Dict[str, Any]:
        return {
            "same": self.same,
            "metadata": {"added": self.metadata_added, "removed": self.metadata_removed,
                         "changed": {k: {"a": a, "b": b} for k, (a, b) in self.metadata_changed.items()}},
            "tensors": {
                "added": {k: {"dtype": d, "shape": list(s)} for k, (d, s) in self.tensors_added.items()},
                "removed": {k: {"dtype": d, "shape": list(s)} for k, (d, s) in self.tensors_removed.items()},
                "dtype_changed": {k: {"a": a, "b": b} for k, (a, b) in self.dtype_changed.items()},
                "shape_changed": {k: {"a": list(a), "b": list(b)} for k, (a, b) in self.shape_changed.items()},
            },
        }


def _tensor_table(path) -> Tuple[Dict[str, str], Dict[str, Tuple[str, Tuple[int, ...]]]]:
    from ..checkpoint import open_checkpoint

    with open_checkpoint(path, backend="pread") as ckpt:
        return dict(ckpt.metadata() or {}), {t.name: (t.dtype, tuple(t.shape)) for t in ckpt.tensors()}


def diff(a, b) -> CheckpointDiff:
    """Metadata keys added, removed or changed and tensors added, removed or
    with another dtype or shape, from ``a`` to ``b`` (headers only)."""
    meta_a, tens_a = _tensor_table(a)
    meta_b, tens_b = _tensor_table(b)
    out = CheckpointDiff()
    for k in meta_b.keys() - meta_a.keys():
        out.metadata_added[k] = meta_b[k]
    for k in meta_a.keys() - meta_b.keys():
        out.metadata_removed[k] = meta_a[k]
    for k in meta_a.keys() & meta_b.keys():
        if meta_a[k] != meta_b[k]:
            out.metadata_changed[k] = (meta_a[k], meta_b[k])
    for k in tens_b.keys() - tens_a.keys():
        out.tensors_added[k] = tens_b[k]
    for k in tens_a.keys() - tens_b.keys():
        out.tensors_removed[k] = tens_a[k]
    for k in tens_a.keys() & tens_b.keys():
        (da, sa), (db, sb) = tens_a[k], tens_b[k]
        if da != db:
            out.dtype_changed[k] = (da, db)
        if sa != sb:
            out.shape_changed[k] = (sa, sb)
    return out


__all__ = ["show", "set", "delete", "embed_config", "model_dir_from_yaml", "validate", "diff", "find_config",
           "config_metadata", "ValidationReport", "CheckpointDiff", "CONFIG_LOCATIONS", "CONFIG_KEYS"]
