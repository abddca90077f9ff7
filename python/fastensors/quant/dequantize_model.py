"""Turning a quantized model back into a dense safetensors checkpoint: any
output of ``quantize_model`` (the compressed-tensors layout, symmetric or
not, int8/int4/int2 and fp8; NF4 in fastensors' layout; ``model.gguf``;
``model.parquet``), and compressed-tensors checkpoints written by others in
those formats.

Dequantized weights are computed in F32 by the kernels and stored in the
source dtype (the scales' dtype, or the recorded one) unless ``dtype`` says
otherwise; tensors that were kept dense are copied unchanged. The output is
streamed and committed like ``quantize_model``'s (docs/model_quantization.md)."""

from __future__ import annotations

import json
import os
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .layouts import compressed_tensors as _ct_layout
from ..format import writer as _serialize
from ..format.cast import dtype_code
from ..format.dtypes import NUMPY
from .._util.jsonfile import read_json
from ..errors import InvalidArgument, NotAQuantizedModel
from .kernels import INT_SCHEMES
from .quantize_model import GGUF_FILE, PARQUET_FILE, _check_destination
from ..checkpoint.sharding import MAX_SHARD_SIZE, Entry, SizeLike, companion_files, json_companion, plan_shards, write_planned

PathLike = Union[str, "os.PathLike[str]"]
FLOAT_OUT = ("F32", "F16", "BF16")


def _find(src: str) -> Tuple[str, str]:
    """("gguf" | "parquet" | "safetensors", path)."""
    if os.path.isfile(src):
        if src.endswith(".gguf"):
            return "gguf", src
        if src.endswith(".parquet"):
            return "parquet", src
        return "safetensors", src
    if os.path.isdir(src):
        for name, kind in ((GGUF_FILE, "gguf"), (PARQUET_FILE, "parquet")):
            if os.path.isfile(os.path.join(src, name)):
                return kind, os.path.join(src, name)
    return "safetensors", src


class _Model:
    """A quantized model as dense tensors: infos [(name, code, shape)] in
    output order and get(name) -> array in that code."""

    infos: List[Tuple[str, str, Tuple[int, ...]]]
    get: Callable[[str], np.ndarray]
    config: Optional[dict]
    directory: Optional[str]
    exclude: List[str]


def _from_single(kind: str, path: str, dtype: Optional[str]) -> _Model:
    if kind == "gguf":
        from .layouts.gguf import read_gguf as read
    else:
        from .layouts.parquet import read_parquet as read
    cfg, infos, get = read(path)
    m = _Model()
    m.config = cfg
    m.directory = os.path.dirname(os.path.abspath(path))
    m.exclude = [os.path.basename(path)]
    out_code = {}
    m.infos = []
    for name, code, shape, quantized in infos:
        c = (dtype or code) if quantized else code
        if quantized and c not in FLOAT_OUT:
            c = "F32"
        out_code[name] = c
        m.infos.append((name, c, tuple(shape)))

    def get_out(name: str) -> np.ndarray:
        a = get(name)
        want = NUMPY[out_code[name]]
        return a if a.dtype == want else a.astype(want)

    m.get = get_out
    return m


def _bits_from(cfg: Optional[dict], meta: Optional[Dict[str, str]]) -> Optional[int]:
    if meta and "fastensors.quantization" in meta:
        q = json.loads(meta["fastensors.quantization"])
        return INT_SCHEMES.get(q.get("scheme"))
    qc = (cfg or {}).get("quantization_config") or {}
    bits = {g.get("weights", {}).get("num_bits") for g in (qc.get("config_groups") or {}).values()
            if isinstance(g, dict) and g.get("weights")}
    if len(bits) > 1:
        raise NotAQuantizedModel(f"config groups with different bit widths ({sorted(bits)}) are not supported")
    return bits.pop() if bits else None


