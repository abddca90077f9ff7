"""PyTorch pickle checkpoints (``pytorch_model.bin``, sharded ``.bin`` with
``pytorch_model.bin.index.json``) to safetensors, without ever running pickle
code: files are read with ``torch.load(weights_only=True)`` only, and a file
that needs anything beyond tensors and plain containers is refused."""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import (
    CheckpointError,
    CheckpointNotFound,
    ConversionMismatch,
    InvalidArgument,
    UnsafePickle,
    with_context,
)
from ..checkpoint.commit import FileSet, naming, stale_pattern
from ..format.writer import resolve_durable, write_specs
from ..checkpoint import read_index
from ..checkpoint.sharding import SAFETENSORS_PATTERN, companion_files, hub_index_dumps

WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


def load_pickle_state_dict(path) -> Dict[str, "torch.Tensor"]:
    """A state dict from a PyTorch pickle file, read with torch's restricted
    (weights-only) unpickler. Refuses, with ``UnsafePickle``, any file that
    would need other code to load; there is no fallback."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointNotFound(f"no such file: {path!r}")
    # mmap avoids a copy of every tensor, but only the zip format supports it.
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise with_context(
            UnsafePickle,
            f"refusing to load {path!r}: it needs more than tensors to unpickle, which could run arbitrary code"
            f" (torch's weights-only unpickler said: {first}). fastensors never unpickles such files.",
            path=path,
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, not a state dict of tensors")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path!r} is not a flat state dict: entry {name!r} is a {type(value).__name__}, not a tensor"
            )
    return obj


def locate_pickle(path) -> Tuple[str, str]:
    """``("index", path)`` or ``("file", path)`` for a pickle checkpoint: a
    ``.bin`` file, an index, or a directory (``pytorch_model.bin`` first, then
    its index, as transformers looks for them)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return ("index" if path.endswith(".json") else "file"), path
    if not os.path.isdir(path):
        raise CheckpointNotFound(f"no checkpoint at {path!r}")
    for name, kind in ((WEIGHTS_NAME, "file"), (WEIGHTS_INDEX_NAME, "index")):
        if os.path.isfile(os.path.join(path, name)):
            return kind, os.path.join(path, name)
    names = sorted(n for n in os.listdir(path) if not n.startswith("."))
    for suffix, kind in ((".bin.index.json", "index"), (".bin", "file")):
        found = [n for n in names if n.endswith(suffix)]
        if len(found) == 1:
            return kind, os.path.join(path, found[0])
        if len(found) > 1:
            raise CheckpointError(f"{path!r} holds several {suffix} files: {found}; name the one to convert")
    raise CheckpointNotFound(f"no PyTorch pickle checkpoint in {path!r}")


def safetensors_name(bin_name: str) -> str:
    """``pytorch_model-00001-of-00002.bin`` -> ``model-00001-of-00002.safetensors``."""
    stem = bin_name[: -len(".bin")] if bin_name.endswith(".bin") else os.path.splitext(bin_name)[0]
    if stem.startswith("pytorch_model"):
        stem = "model" + stem[len("pytorch_model"):]
    return stem + ".safetensors"


def _bytes_of(t: "torch.Tensor") -> np.ndarray:
    t = t.contiguous()
    if t.numel() == 0:
        return np.empty(0, np.uint8)
    return t.reshape(-1).view(torch.uint8).numpy()


def _prepare(sd: Dict[str, "torch.Tensor"]) -> Tuple[Dict[str, "torch.Tensor"], Dict[str, str]]:
    """Shared tensors stored once (the dropped name -> the kept name), the
    rest made contiguous."""
    from ..format.torch_specs import remove_duplicate_names

    sd = dict(sd)
    dropped: Dict[str, str] = {}
    for kept, names in remove_duplicate_names(sd).items():
        for name in names:
            dropped[name] = kept
            del sd[name]
    return {k: v.contiguous() for k, v in sd.items()}, dropped


def _write_and_verify(sd: Dict[str, "torch.Tensor"], path: str, metadata: Dict[str, str], durable: bool,
                      verify: bool) -> int:
    """Write one safetensors file and read every tensor back to compare its
    dtype, shape and bytes with the source. Returns the bytes of tensor data."""
    from ..format.reader import safe_open
    from ..format.torch_specs import torch_specs

    keep_alive: list = []
    specs = torch_specs(sd, keep_alive)
    write_specs(specs, path, metadata, durable)
    if verify:
        with safe_open(path, framework="np") as f:
            if set(f.keys()) != set(sd):
                raise ConversionMismatch(f"{path!r} does not hold exactly the converted tensors")
            for (name, code, shape, _, _) in specs:
                _, dtype, got_shape, begin, end = f._file.info(name)
                if dtype != code or list(got_shape) != list(shape):
                    raise ConversionMismatch(f"tensor {name!r} in {path!r}: {dtype}{got_shape} written,"
                                             f" {code}{shape} expected")
                written = f._file.view(name) if end > begin else np.empty(0, np.uint8)
                if not np.array_equal(written, _bytes_of(sd[name])):
                    raise ConversionMismatch(f"tensor {name!r} in {path!r} reads back different from the source")
    return sum(s[4] for s in specs)


