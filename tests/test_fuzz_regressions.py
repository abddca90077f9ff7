"""Replays the fuzzers' findings (cpp/fuzz/regressions) and the parser seed
corpora through the Python API: ``deserialize`` and ``safe_open`` with both
backends either raise a SafetensorError or read every tensor, and agree."""

from __future__ import annotations

import pathlib

import pytest

import fastensors as fst
from conftest import BACKENDS

FUZZ = pathlib.Path(__file__).resolve().parents[1] / "cpp" / "fuzz"
INPUTS = sorted(
    p
    for sub in ("regressions", "corpus/header", "corpus/files", "corpus/malformed")
    for p in (FUZZ / sub).iterdir()
    if p.is_file() and p.suffix != ".md"
)


def outcome(read):
    try:
        return "ok", read()
    except fst.SafetensorError as exc:
        return "error", type(exc).__name__


def test_the_corpus_is_there():
    assert len(list((FUZZ / "regressions").iterdir())) >= 2
    assert len(INPUTS) > 90


@pytest.mark.parametrize("path", INPUTS, ids=[f"{p.parent.name}/{p.name}" for p in INPUTS])
def test_input_is_rejected_or_read(path):
    def data_key(code, data):  # packed sub-byte tensors come back unpacked: compare sizes
        return bytes(data) if code not in ("F4", "F6_E2M3", "F6_E3M2") else len(data)

    def from_bytes():
        return [
            (name, t["dtype"], t["shape"], data_key(t["dtype"], t["data"]))
            for name, t in fst.deserialize(path.read_bytes())
        ]

    want = outcome(from_bytes)
    for backend in BACKENDS:

        def from_file():
            with fst.safe_open(path, "np", backend=backend) as f:
                out = []
                for name in f.offset_keys():
                    info = f.tensor_info(name)
                    arr = f.get_tensor(name)
                    assert arr.shape == info.shape
                    data = arr.tobytes() if info.dtype not in ("F4", "F6_E2M3", "F6_E3M2") else b"\0" * info.nbytes
                    out.append((name, info.dtype, list(info.shape), data_key(info.dtype, data)))
                return out

        assert outcome(from_file) == want, backend
