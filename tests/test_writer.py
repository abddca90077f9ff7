"""The writer: atomic replacement, no leftovers on failure, durability
switches and argument checks."""

from __future__ import annotations

import errno
import os
import textwrap

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy as ref_np

import fastensors
import fastensors.numpy as fst_np
from conftest import run_python, same_array


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def test_save_file_replaces_existing(tmp_path):
    p = tmp_path / "m.safetensors"
    fst_np.save_file({"old": np.zeros((100, 100), np.float64)}, p)
    inode_before = os.stat(p).st_ino
    new = {"new": np.arange(6, dtype=np.int32)}
    fst_np.save_file(new, p)
    assert p.read_bytes() == ref_np.save(new)
    assert os.stat(p).st_ino != inode_before  # a new file renamed over the old one
    assert _leftovers(tmp_path) == []
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.safetensors"]


def test_open_readers_keep_old_contents(tmp_path):
    p = tmp_path / "m.safetensors"
    fst_np.save_file({"a": np.full(1000, 1.0, np.float32)}, p)
    with fastensors.safe_open(p, "np") as f:
        fst_np.save_file({"a": np.full(1000, 2.0, np.float32)}, p)
        assert (f.get_tensor("a") == 1.0).all()  # the old inode, still mapped
    with fastensors.safe_open(p, "np", backend="pread") as f:
        assert (f.get_tensor("a") == 2.0).all()


def _prepare(tmp_path):
    p = tmp_path / "keep.safetensors"
    fst_np.save_file({"keep": np.arange(10, dtype=np.int64)}, p)
    return p, p.read_bytes()


def test_validation_failure_leaves_target_untouched(tmp_path):
    p, before = _prepare(tmp_path)
    bad_inputs = [
        ({"f4": np.zeros(3, ml_dtypes.float4_e2m1fn)}, ValueError),  # odd F4 count
        ({"__metadata__": np.zeros(1, np.float32)}, fastensors.InvalidArgument),
        ({"a": np.zeros(1, np.float32)}, TypeError, {"k": 1}),
        ({"a": np.zeros(1, np.float32)}, TypeError, {2: "v"}),
        ({"a": [1, 2, 3]}, fastensors.SafetensorError),
        ({"o": np.zeros(2, object)}, fastensors.UnknownDtype),
        ({"c": np.zeros(2, np.complex128)}, fastensors.UnknownDtype),
    ]
    for row in bad_inputs:
        tensors, exc = row[0], row[1]
        meta = row[2] if len(row) > 2 else None
        with pytest.raises(exc):
            fst_np.save_file(tensors, p, metadata=meta)
        assert p.read_bytes() == before
        assert _leftovers(tmp_path) == []


def test_serialize_file_size_mismatch_leaves_nothing(tmp_path):
    p, before = _prepare(tmp_path)
    a = np.zeros(3, np.float32)
    spec = fastensors.TensorSpec(dtype="F32", shape=[4], data_ptr=a.ctypes.data, data_len=a.nbytes)
    with pytest.raises(fastensors.SizeMismatch):
        fastensors.serialize_file({"a": spec}, p)
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_torch_validation_failure_leaves_target_untouched(tmp_path):
    torch = pytest.importorskip("torch")
    import fastensors.torch as fst_pt

    p, before = _prepare(tmp_path)
    base = torch.zeros(8)
    for bad, exc in (({"t": torch.zeros(3, 4).t()}, ValueError), ({"a": base, "b": base}, RuntimeError)):
        with pytest.raises(exc):
            fst_pt.save_file(bad, p)
        assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_write_failure_midway_leaves_target_and_no_temp(tmp_path):
    """A write that fails after the temporary file exists (the file size
    limit is hit) removes the temporary file and keeps the old target."""
    p, before = _prepare(tmp_path)
    code = textwrap.dedent(
        f"""
        import errno, os, resource, signal
        import numpy as np
        import fastensors, fastensors.numpy as fnp
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        for durable in (True, False):
            try:
                fnp.save_file({{"big": np.ones(1 << 20, np.float32)}}, {str(p)!r}, durable=durable)
            except fastensors.SafetensorError as e:
                assert isinstance(e, OSError), type(e)
                assert e.errno == errno.EFBIG, e.errno
            else:
                raise SystemExit("the write should have failed")
        print("failed as expected")
        """
    )
    proc = run_python(code)
    assert "failed as expected" in proc.stdout
    assert p.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_unwritable_directory(tmp_path):
    # root ignores permission bits, but not sysfs's refusal to create files.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        with pytest.raises(PermissionError) as info:
            fst_np.save_file({"a": np.ones(2, np.float32)}, "/sys/kernel/x.safetensors")
        assert isinstance(info.value, fastensors.SafetensorError)
        assert info.value.errno == errno.EACCES
        return
    d = tmp_path / "ro"
    d.mkdir()
    p = d / "x.safetensors"
    fst_np.save_file({"a": np.ones(2, np.float32)}, p)
    before = p.read_bytes()
    d.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            fst_np.save_file({"a": np.zeros(2, np.float32)}, p)
    finally:
        d.chmod(0o700)
    assert p.read_bytes() == before
    assert _leftovers(d) == []


def test_open_a_directory_is_a_directory_error(tmp_path):
    with pytest.raises(IsADirectoryError) as info:
        fastensors.safe_open(tmp_path, "np")
    assert isinstance(info.value, fastensors.SafetensorError)


