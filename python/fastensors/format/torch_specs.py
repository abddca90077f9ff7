"""Torch tensors as writer input, and the storage facts that saving needs:
which tensors share memory, which name of a shared group to keep, and the
``(name, code, shape, data, nbytes)`` specs of contiguous tensors.

The behaviour and messages are the reference ``safetensors.torch``'s; the
torch adapter re-exports these under the reference's names. Imported only
when torch tensors are involved (torch is optional)."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Set

import torch

from ..errors import InvalidArgument
from .dtypes import code_from_spec_name


def _itemsize(tensor: "torch.Tensor") -> int:
    return tensor.element_size()


def _bytes_of(tensor: "torch.Tensor"):
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


def find_shared_tensors(state_dict: Dict[str, "torch.Tensor"]) -> List[Set[str]]:
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


def remove_duplicate_names(
    state_dict: Dict[str, "torch.Tensor"],
    *,
    preferred_names: Optional[List[str]] = None,
    discard_names: Optional[List[str]] = None,
) -> Dict[str, List[str]]:
    """For each group of shared tensors, the name to keep -> the names to drop."""
    preferred = set(preferred_names or [])
    discard = set(discard_names or [])
    drops: Dict[str, List[str]] = defaultdict(list)
    for group in find_shared_tensors(state_dict):
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


def check_for_save(tensors: Dict[str, "torch.Tensor"]) -> None:
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
    shared = [group for group in find_shared_tensors(tensors) if len(group) > 1]
    if shared:
        raise RuntimeError(
            f"Some tensors share memory, this will lead to duplicate memory on disk and potential differences"
            f" when loading them again: {shared}. A potential way to correctly save your model is to use"
            " `save_model`."
        )


def torch_specs(tensors: Dict[str, "torch.Tensor"], keep_alive: list) -> list:
    check_for_save(tensors)
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
            # The reference's words, which callers match.
            raise NotImplementedError(f"Cannot copy out of meta tensor `{name}`: it has no data to save")
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
