"""torch adapter: the reference ``safetensors.torch`` verbs and helpers.

Tensors are built only from Python-level torch APIs (``torch.from_numpy``,
``Tensor.view(dtype)``, ``reshape``), never from torch's C internals, so
torch-compatible libraries that stand in for ``torch`` work too."""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch  # noqa: F401  (the adapter needs torch; fail early without it)

from . import _core
from .format.arrays import get_framework
from .format.reader import safe_open
from .format.torch_specs import (  # the reference's names for the storage helpers
    _end_ptr,
    _filter_shared_not_shared,
    _is_complete,
    check_for_save as _check_for_save,
    find_shared_tensors as _find_shared_tensors,
    remove_duplicate_names as _remove_duplicate_names,
    storage_ptr,
    storage_size,
    torch_specs as _specs,
)
from .format.writer import serialize_specs, write_specs
from .hf.convert_bin import convert_pytorch_to_safetensors
from .hf.pretrained import PretrainedMixin, key_error as _key_error, load_pretrained, save_pretrained
from .remap import apply as remap_apply


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


__all__ = [
    "save", "save_file", "load", "load_file", "save_model", "load_model",
    "storage_ptr", "storage_size",
]

# The Hugging Face conventions and .bin conversion live in fastensors.hf;
# re-exported because users reach for them next to save_model/load_model.
__all__ += ["save_pretrained", "load_pretrained", "PretrainedMixin", "convert_pytorch_to_safetensors"]
