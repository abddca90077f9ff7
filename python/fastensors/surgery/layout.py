"""Layout adapters between framework conventions (docs/surgery.md).

- "pytorch": linear weights ``(out, in)``; norm parameters ``weight``/``bias``;
  conv kernels ``(out, in, *spatial)`` (OIW, OIHW, OIDHW); embeddings ``weight``.
- "flax" (also "jax"): linear and conv ``kernel`` ``(in, out)`` and
  ``(*spatial, in, out)`` (WIO, HWIO, DHWIO); norms ``scale``/``bias``;
  embeddings ``embedding`` (flax.linen's parameter names).
- "keras" (also "tf"): ``kernel`` as flax; norms ``gamma``/``beta``;
  embeddings ``embeddings`` (Keras' variable names).
- "transposed": flax's shapes with PyTorch's names, norms ``gamma``/``beta``
  (what "flax" and "keras" meant before they took their frameworks' names).
- "none": nothing changes.

Which tensors are linear, conv or norm parameters comes from a module-type
map when a torch model (or a map) is given, else from name rules
(``NAME_RULES``). Every change is a transpose or a rename, so converting
there and back gives the original bytes. Tensors may be numpy arrays, torch
tensors or any framework's arrays (jax, tensorflow, paddle, mlx)."""

from __future__ import annotations

import re
from typing import Dict, Mapping, Optional

import numpy as np

from ..errors import InvalidArgument
from ..format.dtypes import code_from_numpy
from ..format.frameworks import framework_of, get_framework
from ..remap import RemapLike, apply as remap_apply

LAYOUTS = ("pytorch", "flax", "keras", "transposed", "none")
_ALIASES = {"pt": "pytorch", "torch": "pytorch", "pytorch": "pytorch", "flax": "flax", "jax": "flax",
            "keras": "keras", "tf": "keras", "tensorflow": "keras", "transposed": "transposed", "none": "none"}

# Parameter renames from PyTorch's names, by layout and kind of module.
_RENAMES = {
    "pytorch": {},
    "transposed": {"norm": {"weight": "gamma", "bias": "beta"}},
    "flax": {"linear": {"weight": "kernel"}, "linear_in_out": {"weight": "kernel"}, "conv": {"weight": "kernel"},
             "norm": {"weight": "scale"}, "embedding": {"weight": "embedding"}},
    "keras": {"linear": {"weight": "kernel"}, "linear_in_out": {"weight": "kernel"}, "conv": {"weight": "kernel"},
              "norm": {"weight": "gamma", "bias": "beta"}, "embedding": {"weight": "embeddings"}},
}

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
    """The kind of a PyTorch- or "transposed"-layout tensor, by its names."""
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


def _kind_by_param(module: str, param: str, ndim: int) -> str:
    """The kind of a flax- or keras-layout tensor: its parameter names it."""
    if param == "kernel":
        return "linear" if ndim == 2 else "conv" if ndim in (3, 4, 5) else "other"
    if param in ("scale", "gamma", "beta") or (param == "bias" and re.search(NAME_RULES["norm"], module.lower())):
        return "norm"
    if param in ("embedding", "embeddings"):
        return "embedding"
    return "other"


def _conv_to_flax(ndim: int):
    return tuple(range(2, ndim)) + (1, 0)


def _conv_to_torch(ndim: int):
    return (ndim - 1, ndim - 2) + tuple(range(ndim - 2))


