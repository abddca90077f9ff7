"""Hugging Face conventions for torch models: ``save_pretrained`` /
``load_pretrained`` and a mixin giving any ``nn.Module`` with a ``config``
the ``save_pretrained`` / ``from_pretrained`` pair.

A saved directory holds ``config.json`` and either safetensors weights
(``model.safetensors``, or shards with ``model.safetensors.index.json``) or,
with ``safe_serialization=False``, pickle weights (``pytorch_model.bin``, or
shards with ``pytorch_model.bin.index.json``) written as transformers wrote
them. Files, config included, are committed as one set (docs/sharding.md).

torch is imported inside the functions (this module is re-exported by
``fastensors.torch``)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, List, Mapping, Optional, Tuple

from ..errors import CheckpointError, CheckpointNotFound, InvalidArgument
from ..format.writer import resolve_durable
from ..checkpoint import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, open_checkpoint, read_index
from ..checkpoint.sharding import (
    MAX_SHARD_SIZE,
    PICKLE_PATTERN,
    SAFETENSORS_PATTERN,
    Entry,
    plan_shards,
    prepare_torch,
    write_planned,
)

CONFIG_NAME = "config.json"
GENERATION_CONFIG_NAME = "generation_config.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


# -- config -------------------------------------------------------------------------

def config_to_json(config) -> str:
    """config.json text for ``config``: its ``to_json_string()`` (a
    transformers config), else ``to_dict()``, a dataclass or a mapping
    dumped as transformers does (indent 2, sorted keys, final newline)."""
    if hasattr(config, "to_json_string"):
        return config.to_json_string()
    if hasattr(config, "to_dict"):
        data = config.to_dict()
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        data = dataclasses.asdict(config)
    elif isinstance(config, Mapping):
        data = dict(config)
    else:
        raise InvalidArgument(f"cannot write a config of type {type(config).__name__}: give an object with"
                              " to_json_string()/to_dict(), a dataclass or a dict")
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def config_from_json(config_class, directory) -> object:
    """Rebuild a config from ``directory/config.json`` through
    ``config_class`` (``from_dict`` if it has one, a dataclass, or any
    callable taking the keys as arguments); a plain dict without a class."""
    path = os.path.join(os.fspath(directory), CONFIG_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CheckpointNotFound(f"no {CONFIG_NAME} in {os.fspath(directory)!r}") from None
    if config_class is None:
        return data
    if hasattr(config_class, "from_dict"):
        return config_class.from_dict(data)
    if dataclasses.is_dataclass(config_class):
        fields = {f.name for f in dataclasses.fields(config_class) if f.init}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise InvalidArgument(f"{path!r} has keys {unknown} that {config_class.__name__} does not take")
        return config_class(**data)
    return config_class(**data)


# -- tied weights --------------------------------------------------------------------

def tied_weight_names(model, names) -> List[str]:
    """Names in ``names`` that the model declares as tied copies
    (``_tied_weights_keys`` of any submodule: a dict of target -> source as
    in transformers 5, or a list of patterns as in transformers 4)."""
    patterns = []
    for prefix, module in model.named_modules():
        tied = getattr(module, "_tied_weights_keys", None) or ()
        keys = tied.keys() if isinstance(tied, Mapping) else tied
        for k in keys:
            patterns.append(f"{prefix}.{k}" if prefix else k)
    return [n for n in names if any(re.search(p, n) for p in patterns)]


def _num_parameters(model) -> int:
    if callable(getattr(model, "num_parameters", None)):
        return int(model.num_parameters())
    return sum(p.numel() for p in model.parameters())


def _state_dict_to_save(model) -> Dict[str, object]:
    sd = model.state_dict()
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        sd.pop(key, None)
    return sd


# -- saving ------------------------------------------------------------------------

def _companions(model) -> Dict[str, object]:
    """config.json (and generation_config.json for a transformers model that
    generates), as transformers writes them."""
    out: Dict[str, object] = {}
    config = getattr(model, "config", None)
    if config is not None:
        if hasattr(config, "to_json_string") and hasattr(config, "architectures"):
            # transformers records these in the config on every save
            config.architectures = [type(model).__name__]
            if hasattr(config, "dtype") and getattr(model, "dtype", None) is not None:
                config.dtype = str(model.dtype).split(".")[-1]
        text = config_to_json(config)

        def write_config(path: str) -> None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)

        out[CONFIG_NAME] = write_config
    can_generate = getattr(model, "can_generate", None)
    generation = getattr(model, "generation_config", None)
    if callable(can_generate) and generation is not None and hasattr(generation, "to_json_file") and can_generate():
        out[GENERATION_CONFIG_NAME] = generation.to_json_file
    return out


def transformers_index_dumps(index: dict) -> str:
    """The index text transformers writes (sorted keys, final newline)."""
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def key_error(model, missing, unexpected) -> RuntimeError:
    """The error torch's strict load_state_dict raises, for the names given."""
    msg = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
    if missing:
        msg += "\n    Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(missing))
    if unexpected:
        msg += "\n    Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(unexpected))
    return RuntimeError(msg)


