"""Layout adapters between framework conventions (docs/surgery.md).

- "pytorch": linear weights ``(out, in)``; norm parameters ``weight``/``bias``;
  conv kernels ``(out, in, *spatial)`` (OIW, OIHW, OIDHW).
- "flax" (also "keras"): linear weights ``(in, out)``; norm parameters
  ``gamma``/``beta``; conv kernels ``(*spatial, in, out)`` (WIO, HWIO, DHWIO).
  Other names are kept.
- "none": nothing changes.

Which tensors are linear, conv or norm parameters comes from a module-type
map when a torch model (or a map) is given, else from name rules
(``NAME_RULES``). Every change is a transpose or a rename, so converting
there and back gives the original bytes."""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional

import numpy as np

from ..errors import InvalidArgument
from ..remap import RemapLike, apply as remap_apply

LAYOUTS = ("pytorch", "flax", "none")
_ALIASES = {"pt": "pytorch", "torch": "pytorch", "pytorch": "pytorch", "flax": "flax", "keras": "flax",
            "jax": "flax", "none": "none"}

# Name rules used without a module-type map; each applies to the module
# name (the key without its last component), searched case-insensitively.
NAME_RULES = {
    "norm": r"(norm|(^|[._])ln(_?\w*)?$|(^|[._])bn\d*$)",
    "embedding": r"(embed|wte$|wpe$|(^|\.)shared$|relative_attention_bias$)",
    "conv": r"conv",
}

# Module types by torch class name (subclasses are looked up through the MRO).
_TORCH_TYPES = {
    "Linear": "linear", "LazyLinear": "linear", "NonDynamicallyQuantizableLinear": "linear",
    "Conv1d": "conv", "Conv2d": "conv", "Conv3d": "conv",
    "ConvTranspose1d": "conv_transpose", "ConvTranspose2d": "conv_transpose", "ConvTranspose3d": "conv_transpose",
    "LayerNorm": "norm", "GroupNorm": "norm", "RMSNorm": "norm", "BatchNorm1d": "norm", "BatchNorm2d": "norm",
    "BatchNorm3d": "norm", "InstanceNorm1d": "norm", "InstanceNorm2d": "norm", "InstanceNorm3d": "norm",
    "Embedding": "embedding", "EmbeddingBag": "embedding",
    # transformers' GPT-2 style Conv1D already stores its weight as (in, out).
    "Conv1D": "linear_in_out",
}


def _canonical(layout: str) -> str:
    try:
        return _ALIASES[str(layout).lower()]
    except KeyError:
        raise InvalidArgument(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}") from None


def module_types(model) -> Dict[str, str]:
    """``{module name: type}`` of a torch model: "linear", "conv",
    "conv_transpose", "norm", "embedding", "linear_in_out" or "other". Norm
    classes not in the table are recognised by a class name ending in
    "Norm" (LlamaRMSNorm, T5LayerNorm, ...)."""
    out = {}
    for name, module in model.named_modules():
        kind = "other"
        for cls in type(module).__mro__:
            if cls.__name__ in _TORCH_TYPES:
                kind = _TORCH_TYPES[cls.__name__]
                break
            if cls.__name__.endswith("Norm"):
                kind = "norm"
                break
        out[name] = kind
    return out


def _split(key: str):
    module, _, param = key.rpartition(".")
    return module, param


def _kind_by_name(module: str, param: str, ndim: int) -> str:
    low = module.lower()
    if param in ("gamma", "beta") or (re.search(NAME_RULES["norm"], low) and param in ("weight", "bias")):
        return "norm"
    if re.search(NAME_RULES["embedding"], low):
        return "embedding"
    if param == "weight" and ndim in (3, 4, 5) and re.search(NAME_RULES["conv"], low):
        return "conv"
    if param == "weight" and ndim == 2:
        return "linear"
    return "other"


def _conv_to_flax(ndim: int):
    return tuple(range(2, ndim)) + (1, 0)


