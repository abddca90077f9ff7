"""torch adapter: the reference ``safetensors.torch`` verbs and helpers.

Tensors are built only from Python-level torch APIs (``torch.from_numpy``,
``Tensor.view(dtype)``, ``reshape``), never from torch's C internals, so
torch-compatible libraries that stand in for ``torch`` work too."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Optional, Set, Tuple, Union

import numpy as np
import torch

from . import _core
from ._dtypes import code_from_spec_name
from ._errors import InvalidArgument
from ._frameworks import get_framework
from ._open import safe_open
from ._serialize import serialize_specs, write_specs
from .remap import apply as remap_apply


def _itemsize(tensor: "torch.Tensor") -> int:
    return tensor.element_size()


def _bytes_of(tensor: "torch.Tensor") -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a zero-copy uint8 numpy array
    (conjugate and negative views resolved first)."""
    t = tensor.detach().resolve_conj().resolve_neg()
    return t.reshape(-1).view(torch.uint8).numpy()


def storage_ptr(tensor: "torch.Tensor") -> int:
    """Address of the storage behind ``tensor`` (0 for meta tensors)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except Exception:
        try:
            return tensor.storage().data_ptr()
        except NotImplementedError:
            return 0


def storage_size(tensor: "torch.Tensor") -> int:
    """Bytes of the storage behind ``tensor``."""
    try:
        return tensor.untyped_storage().nbytes()
    except AttributeError:
        try:
            return tensor.storage().size() * _itemsize(tensor)
        except NotImplementedError:
            return tensor.nelement() * _itemsize(tensor)


def _end_ptr(tensor: "torch.Tensor") -> int:
    """One past the address of the tensor's last element."""
    if tensor.nelement() == 0:
        return tensor.data_ptr()
    return tensor.view(-1)[-1].data_ptr() + _itemsize(tensor)


def _filter_shared_not_shared(groups: List[Set[str]], state_dict: Dict[str, "torch.Tensor"]) -> List[Set[str]]:
    """Split groups on one storage into groups whose byte ranges really overlap."""
    result: List[Set[str]] = []
    for group in groups:
        if len(group) < 2:
            result.append(group)
            continue
        spans = sorted((state_dict[n].data_ptr(), _end_ptr(state_dict[n]), n) for n in group)
        result.append({spans[0][2]})
        reach = spans[0][1]
        for start, stop, name in spans[1:]:
            if start >= reach:
                result.append({name})
            else:
                result[-1].add(name)
            reach = stop
    return result


def _find_shared_tensors(state_dict: Dict[str, "torch.Tensor"]) -> List[Set[str]]:
    """Groups of names whose tensors share memory."""
    by_storage: Dict[tuple, Set[str]] = defaultdict(set)
    for name, t in state_dict.items():
        if t.device != torch.device("meta") and storage_ptr(t) != 0 and storage_size(t) != 0:
            by_storage[(t.device, storage_ptr(t), storage_size(t))].add(name)
    groups = sorted(by_storage.values())
    return _filter_shared_not_shared(groups, state_dict)


def _is_complete(tensor: "torch.Tensor") -> bool:
    """True when ``tensor`` covers its whole storage."""
    return tensor.data_ptr() == storage_ptr(tensor) and tensor.nelement() * _itemsize(tensor) == storage_size(tensor)


def _remove_duplicate_names(
    state_dict: Dict[str, "torch.Tensor"],
    *,
    preferred_names: Optional[List[str]] = None,
    discard_names: Optional[List[str]] = None,
) -> Dict[str, List[str]]:
    """For each group of shared tensors, the name to keep -> the names to drop."""
    preferred = set(preferred_names or [])
    discard = set(discard_names or [])
    drops: Dict[str, List[str]] = defaultdict(list)
    for group in _find_shared_tensors(state_dict):
        complete = {n for n in group if _is_complete(state_dict[n])}
        if not complete:
            raise RuntimeError(
                "Error while trying to find names to remove to save state dict, but found no suitable name to keep"
                f" for saving amongst: {group}. None is covering the entire storage. Refusing to save/load the model"
                " since you could be storing much more memory than needed."
            )
        keep = sorted(complete)[0]
        not_discarded = complete - discard
        if not_discarded:
            keep = sorted(not_discarded)[0]
        if preferred:
            wanted = preferred & complete
            if wanted:
                keep = sorted(wanted)[0]
        for name in sorted(group):
            if name != keep:
                drops[keep].append(name)
    return drops


