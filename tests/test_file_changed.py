"""A file truncated while it is open: fastensors' own reads, conversions,
copies and quantization from the mapping raise FileChanged (never SIGBUS),
whether this process or another one cut the file. Zero-copy views are the
caller's: reading one past the new end still gets SIGBUS (in a child here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastensors as fst
import fastensors.numpy as fnp
import fastensors.quant as fq


@pytest.fixture()
def big(tmp_path):
    """A file with a 256 KiB F32 tensor and a small one after it."""
    p = tmp_path / "cut.safetensors"
    w = (np.arange(64 * 1024, dtype=np.float32) % 97 * 0.25 - 3.0).reshape(64, 1024)
    fnp.save_file({"w": w, "z": np.ones(3, np.float32)}, p)
    return p, w


def _cut(path, keep: int, *, other_process: bool) -> None:
    if other_process:
        subprocess.run([sys.executable, "-c", f"import os; os.truncate({os.fspath(path)!r}, {keep})"], check=True)
    else:
        os.truncate(path, keep)


@pytest.mark.parametrize("other_process", [False, True], ids=["same-process", "other-process"])
def test_reads_from_a_truncated_mapping_raise_file_changed(big, other_process):
    path, w = big
    with fst.safe_open(path, "np") as f:
        view = f.get_tensor("w")  # taken before the cut: zero-copy
        assert np.array_equal(view, w)
        _cut(path, 4096, other_process=other_process)
        with pytest.raises(fst.FileChanged):
            f.get_tensor("w", dtype="bf16")
        with pytest.raises(fst.FileChanged):
            f.get_slice("w", dtype="f16")[::2, 1::3]
        with pytest.raises(fst.FileChanged):
            f.get_slice("w")[:, ::2]  # a strided copy
        with pytest.raises(fst.FileChanged):
            fq.quantize(view, "q8_0")
        with pytest.raises(fst.FileChanged):
            fq.quantize(view[:, ::2], "int8")
        with pytest.raises(fst.FileChanged):
            fst.convert(view, "f16")
        # FileChanged is an OSError and a SafetensorError.
        with pytest.raises(OSError):
            f.get_tensor("z", dtype="bf16")


def test_saving_views_of_a_truncated_mapping_raises_file_changed(big, tmp_path):
    """write(2) from pages past the new end fails with EFAULT: the writer
    reports the source changing, and leaves no target or temporary."""
    path, w = big
    out = tmp_path / "out"
    out.mkdir()
    with fst.safe_open(path, "np") as f:
        view = f.get_tensor("w")
        _cut(path, 4096, other_process=False)
        with pytest.raises(fst.FileChanged):
            fnp.save_file({"w": view}, out / "copy.safetensors")
        specs = [("w", "F32", list(view.shape), None, view.nbytes)]
        with pytest.raises(fst.FileChanged):
            fst.format.writer.write_specs_streaming(specs, out / "stream.safetensors", None, False,
                                                    lambda i: fst.format.writer.byte_view(view))
    assert os.listdir(out) == []


def test_pread_backend_raises_file_changed(big):
    path, _ = big
    with fst.safe_open(path, "np", backend="pread") as f:
        os.truncate(path, 4096)
        with pytest.raises(fst.FileChanged):
            f.get_tensor("w")
        with pytest.raises(fst.FileChanged):
            f.get_slice("w")[60:]


def test_a_file_replaced_by_rename_keeps_the_old_data(big, tmp_path):
    # The atomic writers replace files by rename: an open mapping keeps the
    # old inode, so readers see the old tensors whole, never a mix.
    path, w = big
    with fst.safe_open(path, "np") as f:
        fnp.save_file({"w": np.zeros((2, 2), np.float32)}, path)
        assert np.array_equal(f.get_tensor("w", dtype="f32"), w)
        assert np.array_equal(f.get_slice("w")[:, ::2], w[:, ::2])
    with fst.safe_open(path, "np") as f:
        assert f.get_tensor("w").shape == (2, 2)


def test_a_zero_copy_view_past_the_new_end_is_the_callers_risk(big):
    # Documented in docs/security.md: fastensors cannot guard reads it does
    # not make. The child dies of SIGBUS (the parent is unaffected).
    path, _ = big
    code = textwrap.dedent(f"""
        import os, fastensors as fst
        f = fst.safe_open({os.fspath(path)!r}, "np")
        v = f.get_tensor("w")
        os.truncate({os.fspath(path)!r}, 4096)
        print(float(v[-1, -1]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode in (-signal.SIGBUS, 128 + signal.SIGBUS), proc