def save_pretrained(
    model,
    directory,
    *,
    max_shard_size=MAX_SHARD_SIZE,
    safe_serialization: bool = True,
    metadata: Optional[Dict[str, str]] = None,
    durable: Optional[bool] = None,
) -> None:
    """Save ``model``'s weights and ``model.config`` (if any) as config.json
    into ``directory``, replacing a previous save atomically.

    The files are those ``transformers``' ``save_pretrained`` writes:
    shards split like ``save_sharded``, tied weights stored once (the
    model's ``_tied_weights_keys`` choose the name dropped),
    ``{"format": "pt"}`` plus ``metadata`` in every shard, and an index with
    ``total_parameters`` and ``total_size``. ``safe_serialization=False``
    writes ``pytorch_model.bin`` shards with ``torch.save`` and a
    ``pytorch_model.bin.index.json`` the way transformers did, and removes
    safetensors weights of an earlier save, which loaders would prefer."""
    import torch

    dur = resolve_durable(durable)
    companions = _companions(model)
    sd = _state_dict_to_save(model)
    total_parameters = _num_parameters(model)
    if safe_serialization:
        prep = prepare_torch(sd, None, force_contiguous=True, discard_names=tied_weight_names(model, sd))
        plan = plan_shards(prep.entries, max_shard_size, SAFETENSORS_PATTERN)
        write_planned(directory, plan, prep.write_shard,
                      filename_pattern=SAFETENSORS_PATTERN, metadata=None, total_parameters=total_parameters,
                      durable=dur, file_metadata={**(metadata or {}), "format": "pt"}, companions=companions,
                      index_dumps=transformers_index_dumps)
        return
    if metadata:
        raise InvalidArgument("metadata is stored in safetensors files only; pickle weights have no place for it")
    from ..format.torch_specs import storage_ptr, storage_size

    entries = []
    for name, t in sd.items():
        size = storage_size(t)
        entries.append(Entry(name, size, None if t.device.type == "meta" else (t.device, storage_ptr(t), size)))
    plan = plan_shards(entries, max_shard_size, PICKLE_PATTERN)

    def write_shard(path: str, names: List[str], _meta) -> None:
        torch.save({n: sd[n].contiguous() for n in names}, path)  # write_planned syncs

    write_planned(directory, plan, write_shard, filename_pattern=PICKLE_PATTERN, metadata=None,
                  total_parameters=total_parameters, durable=dur, file_metadata={}, companions=companions,
                  extra_shadows=[SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME], extra_stale=[SAFETENSORS_PATTERN],
                  index_dumps=transformers_index_dumps)


# -- loading -----------------------------------------------------------------------

def find_weights(directory) -> Tuple[str, str]:
    """``(format, path)`` of the weights in a model directory, looked for in
    the order transformers uses: model.safetensors, its index,
    pytorch_model.bin, its index. ``format`` is "safetensors" or "pickle"."""
    directory = os.fspath(directory)
    if os.path.isfile(directory):
        is_pickle = directory.endswith((".bin", ".bin.index.json", ".pt", ".pth"))
        return ("pickle" if is_pickle else "safetensors"), directory
    for name, fmt in ((SAFE_WEIGHTS_NAME, "safetensors"), (SAFE_WEIGHTS_INDEX_NAME, "safetensors"),
                      (WEIGHTS_NAME, "pickle"), (WEIGHTS_INDEX_NAME, "pickle")):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return fmt, path
    raise CheckpointNotFound(f"no {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}, {WEIGHTS_NAME} or"
                             f" {WEIGHTS_INDEX_NAME} in {directory!r}")


def _pickle_shards(path: str) -> Tuple[List[str], Dict[str, List[str]]]:
    """Files of a pickle checkpoint and the names the index lists in each."""
    if not path.endswith(".json"):
        return [path], {}
    weight_map, _ = read_index(path, extension=".bin")
    base = os.path.dirname(path)
    by_file: Dict[str, List[str]] = {}
    for name, fname in weight_map.items():
        by_file.setdefault(os.path.join(base, fname), []).append(name)
    return list(by_file), by_file