def _check_for_save(tensors: Dict[str, "torch.Tensor"]) -> None:
    if not isinstance(tensors, dict):
        raise ValueError(f"Expected a dict of [str, torch.Tensor] but received {type(tensors)}")
    sparse = []
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"Key `{name}` is invalid, expected torch.Tensor but received {type(t)}")
        if t.layout != torch.strided:
            sparse.append(name)
    if sparse:
        raise ValueError(
            f"You are trying to save a sparse tensors: `{sparse}` which this library does not support."
            " You can make it a dense tensor before saving with `.to_dense()` but be aware this might"
            " make a much larger file than needed."
        )
    shared = [group for group in _find_shared_tensors(tensors) if len(group) > 1]
    if shared:
        raise RuntimeError(
            f"Some tensors share memory, this will lead to duplicate memory on disk and potential differences"
            f" when loading them again: {shared}. A potential way to correctly save your model is to use"
            " `save_model`."
        )


def _specs(tensors: Dict[str, "torch.Tensor"], keep_alive: list) -> list:
    _check_for_save(tensors)
    specs = []
    for name, t in tensors.items():
        if not t.is_contiguous():
            raise ValueError(
                f"You are trying to save a non contiguous tensor: `{name}` which is not allowed. It either means you"
                " are trying to save tensors which are reference of each other in which case it's recommended to save"
                " only the full tensors, and reslice at load time, or simply call `.contiguous()` on your tensor to"
                " pack it before saving."
            )
        if t.device.type == "meta":  # NotImplementedError, as the reference (and torch) raise
            raise NotImplementedError(f"tensor `{name}` is on the meta device and has no data to save")
        if t.device.type != "cpu":
            t = t.to("cpu")
        dtype_name = str(t.dtype).split(".")[-1]
        code = code_from_spec_name(dtype_name)
        shape = list(t.shape)
        if dtype_name == "float4_e2m1fn_x2":
            if not shape:
                raise InvalidArgument(f"tensor `{name}`: a float4_e2m1fn_x2 scalar has no safetensors shape")
            shape[-1] *= 2
        nbytes = t.nelement() * _itemsize(t)
        keep_alive.append(t)
        specs.append((name, code, shape, _bytes_of(t) if nbytes else None, nbytes))
    return specs


def save(tensors: Dict[str, "torch.Tensor"], metadata: Optional[Dict[str, str]] = None) -> bytes:
    """The bytes of a safetensors file holding ``tensors``."""
    keep_alive: list = []
    return serialize_specs(_specs(tensors, keep_alive), metadata)


def save_file(
    tensors: Dict[str, "torch.Tensor"],
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
    *,
    durable: Optional[bool] = None,
    remap=None,
) -> None:
    """Write ``tensors`` to ``filename`` atomically; ``durable=False`` skips
    the fsyncs (``FASTENSORS_DURABLE=0`` does for the whole process).
    ``remap`` renames the tensors on the way (``fastensors.remap``)."""
    if remap is not None:
        tensors = remap_apply(tensors, remap)
    keep_alive: list = []
    write_specs(_specs(tensors, keep_alive), filename, metadata, durable)


def load(data: bytes) -> Dict[str, "torch.Tensor"]:
    """Tensors of an in-memory file (copies: ``data`` may be freed)."""
    if not isinstance(data, bytes):
        data = bytes(data)
    infos, _meta, start = _core.parse_buffer(data)
    fw = get_framework("torch")
    out = {}
    for name, dtype, shape, b, e in infos:
        raw = np.frombuffer(data, np.uint8, count=e - b, offset=start + b).copy()
        out[name] = fw.from_bytes(raw, dtype, shape)
    return out