def test_target_in_a_file_not_a_directory(tmp_path):
    f = tmp_path / "plain"
    f.write_bytes(b"x")
    with pytest.raises(fastensors.SafetensorError) as ei:
        fst_np.save_file({"a": np.ones(1, np.int8)}, f / "x.safetensors")
    assert isinstance(ei.value, OSError)


def test_target_is_a_directory(tmp_path):
    d = tmp_path / "dir.safetensors"
    d.mkdir()
    with pytest.raises(fastensors.SafetensorError) as ei:
        fst_np.save_file({"a": np.ones(1, np.int8)}, d)
    assert isinstance(ei.value, IsADirectoryError) or isinstance(ei.value, OSError)
    assert d.is_dir()
    assert _leftovers(tmp_path) == []


def test_missing_directory(tmp_path):
    target = tmp_path / "no" / "such" / "dir" / "x.safetensors"
    with pytest.raises(FileNotFoundError) as ei:
        fst_np.save_file({"a": np.ones(2, np.float32)}, target)
    assert isinstance(ei.value, fastensors.SafetensorError)
    with pytest.raises(FileNotFoundError):
        fastensors.serialize_file({}, target)


def test_durable_false(tmp_path):
    p = tmp_path / "fast.safetensors"
    tensors = {"a": np.arange(50, dtype=np.float16)}
    fst_np.save_file(tensors, p, durable=False)
    assert p.read_bytes() == ref_np.save(tensors)
    fst_np.save_file(tensors, p, durable=True)
    assert p.read_bytes() == ref_np.save(tensors)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("value,expected", [("0", False), ("false", False), ("off", False), ("1", True), ("", True)])
def test_durable_env(tmp_path, value, expected):
    p = tmp_path / "env.safetensors"
    code = textwrap.dedent(
        f"""
        import numpy as np
        import fastensors._core as core, fastensors.numpy as fnp
        assert core.default_durable() is {expected}, core.default_durable()
        fnp.save_file({{"a": np.arange(5, dtype=np.int32)}}, {str(p)!r})
        assert fnp.load_file({str(p)!r})["a"].tolist() == [0, 1, 2, 3, 4]
        """
    )
    run_python(code, env={"FASTENSORS_DURABLE": value})
    assert same_array(fst_np.load_file(p)["a"], np.arange(5, dtype=np.int32))
    assert _leftovers(tmp_path) == []


def test_metadata_name_reserved():
    with pytest.raises(fastensors.InvalidArgument) as ei:
        fst_np.save({"__metadata__": np.zeros(1, np.float32)})
    assert isinstance(ei.value, ValueError)
    assert ei.value.tensor == "__metadata__"
    a = np.zeros(1, np.float32)
    spec = fastensors.TensorSpec(dtype="float32", shape=[1], data_ptr=a.ctypes.data, data_len=4)
    with pytest.raises(fastensors.InvalidArgument):
        fastensors.serialize({"__metadata__": spec})


@pytest.mark.parametrize("bad", [{"a": 1}, {"a": None}, {"a": b"bytes"}, {1: "a"}, {None: "a"}, ["a", "b"], "ab"])
def test_metadata_must_be_str_to_str(bad, tmp_path):
    with pytest.raises(TypeError):
        fst_np.save({"x": np.zeros(1, np.float32)}, metadata=bad)
    with pytest.raises(TypeError):
        fst_np.save_file({"x": np.zeros(1, np.float32)}, tmp_path / "m.safetensors", metadata=bad)
    assert not (tmp_path / "m.safetensors").exists()


def test_non_str_tensor_names():
    a = np.zeros(1, np.float32)
    spec = fastensors.TensorSpec(dtype="float32", shape=[1], data_ptr=a.ctypes.data, data_len=4)
    with pytest.raises(TypeError):
        fastensors.serialize({1: spec})
    with pytest.raises(TypeError):
        fastensors.serialize({"a": "not a spec"})


def test_large_metadata_and_many_tensors_round_trip(tmp_path):
    tensors = {f"t{i:04d}": np.full((i % 5,), i, np.int32) for i in range(2000)}
    meta = {"blob": "x" * 100_000, "json": '{"a": [1, 2]}'}
    p = tmp_path / "many.safetensors"
    fst_np.save_file(tensors, p, metadata=meta)
    with fastensors.safe_open(p, "np") as f:
        assert f.metadata() == meta
        assert len(f.keys()) == 2000
        assert same_array(f.get_tensor("t1234"), tensors["t1234"])
    one_key = {"blob": meta["blob"]}
    fst_np.save_file(tensors, p, metadata=one_key)
    assert p.read_bytes() == ref_np.save(tensors, metadata=one_key)


def test_names_and_metadata_must_be_encodable():
    a = {"ok": np.zeros(1, np.float32)}
    for bad_names, meta in (({"\udcff": a["ok"]}, None), (a, {"\udcff": "v"}), (a, {"k": "\ud800"})):
        with pytest.raises(UnicodeEncodeError):
            fst_np.save(bad_names, metadata=meta)
        with pytest.raises(UnicodeEncodeError):
            ref_np.save(bad_names, metadata=meta)
    with pytest.raises(TypeError):
        fst_np.save({1: a["ok"]})
