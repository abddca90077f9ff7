"""Regenerates the committed seed corpus of the fuzzers:

- corpus/files: a valid file of every dtype (written by fastensors'
  serializer; several shapes, metadata, a scalar, zero-sized tensors);
- corpus/malformed: every malformed file of tests/test_malformed.py;
- corpus/fuzz_slice, corpus/fuzz_convert_isa, corpus/fuzz_quant_isa: inputs
  that reach each pair, kernel and request kind of those targets.

Run from the repository root: ``python cpp/fuzz/make_corpus.py``. The output
is deterministic, so a rerun changes nothing unless the inputs did.
"""

from __future__ import annotations

import ctypes
import hashlib
import pathlib
import random
import shutil
import struct
import sys

import fastensors as fst
from fastensors import _core

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "cpp" / "fuzz" / "corpus"


def file_of(tensors: dict, metadata=None) -> bytes:
    """A valid file holding {name: (dtype, shape, bytes)}."""
    keep = {name: ctypes.create_string_buffer(raw, len(raw) or 1) for name, (_, _, raw) in tensors.items()}
    specs = {
        name: fst.TensorSpec(dtype=dtype, shape=shape, data_ptr=ctypes.addressof(keep[name]), data_len=len(raw))
        for name, (dtype, shape, raw) in tensors.items()
    }
    return fst.serialize(specs, metadata)


def pattern(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def valid_files() -> dict:
    out = {}
    for i, dtype in enumerate(_core.dtype_names()):
        bits = _core.dtype_bits(dtype)
        shape = [2, 4] if bits < 8 else [3, 2]
        nbytes = 2 * 4 * bits // 8 if bits < 8 else 6 * bits // 8
        out[f"{dtype.lower()}.safetensors"] = file_of(
            {"w": (dtype, shape, pattern(nbytes, i)), "empty": (dtype, [0, 3], b"")}, {"format": "pt"}
        )
    # Every dtype in one file: the writer's ordering and alignment.
    everything = {}
    for i, dtype in enumerate(_core.dtype_names()):
        bits = _core.dtype_bits(dtype)
        everything[f"t.{dtype.lower()}"] = (dtype, [8], pattern(8 * bits // 8, 100 + i))
    out["every_dtype.safetensors"] = file_of(everything, {"format": "np", "note": "seed"})
    out["scalar.safetensors"] = file_of({"s": ("F64", [], pattern(8, 7))})
    out["zero_sized_many.safetensors"] = file_of({f"z{i}": ("F32", [0], b"") for i in range(64)})
    out["no_tensors.safetensors"] = file_of({}, {"only": "metadata"})
    return out


def malformed_files() -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import test_malformed  # noqa: E402  (the corpus lives with its test)

    return {case_id: content for case_id, content, _cls, _tensor in test_malformed.CORPUS}


def slice_inputs() -> dict:
    # The target reads: dtype index, rank, dims, bytes, a second tensor's size,
    # then requests; FuzzedDataProvider takes integers from the end of the
    # input, so random tails make varied requests.
    return {f"s{i:02d}": pattern(64 + 16 * (i % 8), 1000 + i) for i in range(32)}


def convert_inputs() -> dict:
    # Byte 0 picks the pair (every pair is reached), byte 1 alignment/streaming.
    return {f"pair{p:03d}": bytes([p, (p * 7) & 0x7F]) + pattern(64 + p % 64, 2000 + p) for p in range(256)}


def quant_inputs() -> dict:
    out = {}
    rng = random.Random(3000)
    for pick in range(12):
        floats = struct.pack("<256f", *(rng.gauss(0.0, 2.0) for _ in range(256)))
        head = bytes([pick])
        if pick == 11:  # the codes kernel: range byte, scale, zero-point byte
            head += bytes([0x81]) + struct.pack("<f", 0.05) + bytes([3, 0, 0, 0])
        out[f"kernel{pick:02d}"] = head + floats
    return out


def write(directory: str, files: dict) -> None:
    path = OUT / directory
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for name, content in files.items():
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        (path / safe).write_bytes(content)


def main() -> None:
    write("files", valid_files())
    write("malformed", malformed_files())
    write("fuzz_slice", slice_inputs())
    write("fuzz_convert_isa", convert_inputs())
    write("fuzz_quant_isa", quant_inputs())
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(OUT.rglob("*")) if p.is_file())).hexdigest()
    print(f"{sum(1 for p in OUT.rglob('*') if p.is_file())} files, {total} bytes, sha256 {digest[:16]}")


if __name__ == "__main__":
    main()
