"""Hostile sizes: offsets past 2^63, dimensions whose products overflow,
zero-sized tensors in huge counts, a header at the 100,000,000-byte limit with
a million tensors. Each gives a typed error or the right result, with the
reference package as the oracle of which; no timing is asserted (the figures
are in docs/security.md, from bench/bench_hostile_header.py)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors

import fastensors as fst
import fastensors.numpy as fnp
from conftest import BACKENDS, write_bytes

U64_MAX = 2**64 - 1


def file_of(header, data: bytes = b"") -> bytes:
    raw = (header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def T(dtype, shape, offsets):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


CASES = [
    ("end-past-2^63", {"a": T("U8", [2**63 + 8], [0, 2**63 + 8])}, b"\0" * 4, fst.SizeOverflow),
    ("end-near-2^60", {"a": T("U8", [2**60 + 1], [0, 2**60 + 1])}, b"\0" * 4, fst.TruncatedData),
    ("start-past-2^63", {"a": T("U8", [0], [2**63, 2**63])}, b"", fst.OffsetsGap),
    ("start-u64-max", {"a": T("U8", [0], [U64_MAX, U64_MAX])}, b"", fst.OffsetsGap),
    ("second-starts-at-u64-max", {"a": T("U8", [4], [0, 4]), "b": T("U8", [1], [U64_MAX, 0])}, b"\0" * 4,
     fst.OffsetsBackwards),
    ("bits-overflow-f64", {"a": T("F64", [2**61], [0, 4])}, b"\0" * 4, fst.SizeOverflow),
    ("dims-overflow-before-zero", {"a": T("F32", [U64_MAX, 2, 0], [0, 0])}, b"", fst.SizeOverflow),
    ("zero-then-u64-max", {"a": T("F32", [0, U64_MAX], [0, 0])}, b"", None),
    ("u64-max-then-zero", {"a": T("BF16", [U64_MAX, 0], [0, 0])}, b"", None),
    ("many-dims-of-one", {"a": T("F32", [1] * 1000 + [2], [0, 8])}, b"\0" * 8, None),
]


@pytest.mark.parametrize("header,data,error", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_headers_agree_with_the_reference(tmp_path, header, data, error):
    content = file_of(header, data)
    if error is None:
        want = safetensors.deserialize(content)
        got = fst.deserialize(content)
        assert [(n, t["shape"], t["dtype"], bytes(t["data"])) for n, t in got] == [
            (n, t["shape"], t["dtype"], bytes(t["data"])) for n, t in want
        ]
        path = write_bytes(tmp_path / "ok.safetensors", content)
        for backend in BACKENDS:
            with fst.safe_open(path, "np", backend=backend) as f:
                for name, t in want:
                    assert list(f.tensor_info(name).shape) == t["shape"]
                    if max(t["shape"]) < 2**63 and len(t["shape"]) <= 64:
                        assert f.get_tensor(name).nbytes == len(t["data"])
                    else:  # valid in the file, too large for an array: a typed error
                        with pytest.raises(fst.InvalidShape):
                            f.get_tensor(name)
        return
    with pytest.raises(safetensors.SafetensorError):
        safetensors.deserialize(content)
    with pytest.raises(error):
        fst.deserialize(content)
    path = write_bytes(tmp_path / "bad.safetensors", content)
    for backend in BACKENDS:
        with pytest.raises(error):
            fst.safe_open(path, "np", backend=backend)


def test_a_hundred_thousand_zero_sized_tensors(tmp_path):
    n = 100_000
    header = {f"z{i}": T("F16", [0, 3, i % 5], [0, 0]) for i in range(n)}
    header["w"] = T("F32", [2], [0, 8])
    path = write_bytes(tmp_path / "zeros.safetensors", file_of(header, np.float32([1.5, -2]).tobytes()))
    with fst.safe_open(path, "np") as f:
        assert len(f.keys()) == n + 1
        assert f.get_tensor("z99999").shape == (0, 3, 4)
        assert f.get_tensor("z99999", dtype="f32").dtype == np.float32
        assert f.get_tensor("w").tolist() == [1.5, -2.0]
    loaded = fnp.load_file(path)
    assert sum(a.size for a in loaded.values()) == 2


def hostile_header(count: int, limit: int = 100_000_000) -> bytes:
    """Exactly `limit` bytes of header: `count` zero-sized tensors with names
    padded to fill it (then space padding, which the format allows)."""
    entry = '"{}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
    width = (limit - 2) // count - (len(entry.format("")) + 1)
    body = ("{" + ",".join(entry.format(f"{i:0{width}d}") for i in range(count)) + "}").encode()
    assert len(body) <= limit
    return body + b" " * (limit - len(body))


@pytest.mark.slow
def test_a_header_at_the_limit_with_a_million_tensors(tmp_path):
    header = hostile_header(1_000_000)
    path = tmp_path / "hostile.safetensors"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
    del header
    name = f"{999_999:047d}"
    for backend in BACKENDS:
        with fst.safe_open(path, "np", backend=backend) as f:
            keys = f.keys()
            assert len(keys) == 1_000_000 and keys[-1] == name
            assert f.tensor_info(name) == fst.TensorInfo("F32", (0,), (0, 0))
            assert f.get_tensor(name).shape == (0,)
    # One byte more than the limit is refused before anything is parsed.
    with open(path, "r+b") as fh:
        fh.write(struct.pack("<Q", 100_000_001))
        fh.seek(0, 2)
        fh.write(b" ")
    with pytest.raises(fst.HeaderTooLarge):
        fst.safe_open(path, "np")
