"""How quantized weights are stored in a safetensors checkpoint: the
compressed-tensors layout for int8/int4/int2 and fp8_e4m3, and fastensors'
own layout for NF4 (docs/model_quantization.md).

For a linear layer ``M`` whose weight ``M.weight`` is quantized:

- int8/int4/int2 (``pack-quantized``): ``M.weight_packed`` I32 (codes + 2^(b-1)
  packed along the row), ``M.weight_scale`` (rows, groups) in the model's
  dtype, ``M.weight_shape`` I64 [rows, cols], and when asymmetric
  ``M.weight_zero_point`` I32 packed along dim 0.
- fp8_e4m3 (``float-quantized``): ``M.weight`` F8_E4M3 and ``M.weight_scale``
  (rows, 1), one scale per output channel.
- nf4: ``M.weight_nf4`` U8 (the flat array's codes, two per byte, high nibble
  first), ``M.weight_absmax`` F32 (one per block of 64), ``M.weight_shape`` I64.

Every part's dtype and shape follow from the scheme and the weight's shape,
so a shard's header is planned before anything is quantized."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ... import _core
from ..kernels import INT_SCHEMES, QuantizedTensor

# The packing compressed-tensors applies to these schemes' codes.
CT_FORMAT = {"int8": "pack-quantized", "int4": "pack-quantized", "int2": "pack-quantized",
             "fp8_e4m3": "float-quantized"}
NF4_FORMAT = "fastensors-nf4"
SAFETENSORS_SCHEMES = ("int8", "int4", "int2", "fp8_e4m3", "nf4")


class Part(NamedTuple):
    """One stored tensor of a quantized weight."""

    suffix: str  # appended to the module name: "weight_packed", ...
    code: str  # safetensors dtype
    shape: Tuple[int, ...]
    nbytes: int
    small: bool  # cheap to keep in memory until the writer asks for it


def module_of(weight_name: str) -> str:
    return weight_name[: -len(".weight")] if weight_name.endswith(".weight") else weight_name


def _nbytes(code: str, shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n * _core.dtype_bits(code) // 8


def _part(suffix: str, code: str, shape: Sequence[int], small: bool) -> Part:
    shape = tuple(int(d) for d in shape)
    return Part(suffix, code, shape, _nbytes(code, shape), small)


def plan_parts(scheme: str, shape: Tuple[int, ...], code: str, group_size: Optional[int],
               symmetric: Optional[bool]) -> List[Part]:
    """The stored tensors of a weight of ``shape`` and dtype ``code``."""
    if scheme == "nf4":
        n = int(np.prod(shape, dtype=np.int64))
        return [_part("weight_nf4", "U8", [(n + 1) // 2], False),
                _part("weight_absmax", "F32", [(n + 63) // 64], True),
                _part("weight_shape", "I64", [len(shape)], True)]
    rows, cols = shape
    if scheme == "fp8_e4m3":
        return [_part("weight", "F8_E4M3", [rows, cols], False), _part("weight_scale", code, [rows, 1], True)]
    bits = INT_SCHEMES[scheme]
    groups = 1 if scheme == "int8" else cols // group_size
    parts = [_part("weight_packed", "I32", [rows, _core.packed_words(cols, bits)], False),
             _part("weight_scale", code, [rows, groups], True),
             _part("weight_shape", "I64", [2], True)]
    if not symmetric:
        parts.append(_part("weight_zero_point", "I32", [_core.packed_words(rows, bits), groups], True))
    return parts


def _pack_rows(codes: np.ndarray, bits: int) -> np.ndarray:
    rows, cols = codes.shape
    out = np.empty((rows, _core.packed_words(cols, bits)), dtype=np.int32)
    _core.pack_int32(np.ascontiguousarray(codes, dtype=np.int8), bits, out)
    return out


def _unpack_rows(packed: np.ndarray, rows: int, cols: int, bits: int) -> np.ndarray:
    packed = np.ascontiguousarray(packed, dtype=np.int32)
    out = np.empty((rows, cols), dtype=np.int8)
    _core.unpack_int32(packed, bits, out)
    return out


def parts_of(qt: QuantizedTensor) -> Dict[str, np.ndarray]:
    """The stored tensors of a quantized weight, by suffix (see plan_parts)."""
    if qt.scheme == "nf4":
        return {"weight_nf4": qt.data, "weight_absmax": qt.scales,
                "weight_shape": np.asarray(qt.shape, dtype=np.int64)}
    if qt.scheme == "fp8_e4m3":
        return {"weight": qt.data, "weight_scale": qt.scales.reshape(qt.shape[0], 1)}
    bits = INT_SCHEMES[qt.scheme]
    packed = _pack_rows(qt.data, 8) if bits == 8 else qt.data
    out = {"weight_packed": packed, "weight_scale": qt.scales,
           "weight_shape": np.asarray(qt.shape, dtype=np.int64)}
    if qt.zero_points is not None:
        # compressed-tensors packs zero points along the output channels
        out["weight_zero_point"] = np.ascontiguousarray(_pack_rows(np.ascontiguousarray(qt.zero_points.T), bits).T)
    return out


def weight_args(scheme: str, group_size: Optional[int], symmetric: Optional[bool]) -> dict:
    """compressed-tensors ``QuantizationArgs`` for the weights, as JSON."""
    if scheme == "fp8_e4m3":
        return {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None, "strategy": "channel",
                "block_structure": None, "dynamic": False, "actorder": None, "observer": "minmax",
                "observer_kwargs": {}}
    bits = INT_SCHEMES[scheme]
    channel = scheme == "int8"
    return {"num_bits": bits, "type": "int", "symmetric": bool(symmetric),
            "group_size": None if channel else int(group_size), "strategy": "channel" if channel else "group",
            "block_structure": None, "dynamic": False, "actorder": None, "observer": "minmax",
            "observer_kwargs": {}}


def quantization_config(scheme: str, group_size: Optional[int], symmetric: Optional[bool],
                        ignore: List[str]) -> dict:
    """The ``quantization_config`` of config.json for a model we wrote."""
    if scheme == "nf4":
        # Not a format transformers knows: naming it makes loading fail loudly
        # instead of silently leaving the layers uninitialized.
        return {"quant_method": "fastensors", "format": NF4_FORMAT, "block_size": 64, "ignore": list(ignore)}
    fmt = CT_FORMAT[scheme]
    return {
        "quant_method": "compressed-tensors",
        "format": fmt,
        "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "weights": weight_args(scheme, group_size, symmetric),
                                      "input_activations": None, "output_activations": None, "format": fmt}},
        "ignore": list(ignore),
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
    }


# -- reading back ------------------------------------------------------------------

QUANTIZED_SUFFIXES = ("weight_packed", "weight_nf4", "weight_scale", "weight_zero_point", "weight_shape",
                      "weight_absmax")


def scheme_of_parts(names: Sequence[str], weight_code: Optional[str], bits: Optional[int]) -> Optional[str]:
    """Which scheme a module's stored tensors are, or None for a dense weight."""
    have = set(names)
    if "weight_nf4" in have:
        return "nf4"
    if "weight_packed" in have:
        return {8: "int8", 4: "int4", 2: "int2"}.get(bits or 0, f"int{bits}")
    if "weight_scale" in have and weight_code == "F8_E4M3":
        return "fp8_e4m3"
    if "weight_scale" in have and weight_code == "I8":
        return "int8-naive"
    return None