def _transpose(key: str, t, axes):
    if isinstance(t, np.ndarray):
        return np.ascontiguousarray(np.transpose(t, axes))
    fw = framework_of(t)
    if fw is None:
        return t.permute(*axes).contiguous()  # a torch tensor
    arr = np.ascontiguousarray(np.transpose(fw.to_numpy(key, t), axes))
    return fw.from_numpy(arr, code_from_numpy(arr.dtype))


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

    def kind(self, key: str, ndim: int, layout: Optional[str] = None) -> str:
        """What ``key`` is ("linear", "conv", "norm", "embedding", ...) in
        ``layout`` (the source layout by default)."""
        layout = self.src if layout is None else _canonical(layout)
        module, param = _split(key)
        if self.types is not None and module in self.types:
            kind = self.types[module]
            names = {"weight", "bias"} | {n for r in _RENAMES[layout].get(kind, {}).items() for n in r}
            if kind == "norm" and param in names | {"gamma", "beta"}:
                return "norm"
            weight = {"weight", _RENAMES[layout].get(kind, {}).get("weight", "weight")}
            if kind in ("linear", "conv", "conv_transpose", "linear_in_out") and param in weight:
                return kind
            return "embedding" if kind == "embedding" and param in weight else "other"
        if layout in ("flax", "keras"):
            return _kind_by_param(module, param, ndim)
        return _kind_by_name(module, param, ndim)

    def _move(self, key: str, t, src: str, dst: str) -> tuple:
        """One tensor from ``src`` to ``dst``, one of which is "pytorch"."""
        ndim = len(t.shape)
        kind = self.kind(key, ndim, src)
        module, param = _split(key)
        to_torch = dst == "pytorch"
        if kind == "linear" and ndim == 2:
            t = _transpose(key, t, (1, 0))
        elif kind == "conv" and ndim in (3, 4, 5):
            t = _transpose(key, t, _conv_to_torch(ndim) if to_torch else _conv_to_flax(ndim))
        elif kind == "conv_transpose":
            raise InvalidArgument(f"{key!r}: transposed convolutions have no layout rule; convert it yourself")
        renames = _RENAMES[src if to_torch else dst].get(kind, {})
        if to_torch:
            renames = {v: k for k, v in renames.items()}
        if param in renames:
            key = f"{module}.{renames[param]}" if module else renames[param]
        return key, t

    def __call__(self, tensors: Mapping[str, object]) -> Dict[str, object]:
        if self.src == self.dst or "none" in (self.src, self.dst):
            out = dict(tensors)
        else:
            steps = [(self.src, "pytorch")] if self.src != "pytorch" else []
            steps += [("pytorch", self.dst)] if self.dst != "pytorch" else []
            out = dict(tensors)
            for src, dst in steps:
                moved = {}
                for key, t in out.items():
                    new_key, new_t = self._move(key, t, src, dst)
                    moved[new_key] = new_t
                if len(moved) != len(out):
                    raise InvalidArgument("the layout renames made two tensors share a name (both 'weight' and"
                                          " 'gamma' under one norm module?)")
                out = moved
        return remap_apply(out, self.remap) if self.remap is not None else out


def convert(tensors: Mapping[str, object], src: str = "pytorch", dst: str = "flax", *, model=None,
            types: Optional[Mapping[str, str]] = None, remap: RemapLike = None) -> Dict[str, object]:
    """``tensors`` converted from layout ``src`` to ``dst`` (see the module doc)."""
    return LayoutAdapter(src, dst, model=model, types=types, remap=remap)(tensors)


def load(path, dst: str = "flax", src: str = "pytorch", *, model=None, types=None, remap: RemapLike = None,
         include=None, exclude=None, prefix=None, framework: str = "np") -> Dict[str, object]:
    """Read a checkpoint (tensors chosen by ``include``/``exclude``/``prefix``)
    and convert it from ``src`` to ``dst``; ``remap`` renames the result.

    ``framework``: the arrays returned ("np", "pt", "flax", "tf", "paddle",
    "mlx"). Transposes are made in numpy (or torch) and each result is then
    handed to the framework, so one call loads a PyTorch checkpoint into,
    say, flax's layout as jax arrays. Raises ``DtypeNotInFramework`` naming a
    tensor whose dtype the framework lacks, ``FrameworkNotInstalled``."""
    from ..checkpoint import open_checkpoint

    fw = get_framework(framework)
    read_as = "pt" if fw.name == "torch" else "np"
    with open_checkpoint(path, read_as, include=include, exclude=exclude, prefix=prefix) as ckpt:
        names = ckpt.offset_keys()
        if hasattr(fw, "check_dtype"):
            for name in names:
                fw.check_dtype(name, ckpt.tensor_info(name).dtype)
        tensors = {name: ckpt.get_tensor(name) for name in names}
    out = convert(tensors, src, dst, model=model, types=types, remap=remap)
    if read_as == "np" and fw.name != "numpy":
        out = {k: fw.from_numpy(v, code_from_numpy(v.dtype)) for k, v in out.items()}
    return out

__all__ = ["convert", "load", "LayoutAdapter", "module_types", "LAYOUTS", "NAME_RULES"]
