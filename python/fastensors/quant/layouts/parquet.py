"""Writing and reading back ``model.parquet`` with pyarrow: one row per
tensor, one row group per row, so tensors stream in and out one at a time.

Columns: ``name``, ``shape``, ``dtype`` (the source's safetensors dtype),
``scheme`` ("dense" for a tensor kept as is), ``bits``, ``group_size``,
``symmetric``, ``granularity`` (fp8), ``scales`` / ``scales_dtype`` /
``scales_shape``, ``zero_points`` / ``zero_points_shape`` (int8, unpacked),
``data`` / ``data_dtype`` / ``data_shape`` (the kernels' packed bytes, or a
dense tensor's bytes), ``nbytes`` (stored bytes) and the quality metrics
``cosine``, ``sqnr_db``, ``rmse``, ``max_abs_err`` (null for dense tensors).
The schema metadata holds config.json (``hf.config_json``)."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np

from ...errors import InvalidArgument, NotAQuantizedModel

_BITS = {"int8": 8, "int4": 4, "int2": 2, "nf4": 4, "fp8_e4m3": 8, "q8_0": 8, "q4_0": 4, "q4_1": 4, "q5_0": 5,
         "q5_1": 5}


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidArgument("parquet output needs pyarrow (pip install 'fastensors[arrow]')") from None
    return pa, pq


def schema():
    pa, _ = _pa()
    shape = pa.list_(pa.int64())
    return pa.schema([
        ("name", pa.string()), ("shape", shape), ("dtype", pa.string()), ("scheme", pa.string()),
        ("bits", pa.int32()), ("group_size", pa.int32()), ("symmetric", pa.bool_()), ("granularity", pa.string()),
        ("scales", pa.large_binary()), ("scales_dtype", pa.string()), ("scales_shape", shape),
        ("zero_points", pa.large_binary()), ("zero_points_shape", shape),
        ("data", pa.large_binary()), ("data_dtype", pa.string()), ("data_shape", shape), ("nbytes", pa.int64()),
        ("cosine", pa.float64()), ("sqnr_db", pa.float64()), ("rmse", pa.float64()), ("max_abs_err", pa.float64()),
    ])


def _np_code(a: np.ndarray) -> str:
    from ...format.dtypes import code_from_numpy

    return code_from_numpy(a.dtype)


def write_parquet(path: str, source, items, scheme, quantizer, cfg: Optional[dict], bar) -> None:
    pa, pq = _pa()
    sch = schema()
    meta = {b"fastensors.scheme": scheme.scheme.encode()}
    if cfg is not None:
        meta[b"hf.config_json"] = json.dumps(cfg, sort_keys=True).encode()
    sch = sch.with_metadata(meta)
    with pq.ParquetWriter(path, sch, compression="none") as writer:
        for it in items:
            row = {k: None for k in sch.names}
            row.update(name=it.name, shape=list(it.shape), dtype=it.code)
            if it.quantize:
                qt = quantizer(it.name)
                rep = quantizer.reports[it.name]
                data = np.ascontiguousarray(qt.data)
                row.update(scheme=qt.scheme, bits=_BITS[qt.scheme], group_size=qt.group_size,
                           symmetric=None if qt.scheme not in ("int8", "int4", "int2") else qt.zero_points is None,
                           granularity=qt.granularity, data=data.tobytes(), data_dtype=_np_code(data),
                           data_shape=list(data.shape), cosine=rep.cosine, sqnr_db=rep.sqnr_db, rmse=rep.rmse,
                           max_abs_err=rep.max_abs_err)
                if qt.scales is not None:
                    sc = np.ascontiguousarray(qt.scales)
                    row.update(scales=sc.tobytes(), scales_dtype=_np_code(sc), scales_shape=list(sc.shape))
                if qt.zero_points is not None:
                    zp = np.ascontiguousarray(qt.zero_points)
                    row.update(zero_points=zp.tobytes(), zero_points_shape=list(zp.shape))
                row["nbytes"] = qt.nbytes
                rep.bytes_out = qt.nbytes
            else:
                arr = np.ascontiguousarray(source.read(it.name))
                row.update(scheme="dense", data=arr.reshape(-1).view(np.uint8).tobytes(), data_dtype=it.code,
                           data_shape=list(it.shape), nbytes=it.nbytes)
            writer.write_table(pa.Table.from_pylist([row], schema=sch))
            bar.tensor_done(it.name, it.nbytes)


def read_parquet(path: str):
    """(config dict or None, [(name, source dtype, shape, quantized)], get(name)): get
    returns the dense F32 reconstruction of a quantized row, the stored
    array otherwise. Each get reads one row group."""
    _pa_mod, pq = _pa()
    from ...format.dtypes import NUMPY
    from ..kernels import QuantizedTensor, dequantize

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a file that is not parquet
        raise NotAQuantizedModel(f"{path!r} is not a parquet file pyarrow can read: {e}") from None
    meta = pf.schema_arrow.metadata or {}
    if b"fastensors.scheme" not in meta:
        raise NotAQuantizedModel(f"{path!r} was not written by fastensors quantize (no fastensors.scheme metadata)")
    cfg = json.loads(meta[b"hf.config_json"]) if b"hf.config_json" in meta else None
    heads = pf.read(columns=["name", "dtype", "shape", "scheme"]).to_pylist()
    infos = [(h["name"], h["dtype"], tuple(h["shape"]), h["scheme"] != "dense") for h in heads]
    group = {h["name"]: g for g, h in enumerate(heads)}
    if pf.num_row_groups != len(heads):
        raise NotAQuantizedModel(f"{path!r}: expected one row group per tensor")

    def arr(buf, code, shape):
        return np.frombuffer(buf, dtype=NUMPY[code]).reshape(shape)

    def get(name: str) -> np.ndarray:
        row = pf.read_row_group(group[name]).to_pylist()[0]
        shape = tuple(row["shape"])
        if row["scheme"] == "dense":
            return arr(row["data"], row["data_dtype"], shape)
        data = arr(row["data"], row["data_dtype"], row["data_shape"])
        scales = None if row["scales"] is None else arr(row["scales"], row["scales_dtype"], row["scales_shape"])
        zps = None if row["zero_points"] is None else arr(row["zero_points"], "I8", row["zero_points_shape"])
        qt = QuantizedTensor(row["scheme"], shape, NUMPY[row["dtype"]], data, scales, zps, row["group_size"],
                             row["granularity"])
        return dequantize(qt)

    return cfg, infos, get