def convert_pytorch_to_safetensors(src, dst, *, durable: Optional[bool] = None, verify: bool = True) -> List[str]:
    """Convert a PyTorch pickle checkpoint to safetensors.

    ``src``: a ``.bin`` file, a ``pytorch_model.bin.index.json`` or a model
    directory. ``dst``: a ``.safetensors`` file path (for a single ``.bin``),
    or a directory that receives ``model.safetensors`` or the shards
    (``pytorch_model-0000i-of-0000N.bin`` becomes
    ``model-0000i-of-0000N.safetensors``) and a rewritten
    ``model.safetensors.index.json``, plus the other files of a source
    directory (config.json, tokenizer files, ...).

    Shared tensors are stored once (each dropped name recorded in the
    metadata, mapped to the name kept), tensors are made contiguous, every
    file carries ``{"format": "pt"}`` and every tensor is read back and
    compared before the set is committed. Returns the paths written."""
    dur = resolve_durable(durable)
    kind, src_path = locate_pickle(src)
    dst = os.fspath(dst)
    src_dir = os.path.dirname(os.path.abspath(src_path))
    if kind == "file" and dst.endswith(".safetensors"):
        sd, dropped = _prepare(load_pickle_state_dict(src_path))
        # Staged beside the target and verified there: a mismatch leaves the previous file in place.
        directory, name = os.path.split(os.path.abspath(dst))
        with FileSet(directory, durable=dur, stage_inside=True) as fs:
            _write_and_verify(sd, fs.add_weight(name), {"format": "pt", **dropped}, dur, verify)
            fs.commit()
        return [dst]
    if os.path.exists(dst) and not os.path.isdir(dst):
        raise InvalidArgument(f"{dst!r} is a file; give a directory, or a .safetensors path for a single .bin")

    companions = {}
    if (kind == "index" or os.path.isdir(src)) and src_dir != os.path.abspath(dst):
        companions = companion_files(src_dir, [])
    with FileSet(dst, durable=dur) as fs:
        fs.stale = [stale_pattern(SAFETENSORS_PATTERN)]
        if kind == "file":
            sd, dropped = _prepare(load_pickle_state_dict(src_path))
            _write_and_verify(sd, fs.add_weight("model.safetensors"), {"format": "pt", **dropped}, dur, verify)
            fs.shadows = ["model.safetensors.index.json"]
        else:
            weight_map, index_meta = read_index(src_path, extension=".bin")
            by_file: Dict[str, List[str]] = {}
            for name, fname in weight_map.items():
                by_file.setdefault(fname, []).append(name)
            new_map: Dict[str, str] = {}
            all_dropped: Dict[str, str] = {}
            total = 0
            for fname, listed in by_file.items():
                shard_path = os.path.join(src_dir, fname)
                if not os.path.isfile(shard_path):
                    raise CheckpointNotFound(f"shard {fname!r} listed in {src_path!r} does not exist")
                sd = load_pickle_state_dict(shard_path)
                missing = [n for n in listed if n not in sd]
                if missing:
                    raise CheckpointError(f"index {src_path!r} lists tensor {missing[0]!r} in {fname!r},"
                                          " which does not hold it")
                extra = [n for n in sd if weight_map.get(n) != fname]
                if extra:
                    raise CheckpointError(f"{fname!r} holds tensor {extra[0]!r}, which index {src_path!r}"
                                          " does not list for it")
                sd, dropped = _prepare(sd)
                out_name = safetensors_name(os.path.basename(fname))
                if out_name in fs.weights:
                    raise CheckpointError(f"two shards of {src_path!r} would both become {out_name!r}")
                total += _write_and_verify(sd, fs.add_weight(out_name), {"format": "pt", **dropped}, dur, verify)
                for name in listed:
                    if name in sd:
                        new_map[name] = out_name
                all_dropped.update(dropped)
                del sd
            meta = {k: v for k, v in index_meta.items() if k != "total_size"}
            head = {"total_parameters": meta.pop("total_parameters")} if "total_parameters" in meta else {}
            fs.set_index("model.safetensors.index.json",
                         {"metadata": {**head, "total_size": total, **meta, **all_dropped}, "weight_map": new_map},
                         hub_index_dumps)
            fs.shadows = ["model.safetensors"]
        for name, write in companions.items():
            path = fs.add_companion(name)
            with naming("write", path):
                write(path)
        written = [os.path.join(os.path.abspath(dst), n) for n in fs.weights]
        if fs.index_name:
            written.append(os.path.join(os.path.abspath(dst), fs.index_name))
        fs.commit()
    return written


__all__ = ["convert_pytorch_to_safetensors", "load_pickle_state_dict", "safetensors_name"]
