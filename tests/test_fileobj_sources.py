"""safe_open over file objects (fastensors.sources): builtin files (their
descriptor is opened as the file), fsspec files, BytesIO and bare read/seek
objects (read by ranges), against the reference reading the same file; and
the reference's error texts for a missing file and out-of-range indices."""

from __future__ import annotations

import io

import numpy as np
import pytest
import safetensors
import safetensors.numpy as st_np

import fastensors
import fastensors.numpy as fst_np
from fastensors.sources import RangeFile

TENSORS = {
    "w": np.arange(600, dtype=np.float32).reshape(20, 30),
    "ids": np.arange(7, dtype=np.int64),
    "flag": np.array([True, False, True]),
}


@pytest.fixture()
def path(tmp_path):
    p = tmp_path / "m.safetensors"
    fst_np.save_file(TENSORS, p, metadata={"format": "np"})
    return p


class ReadSeekOnly:
    """Nothing but read and seek (no fileno, no name)."""

    def __init__(self, data: bytes, short: bool = False):
        self._b = io.BytesIO(data)
        self.short = short

    def read(self, n=-1):
        data = self._b.read(n)
        return data[:-1] if self.short and len(data) > 8 else data

    def seek(self, offset, whence=0):
        return self._b.seek(offset, whence)


def _same_as_reference(handle, path):
    with safetensors.safe_open(str(path), "np") as ref:
        assert handle.keys() == ref.keys()
        assert handle.metadata() == ref.metadata()
        for k in ref.keys():
            got, want = handle.get_tensor(k), ref.get_tensor(k)
            assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
        assert handle.get_slice("w")[3:7, 2].tobytes() == ref.get_slice("w")[3:7, 2].tobytes()


@pytest.mark.parametrize("mode", ["rb", "r"])
def test_builtin_file_is_opened_as_the_file(path, mode):
    with open(path, mode) as f:
        with fastensors._safe_open_handle(f, framework="np") as g:
            assert not isinstance(g._file, RangeFile)  # mapped, as a path
            _same_as_reference(g, path)


def test_fsspec_local_and_memory_files(path):
    fsspec = pytest.importorskip("fsspec")
    with fsspec.filesystem("file").open(str(path), "rb") as f, fastensors.safe_open(f, "np") as g:
        _same_as_reference(g, path)
    mem = fsspec.filesystem("memory")
    mem.pipe("/fastensors-test/m.safetensors", path.read_bytes())
    try:
        with mem.open("/fastensors-test/m.safetensors", "rb") as f, fastensors.safe_open(f, "np") as g:
            assert isinstance(g._file, RangeFile)
            _same_as_reference(g, path)
    finally:
        mem.rm("/fastensors-test", recursive=True)


@pytest.mark.parametrize("make", [io.BytesIO, ReadSeekOnly])
def test_objects_read_by_ranges(path, make):
    with fastensors.safe_open(make(path.read_bytes()), "np") as g:
        assert isinstance(g._file, RangeFile)
        _same_as_reference(g, path)
        assert g.get_tensor("w", dtype="bf16").shape == (20, 30)


def test_torch_framework_over_a_file_object(path):
    torch = pytest.importorskip("torch")
    with fastensors.safe_open(io.BytesIO(path.read_bytes()), "pt") as g:
        assert torch.equal(g.get_tensor("w"), torch.from_numpy(TENSORS["w"]))


def test_short_reads_are_errors_not_data(path):
    with pytest.raises(fastensors.FileChanged, match="changed since it was opened"):
        with fastensors.safe_open(ReadSeekOnly(path.read_bytes(), short=True), "np") as g:
            g.get_tensor("w")


def test_text_mode_object_without_descriptor(path):
    with pytest.raises(fastensors.InvalidArgument, match="text mode"):
        fastensors.safe_open(io.StringIO("x" * 100), "np")


def test_malformed_file_object_is_rejected_like_a_file(path):
    data = bytearray(path.read_bytes())
    data[8] = ord("[")  # the header is no longer an object
    with pytest.raises(safetensors.SafetensorError) as ref:
        st_np.load(bytes(data))
    with pytest.raises(fastensors.SafetensorError) as local:
        fastensors.safe_open(path.parent / "bad", "np") if (path.parent / "bad").write_bytes(bytes(data)) else None
    with pytest.raises(fastensors.SafetensorError) as got:
        fastensors.safe_open(io.BytesIO(bytes(data)), "np")
    assert type(got.value) is type(local.value)  # the same rule as for a file
    with pytest.raises(fastensors.HeaderTooSmall):
        fastensors.safe_open(io.BytesIO(b"\x01\x00"), "np")
    with pytest.raises(fastensors.InvalidHeaderLength):
        fastensors.safe_open(io.BytesIO((10 ** 6).to_bytes(8, "little") + b"{}"), "np")


def test_missing_file_text_is_the_reference_text(tmp_path):
    missing = str(tmp_path / "notafile")
    with pytest.raises(FileNotFoundError) as ref:
        safetensors.safe_open(missing, "np")
    for backend in ("mmap", "pread"):
        with pytest.raises(FileNotFoundError) as got:
            fastensors.safe_open(missing, "np", backend=backend)
        assert str(got.value) == str(ref.value) == f"No such file or directory: {missing}"
        assert got.value.errno == 2 and got.value.filename == missing


INDEXES = [np.s_[2:, -6], np.s_[2:, 20], np.s_[20], np.s_[-11], np.s_[..., 3], np.s_[..., -4], np.s_[1:3:1, 5],
           np.s_[::2, -6], np.s_[0, 0, 7]]


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_index_errors_have_the_reference_text(tmp_path, backend):
    p = tmp_path / "s.safetensors"
    fst_np.save_file({"a": np.zeros((10, 5, 3), np.float32)}, p)
    with safetensors.safe_open(str(p), "np") as ref, fastensors.safe_open(p, "np", backend=backend) as f:
        for idx in INDEXES:
            with pytest.raises(safetensors.SafetensorError) as want:
                ref.get_slice("a")[idx]
            with pytest.raises(fastensors.InvalidSliceIndex) as got:
                f.get_slice("a")[idx]
            assert str(got.value) == str(want.value), idx
            assert isinstance(got.value, IndexError)


def test_meta_tensor_text():
    torch = pytest.importorskip("torch")
    import fastensors.torch as fst_torch
    with pytest.raises(RuntimeError, match="Cannot copy out of meta tensor"):
        fst_torch.save({"m": torch.zeros(2, device="meta")})