def _from_safetensors(src: str, dtype: Optional[str]) -> Tuple[_Model, object]:
    from ..checkpoint import open_checkpoint

    ckpt = open_checkpoint(src, framework="np", backend="pread")
    ckpt.verify()
    from_dir = os.path.isdir(src) or ckpt.is_sharded
    cfg = None
    cfg_path = os.path.join(ckpt.directory, "config.json")
    if from_dir and os.path.isfile(cfg_path):
        cfg = read_json(cfg_path)
    meta = ckpt.metadata()
    bits = _bits_from(cfg, meta)
    recorded = json.loads(meta["fastensors.quantization"]).get("dtype") if meta and \
        "fastensors.quantization" in meta else None
    names = ckpt.offset_keys()
    by_module: Dict[str, List[str]] = {}
    for n in names:
        module, _, suffix = n.rpartition(".")
        if suffix in _ct_layout.QUANTIZED_SUFFIXES or suffix == "weight":
            by_module.setdefault(module, []).append(suffix)
    schemes = {}
    for module, suffixes in by_module.items():
        w = f"{module}.weight"
        code = ckpt.tensor_info(w).dtype if w in ckpt else None
        s = _ct_layout.scheme_of_parts(suffixes, code, bits)
        if s is not None:
            if s not in ("nf4", "fp8_e4m3", "int8-naive") and bits not in (2, 4, 8):
                raise NotAQuantizedModel(f"{src!r}: module {module!r} is packed but the bit width is unknown or "
                                         f"unsupported ({bits}); config.json's quantization_config names it")
            schemes[module] = s
    if not schemes:
        ckpt.close()
        raise NotAQuantizedModel(f"{src!r} holds no quantized weights fastensors reads "
                                 "(compressed-tensors pack/float/int-quantized, or fastensors NF4)")
    m = _Model()
    m.config = cfg
    m.directory = ckpt.directory if from_dir else None
    m.exclude = [os.path.basename(f) for f in ckpt.files] + ([os.path.basename(ckpt.index_path)]
                                                             if ckpt.index_path else [])
    m.infos = []
    plan: Dict[str, Tuple[str, Optional[str]]] = {}  # output name -> (module or source, scheme)
    for n in names:
        module, _, suffix = n.rpartition(".")
        if module in schemes:
            if f"{module}.weight" in plan:
                continue
            s = schemes[module]
            if s == "nf4":
                code = recorded or "F32"
                shape = tuple(int(d) for d in ckpt.get_tensor(f"{module}.weight_shape"))
            else:
                code = ckpt.tensor_info(f"{module}.weight_scale").dtype
                if s in ("fp8_e4m3", "int8-naive"):
                    shape = tuple(ckpt.tensor_info(f"{module}.weight").shape)
                else:
                    shape = tuple(int(d) for d in ckpt.get_tensor(f"{module}.weight_shape"))
            out = dtype or code
            if out not in FLOAT_OUT:
                out = "F32"
            m.infos.append((f"{module}.weight", out, shape))
            plan[f"{module}.weight"] = (module, s)
        else:
            info = ckpt.tensor_info(n)
            m.infos.append((n, info.dtype, tuple(info.shape)))
            plan[n] = (n, None)
    codes = {n: c for n, c, _ in m.infos}

    def get(name: str) -> np.ndarray:
        src_name, s = plan[name]
        if s is None:
            return ckpt.get_tensor(src_name)

        def part(suffix: str):
            key = f"{src_name}.{suffix}"
            return ckpt.get_tensor(key) if key in ckpt else None

        try:
            dense = _ct_layout.dequantize_parts(s, part, bits)
        except ValueError as e:
            raise NotAQuantizedModel(f"{src!r}: module {src_name!r}: {e}") from None
        return dense.astype(NUMPY[codes[name]]) if codes[name] != "F32" else dense

    m.get = get
    return m, ckpt


def dequantize_model(src: PathLike, dst: PathLike, *, dtype=None, max_shard_size: SizeLike = MAX_SHARD_SIZE,
                     overwrite: bool = False, durable: Optional[bool] = None) -> List[str]:
    """Write the dense checkpoint of the quantized model at ``src`` into the
    directory ``dst`` (shards + index as ``save_sharded`` writes them,
    config.json without ``quantization_config``, the other files copied).
    ``dtype`` ("bf16", "F32", ...) is the dtype of the dequantized weights
    (default: the source's). Returns the files written."""
    src, dst = os.fspath(src), os.fspath(dst)
    target = None
    if dtype is not None:
        target = dtype_code(dtype)
        if target not in FLOAT_OUT:
            raise InvalidArgument(f"dequantized weights are F32, F16 or BF16, not {target}")
    if not os.path.exists(src):
        raise NotAQuantizedModel(f"no model at {src!r}: no such file or directory")
    kind, path = _find(src)
    handle = None
    if kind == "safetensors":
        model, handle = _from_safetensors(path, target)
    else:
        model = _from_single(kind, path, target)
    try:
        _check_destination(src, dst, overwrite)
        entries = [Entry(n, _nbytes(c, s), None) for n, c, s in model.infos]
        plan = plan_shards(entries, max_shard_size)
        specs_of = {n: (n, c, list(s), None, _nbytes(c, s)) for n, c, s in model.infos}

        def write_shard(path: str, names: List[str], meta: Dict[str, str]) -> None:
            holder: list = []

            def fill(index: int):
                holder.clear()
                name = names[index]
                arr = np.ascontiguousarray(model.get(name))
                holder.append(arr)
                return _serialize.byte_view(arr)

            _serialize.write_specs_streaming([specs_of[n] for n in names], path, meta, False, fill)

        companions = {}
        from_dir = os.path.isdir(src)
        if from_dir and model.directory is not None:
            companions = companion_files(model.directory, model.exclude + ["config.json"])
        if model.config is not None:
            cfg = {k: v for k, v in model.config.items() if k != "quantization_config"}
            companions["config.json"] = json_companion(cfg)
        write_planned(dst, plan, write_shard, filename_pattern="model{suffix}.safetensors", metadata=None,
                      total_parameters=None, durable=_serialize.resolve_durable(durable), companions=companions,
                      extra_stale=["model{suffix}.gguf", "model{suffix}.parquet"], max_workers=1)
    finally:
        if handle is not None:
            handle.close()
    return list(plan.filename_to_tensors) + ([plan.index_file] if plan.index_file else []) + sorted(companions)


def _nbytes(code: str, shape) -> int:
    from ..format.dtypes import nbytes_of

    return nbytes_of(code, shape)