def _conv_to_torch(ndim: int):
    return (ndim - 1, ndim - 2) + tuple(range(ndim - 2))


def _transpose(t, axes):
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(np.transpose(t, axes))
    return t.permute(*axes).contiguous()  # a torch tensor


class LayoutAdapter:
    """Converts state dicts (numpy arrays or torch tensors) from layout
    ``src`` to ``dst``; ``model`` (a torch module) or ``types`` (its
    ``module_types``) decides which tensors are linear/conv/norm, else the
    name rules do. ``remap`` renames the result's keys afterwards."""

    def __init__(self, src: str = "pytorch", dst: str = "flax", *, model=None,
                 types: Optional[Mapping[str, str]] = None, remap: RemapLike = None):
        self.src, self.dst = _canonical(src), _canonical(dst)
        self.types = dict(types) if types is not None else (module_types(model) if model is not None else None)
        self.remap = remap

    def kind(self, key: str, ndim: int) -> str:
        module, param = _split(key)
        if self.types is not None and module in self.types:
            kind = self.types[module]
            if kind == "norm" and param in ("weight", "bias", "gamma", "beta"):
                return "norm"
            if kind in ("linear", "conv", "conv_transpose", "linear_in_out") and param in ("weight",):
                return kind
            return "other" if kind != "embedding" else "embedding"
        return _kind_by_name(module, param, ndim)

    def _one(self, key: str, t) -> tuple:
        ndim = len(t.shape)
        kind = self.kind(key, ndim)
        module, param = _split(key)
        to_flax = self.dst == "flax"
        if kind == "linear" and ndim == 2:
            return key, _transpose(t, (1, 0))
        if kind == "conv" and ndim in (3, 4, 5):
            return key, _transpose(t, _conv_to_flax(ndim) if to_flax else _conv_to_torch(ndim))
        if kind == "conv_transpose":
            raise InvalidArgument(f"{key!r}: transposed convolutions have no layout rule; convert it yourself")
        if kind == "norm":
            renames = {"weight": "gamma", "bias": "beta"} if to_flax else {"gamma": "weight", "beta": "bias"}
            if param in renames:
                return f"{module}.{renames[param]}" if module else renames[param], t
        return key, t

    def __call__(self, tensors: Mapping[str, object]) -> Dict[str, object]:
        if self.src == self.dst or "none" in (self.src, self.dst):
            out = dict(tensors)
        else:
            out = {}
            for key, t in tensors.items():
                new_key, new_t = self._one(key, t)
                out[new_key] = new_t
            if len(out) != len(tensors):
                raise InvalidArgument("the layout renames made two tensors share a name (both 'weight' and"
                                      " 'gamma' under one norm module?)")
        return remap_apply(out, self.remap) if self.remap is not None else out


def convert(tensors: Mapping[str, object], src: str = "pytorch", dst: str = "flax", *, model=None,
            types: Optional[Mapping[str, str]] = None, remap: RemapLike = None) -> Dict[str, object]:
    """``tensors`` converted from layout ``src`` to ``dst`` (see the module doc)."""
    return LayoutAdapter(src, dst, model=model, types=types, remap=remap)(tensors)


def load(path, dst: str = "flax", src: str = "pytorch", *, model=None, types=None, remap: RemapLike = None,
         include=None, exclude=None, prefix=None, framework: str = "np") -> Dict[str, object]:
    """Read a checkpoint (tensors chosen by ``include``/``exclude``/``prefix``)
    and convert it from ``src`` to ``dst``; ``remap`` renames the result."""
    from ..checkpoint import open_checkpoint

    with open_checkpoint(path, framework, include=include, exclude=exclude, prefix=prefix) as ckpt:
        tensors = {name: ckpt.get_tensor(name) for name in ckpt.offset_keys()}
    return convert(tensors, src, dst, model=model, types=types, remap=remap)

__all__ = ["convert", "load", "LayoutAdapter", "module_types", "LAYOUTS", "NAME_RULES"]
