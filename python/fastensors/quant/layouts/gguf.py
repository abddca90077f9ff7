"""Writing and reading back ``model.gguf`` with the ``gguf`` package.

Quantized weights are GGML blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, bit-exact
with ``gguf.quants``; Q2_K..Q6_K, byte-identical with ggml) of our kernels; other tensors keep
their dtype (F32, F16, BF16, F64, I8-I64). Tensor names are the source's.
Metadata: ``general.architecture`` (config.json's ``model_type``), each
scalar or list config key as ``hf.config.<key>``, the whole config.json as
``hf.config_json`` and each tensor's source dtype and shape in
``fastensors.tensors`` (JSON), so ``dequantize`` restores names, dtypes and config.json. Tensors are
written one at a time (header and tensor infos first)."""

from __future__ import annotations

import json
import struct
from typing import Dict, Optional

import numpy as np

from ...errors import InvalidArgument, NotAQuantizedModel

_GGML_TYPES = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
               "q2_k": "Q2_K", "q3_k": "Q3_K", "q4_k": "Q4_K", "q5_k": "Q5_K", "q6_k": "Q6_K"}
_DENSE_TYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F64", "I8": "I8", "I16": "I16",
                "I32": "I32", "I64": "I64"}


def _add_config(writer, cfg: Optional[dict]) -> None:
    if not cfg:
        return
    writer.add_string("hf.config_json", json.dumps(cfg, sort_keys=True))
    for key, value in sorted(cfg.items()):
        k = f"hf.config.{key}"
        if isinstance(value, bool):
            writer.add_bool(k, value)
        elif isinstance(value, int) and -(2 ** 63) <= value < 2 ** 63:
            writer.add_int64(k, value)
        elif isinstance(value, float):
            writer.add_float64(k, value)
        elif isinstance(value, str):
            writer.add_string(k, value)
        elif isinstance(value, list) and value and all(isinstance(v, (int, float, str)) and not isinstance(v, bool)
                                                       for v in value):
            if len({type(v) for v in value}) == 1:
                writer.add_array(k, value)


def write_gguf(path: str, source, items, scheme, quantizer, cfg: Optional[dict], bar) -> None:
    import gguf

    arch = str((cfg or {}).get("model_type") or "unknown")
    writer = gguf.GGUFWriter(path, arch=arch)
    try:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_config(writer, cfg)
        writer.add_string("fastensors.tensors", json.dumps({it.name: [it.code, list(it.shape)] for it in items}))
        writer.add_string("fastensors.scheme", scheme.scheme)
        for it in items:
            if len(it.name) >= 64:  # GGML_MAX_NAME
                raise InvalidArgument(f"tensor {it.name!r}: GGUF tensor names are at most 63 bytes")
            if it.quantize:
                qtype = gguf.GGMLQuantizationType[_GGML_TYPES[scheme.scheme]]
                rows, cols = it.shape
                block, size = gguf.GGML_QUANT_SIZES[qtype]
                row_bytes = cols // block * size
                writer.add_tensor_info(it.name, (rows, row_bytes), np.dtype(np.uint8), rows * row_bytes, qtype)
                quantizer.reports[it.name].bytes_out = rows * row_bytes
            else:
                if it.code not in _DENSE_TYPES:
                    raise InvalidArgument(f"tensor {it.name!r} is {it.code}, which GGUF cannot store "
                                          f"(it takes {', '.join(_DENSE_TYPES)})")
                qtype = gguf.GGMLQuantizationType[_DENSE_TYPES[it.code]]
                shape = tuple(it.shape) if it.shape else (1,)
                byte_shape = shape[:-1] + (shape[-1] * gguf.GGML_QUANT_SIZES[qtype][1],)
                writer.add_tensor_info(it.name, byte_shape, np.dtype(np.uint8), it.nbytes, qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for it in items:
            if it.quantize:
                data = quantizer(it.name).data
            else:
                data = np.ascontiguousarray(source.read(it.name)).reshape(-1).view(np.uint8)
            writer.write_tensor_data(data)
            bar.tensor_done(it.name, it.nbytes)
    finally:
        writer.close()


def read_gguf(path: str):
    """(config dict or None, [(name, source dtype, shape, quantized)], get(name)): get
    returns the dense F32 reconstruction of a quantized tensor, the stored
    array otherwise."""
    import gguf

    from ..kernels import QuantizedTensor, dequantize

    try:
        reader = gguf.GGUFReader(path)
    # a truncated or corrupted file surfaces as whichever lookup failed
    except (ValueError, OSError, IndexError, KeyError, OverflowError, struct.error) as e:
        raise NotAQuantizedModel(f"{path!r} is not a GGUF file gguf can read: {e}") from None
    fields = reader.fields

    def text(key: str) -> Optional[str]:
        f = fields.get(key)
        return None if f is None else bytes(f.parts[f.data[0]]).decode("utf-8")

    cfg_text = text("hf.config_json")
    cfg = json.loads(cfg_text) if cfg_text else None
    known: Dict[str, list] = json.loads(text("fastensors.tensors") or "{}")
    by_type = {getattr(gguf.GGMLQuantizationType, v): k for k, v in _GGML_TYPES.items()}
    codes = {getattr(gguf.GGMLQuantizationType, v): k for k, v in _DENSE_TYPES.items()}
    tensors = {t.name: t for t in reader.tensors}
    infos = []
    for t in reader.tensors:
        ggml_shape = [int(d) for d in reversed(t.shape.tolist())]
        if t.name in known:
            code, shape = known[t.name]
        elif t.tensor_type in codes:
            code, shape = codes[t.tensor_type], ggml_shape
        elif t.tensor_type in by_type:
            code, shape = "F32", ggml_shape
        else:
            raise NotAQuantizedModel(f"{path!r}: tensor {t.name!r} has GGML type {t.tensor_type.name}, which "
                                     "fastensors does not read")
        infos.append((t.name, code, tuple(shape), t.tensor_type in by_type))
    shapes = {i[0]: i[2] for i in infos}

    def get(name: str) -> np.ndarray:
        t = tensors[name]
        shape = shapes[name]
        scheme = by_type.get(t.tensor_type)
        raw = np.ascontiguousarray(t.data)
        if scheme is not None:
            rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
            qt = QuantizedTensor(scheme, shape, np.float32, raw.view(np.uint8).reshape(rows, -1), None, None,
                                 256 if scheme.endswith("_k") else 32)
            return dequantize(qt)
        code = codes[t.tensor_type]
        from ...format.dtypes import NUMPY

        return raw.view(np.uint8).view(NUMPY[code]).reshape(shape)

    return cfg, infos, get