def dequantize_parts(scheme: str, get, bits: Optional[int]) -> np.ndarray:
    """Rebuild one dense F32 weight from ``get(suffix)``: the stored array,
    or None when the module has no such tensor."""
    from ..kernels import dequantize

    if scheme == "nf4":
        shape = tuple(int(d) for d in get("weight_shape"))
        qt = QuantizedTensor("nf4", shape, np.float32, np.ascontiguousarray(get("weight_nf4")),
                             np.ascontiguousarray(get("weight_absmax"), dtype=np.float32), None, 64)
        return dequantize(qt)
    scale = np.ascontiguousarray(get("weight_scale"))
    if scheme == "fp8_e4m3":
        w = np.ascontiguousarray(get("weight")).view(np.uint8)
        rows, cols = w.shape
        if scale.size == 1:
            gran = "tensor"
        elif scale.shape == (rows, 1):
            gran = "channel"
        else:
            gran = "block"
        qt = QuantizedTensor("fp8_e4m3", (rows, cols), scale.dtype, w, scale.reshape(-1) if gran != "block"
                             else scale, None, None, gran)
        return dequantize(qt)
    if scheme == "int8-naive":
        codes = np.ascontiguousarray(get("weight"))
        rows, cols = codes.shape
        qt = QuantizedTensor("int8", (rows, cols), scale.dtype, codes, scale.reshape(rows, -1), None,
                             cols // scale.reshape(rows, -1).shape[1])
        return dequantize(qt)
    bits = bits if bits is not None else INT_SCHEMES[scheme]
    shape = tuple(int(d) for d in get("weight_shape"))
    if len(shape) != 2:
        raise ValueError(f"weight_shape {shape} is not 2-D")
    rows, cols = shape
    codes = _unpack_rows(get("weight_packed"), rows, cols, bits)
    scale = scale.reshape(rows, -1)
    groups = scale.shape[1]
    zp = None
    packed_zp = get("weight_zero_point")
    if packed_zp is not None:
        zp = np.ascontiguousarray(_unpack_rows(np.ascontiguousarray(np.asarray(packed_zp).T), groups, rows, bits).T)
    name = {8: "int8", 4: "int4", 2: "int2"}.get(bits)
    if name is None:
        raise ValueError(f"{bits}-bit packed weights are not supported")
    data = codes if bits == 8 else _pack_rows(codes, bits)
    qt = QuantizedTensor(name, (rows, cols), scale.dtype, data, scale, zp, cols // groups if groups else cols)
    return dequantize(qt)