def load_pretrained(model, directory, *, strict: bool = True, dtype=None, remap=None, include=None, exclude=None,
                    prefix=None) -> Tuple[List[str], List[str]]:
    """Load the weights saved in ``directory`` (see ``find_weights``) into
    ``model``, shard by shard. Tensors tied in the model and stored once in
    the file are reconciled. ``dtype`` casts the model's floating-point
    parameters and buffers and the loaded floating-point tensors to it.
    With ``strict``, key mismatches raise before anything is loaded.
    ``include``/``exclude``/``prefix``/``remap`` choose and rename the
    checkpoint's tensors first (``fastensors.remap.KeySelection``).
    Returns ``(missing, unexpected)`` key lists."""
    from ..remap import KeySelection
    from ..format.torch_specs import remove_duplicate_names

    selecting = KeySelection.wanted(remap, include, exclude, prefix)

    def select(names):
        return KeySelection(names, remap=remap, include=include, exclude=exclude, prefix=prefix)

    fmt, path = find_weights(directory)
    if dtype is not None:
        model.to(dtype)
    model_sd = model.state_dict()
    model_keys = set(model_sd)

    def cast(t):
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    def reconcile(loaded_names) -> Tuple[List[str], List[str]]:
        loaded = set(loaded_names)
        missing = model_keys - loaded
        unexpected = loaded - model_keys
        for kept, dropped in remove_duplicate_names(model_sd, preferred_names=list(loaded)).items():
            if kept in loaded:
                missing.difference_update(dropped)
        return sorted(missing), sorted(unexpected)

    if fmt == "safetensors":
        with open_checkpoint(path, framework="pt", remap=remap, include=include, exclude=exclude,
                             prefix=prefix) as ckpt:
            missing, unexpected = reconcile(ckpt.keys())
            if strict and (missing or unexpected):
                raise key_error(model, missing, unexpected)
            for fname in ckpt.files:
                names = ckpt.tensors_in_file(fname)
                ckpt.prefetch(names)  # read ahead of the loop, every request in flight
                shard = {n: cast(ckpt.get_tensor(n)) for n in names}
                model.load_state_dict(shard, strict=False)
                del shard
        return missing, unexpected

    from .convert_bin import load_pickle_state_dict

    files, listed = _pickle_shards(path)
    selection = select([n for names in listed.values() for n in names]) if selecting and listed else None
    if listed:  # the index says which keys there are: check before loading
        all_names = [n for names in listed.values() for n in names]
        missing, unexpected = reconcile(list(selection.to_stored) if selection else all_names)
        if strict and (missing or unexpected):
            raise key_error(model, missing, unexpected)
    names: List[str] = []
    for fpath in files:
        shard = load_pickle_state_dict(fpath)
        if listed and sorted(shard) != sorted(listed[fpath]):
            raise CheckpointError(f"{fpath!r} does not hold exactly the tensors its index lists")
        if selecting:
            chosen = selection if selection is not None else select(list(shard))
            shard = {new: shard[old] for new, old in chosen.to_stored.items() if old in shard}
        names.extend(shard)
        if not listed:
            missing, unexpected = reconcile(names)
            if strict and (missing or unexpected):
                raise key_error(model, missing, unexpected)
        model.load_state_dict({k: cast(v) for k, v in shard.items()}, strict=False)
        del shard
    return reconcile(names)


# -- the mixin -----------------------------------------------------------------------

class PretrainedMixin:
    """For ``nn.Module`` subclasses whose constructor takes a config as first
    argument and that keep it as ``self.config``. ``config_class`` (a class
    attribute) rebuilds the config from config.json; without one the config
    is the plain dict."""

    config_class = None

    def save_pretrained(self, directory, **kwargs) -> None:
        """See ``fastensors.torch.save_pretrained``."""
        save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(cls, directory, *model_args, strict: bool = True, dtype=None, config=None, **model_kwargs):
        """Build the model from ``directory/config.json`` (or ``config``),
        load its weights and return it in eval mode."""
        if config is None:
            config = config_from_json(cls.config_class, directory)
        model = cls(config, *model_args, **model_kwargs)
        load_pretrained(model, directory, strict=strict, dtype=dtype)
        model.eval()
        return model


__all__ = ["save_pretrained", "load_pretrained", "PretrainedMixin", "find_weights", "config_to_json",
           "config_from_json"]