def load_file(
    filename: Union[str, os.PathLike], device: Union[str, int] = "cpu", *, backend: str = "mmap", dtype=None,
    **select,
) -> Dict[str, "torch.Tensor"]:
    """All tensors of ``filename``; on the CPU with the mmap backend they share
    the copy-on-write mapping (no copy).

    ``dtype`` (``torch.bfloat16``, "bf16", "F32", ...): float tensors are
    converted to it while reading (in C++, into the tensor's own buffer),
    bit-exact with ml_dtypes (docs/dtypes.md); integer, BOOL and complex
    tensors are never converted. ``remap``, ``include``, ``exclude`` and
    ``prefix`` choose and rename tensors as in ``safe_open``."""
    with safe_open(filename, framework="pt", device=device, backend=backend, **select) as f:
        return f.get_tensors(dtype=dtype)


def save_model(
    model: "torch.nn.Module",
    filename: Union[str, os.PathLike],
    metadata: Optional[Dict[str, str]] = None,
    force_contiguous: bool = True,
    *,
    durable: Optional[bool] = None,
) -> None:
    """Save ``model``'s state dict, storing shared (tied) tensors once and
    recording each dropped name in the metadata."""
    state_dict = model.state_dict()
    for kept, dropped in _remove_duplicate_names(state_dict).items():
        for name in dropped:
            if metadata is None:
                metadata = {}
            metadata.setdefault(name, kept)
            del state_dict[name]
    if force_contiguous:
        state_dict = {k: v.contiguous() for k, v in state_dict.items()}
    try:
        save_file(state_dict, filename, metadata=metadata, durable=durable)
    except ValueError as e:
        raise ValueError(
            f"{e} Or use save_model(..., force_contiguous=True), read the docs for potential caveats."
        ) from None


def load_model(
    model: "torch.nn.Module",
    filename: Union[str, os.PathLike],
    strict: bool = True,
    device: Union[str, int] = "cpu",
    *,
    backend: str = "mmap",
    **select,
) -> Tuple[List[str], List[str]]:
    """Load ``filename`` into ``model``, reconciling shared tensors; returns
    ``(missing, unexpected)``. ``remap``, ``include``, ``exclude`` and
    ``prefix`` choose and rename the file's tensors (as in ``safe_open``)."""
    state_dict = load_file(filename, device=device, backend=backend, **select)
    drops = _remove_duplicate_names(model.state_dict(), preferred_names=list(state_dict.keys()))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = set(missing)
    for dropped in drops.values():
        for name in dropped:
            if name in missing:
                missing.remove(name)
            else:
                unexpected.append(name)
    if strict and (missing or unexpected):
        raise _key_error(model, missing, unexpected)
    return missing, unexpected


def _key_error(model, missing, unexpected) -> RuntimeError:
    """The error torch's strict load_state_dict raises, for the names given."""
    msg = f"Error(s) in loading state_dict for {model.__class__.__name__}:"
    if missing:
        msg += "\n    Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(missing))
    if unexpected:
        msg += "\n    Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in sorted(unexpected))
    return RuntimeError(msg)


__all__ = [
    "save", "save_file", "load", "load_file", "save_model", "load_model",
    "storage_ptr", "storage_size",
]


# -- Hugging Face conventions and .bin conversion -------------------------------
# (fastensors.hf and fastensors.convert_bin hold the code; re-exported here
# because users reach for them next to save_model/load_model.)
from .convert_bin import convert_pytorch_to_safetensors  # noqa: E402
from .hf import PretrainedMixin, load_pretrained, save_pretrained  # noqa: E402

__all__ += ["save_pretrained", "load_pretrained", "PretrainedMixin", "convert_pytorch_to_safetensors"]
