"""fastensors.convert_file and ``fastensors convert``: single files, sharded
checkpoint directories, selection, errors, progress and peak memory."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

import fastensors
import fastensors.numpy as fst_np
from fastensors import _core
from fastensors._util.progress import Progress
from fastensors.cli import main as cli_main
from conftest import sample_array

BF16 = np.dtype(ml_dtypes.bfloat16)


def astype(a, dt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return a.astype(dt)


def model():
    return {
        "model.embed.weight": sample_array(np.float32, (50, 16), seed=1),
        "model.layers.0.attn.weight": sample_array(np.float16, (16, 16), seed=2),
        "model.layers.0.norm.weight": sample_array(np.float32, (16,), seed=3),
        "model.layers.1.attn.weight": sample_array(BF16, (16, 16), seed=4),
        "model.position_ids": sample_array(np.int64, (1, 50), seed=5),
        "model.mask": sample_array(np.bool_, (4, 4), seed=6),
        "lm_head.weight": sample_array(np.float32, (50, 16), seed=7),
        "empty": np.zeros((0,), np.float32),
    }


def expected(tensors, target_np, convert_names):
    return {k: (astype(v, target_np) if k in convert_names else v) for k, v in tensors.items()}


FLOATS = {"model.embed.weight", "model.layers.0.attn.weight", "model.layers.0.norm.weight",
          "model.layers.1.attn.weight", "lm_head.weight", "empty"}


def test_single_file_matches_writing_converted_tensors(tmp_path):
    tensors = model()
    src, dst, ref = tmp_path / "in.safetensors", tmp_path / "out.safetensors", tmp_path / "ref.safetensors"
    meta = {"format": "pt", "source": "test"}
    fst_np.save_file(tensors, src, metadata=meta)
    report = fastensors.convert_file(src, dst, "f32")
    converting = {"model.layers.0.attn.weight", "model.layers.1.attn.weight"}  # the F32 ones are already F32
    fst_np.save_file(expected(tensors, np.float32, converting), ref, metadata=meta)
    assert dst.read_bytes() == ref.read_bytes()
    assert sorted(report.converted) == sorted(converting)
    assert report.dtype == "F32" and report.files == [str(dst)]
    assert report.bytes_out == sum(v.size * (4 if k in FLOATS else v.itemsize) for k, v in tensors.items())


@pytest.mark.parametrize(
    "only, keep, converted",
    [(None, None, FLOATS - {"model.layers.1.attn.weight"}),
     (r"layers\.\d+\.attn", None, {"model.layers.0.attn.weight"}),
     (None, r"norm|lm_head|embed", {"model.layers.0.attn.weight", "empty"}),
     (r"model\.", r"embed", {"model.layers.0.attn.weight", "model.layers.0.norm.weight"}),
     ("position_ids|mask", None, set())],  # non-float tensors are never converted
)
def test_only_and_keep(tmp_path, only, keep, converted):
    tensors = model()
    src, dst, ref = tmp_path / "in.safetensors", tmp_path / "out.safetensors", tmp_path / "ref.safetensors"
    fst_np.save_file(tensors, src)
    report = fastensors.convert_file(src, dst, "bf16", only=only, keep=keep)
    assert set(report.converted) == converted
    assert set(report.kept) == set(tensors) - converted
    fst_np.save_file(expected(tensors, BF16, converted), ref)
    assert dst.read_bytes() == ref.read_bytes()


def test_float_tensor_that_cannot_convert_is_an_error_before_writing(tmp_path):
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    fst_np.save_file({"a": np.ones(4, np.float64), "b": np.ones(4, np.float32)}, src)
    with pytest.raises(fastensors.UnsupportedConversion, match="'a'.*F64.*keep"):
        fastensors.convert_file(src, dst, "bf16")
    assert not dst.exists()
    fastensors.convert_file(src, dst, "bf16", keep="^a$")  # the way out the message names
    with fastensors.safe_open(dst, "np") as f:
        assert f.tensor_info("a").dtype == "F64" and f.tensor_info("b").dtype == "BF16"
    with pytest.raises(fastensors.UnsupportedConversion, match="float dtype"):
        fastensors.convert_file(src, dst, "i32")
    with pytest.raises(fastensors.InvalidArgument, match="regular expression"):
        fastensors.convert_file(src, dst, "f16", only="(")
    assert sorted(os.listdir(tmp_path)) == ["in.safetensors", "out.safetensors"]  # no temporaries left


def test_cancel_from_progress_leaves_target_untouched(tmp_path):
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    fst_np.save_file({"a": np.ones(1 << 20, np.float32)}, src)
    dst.write_bytes(b"old")
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyError("stop")

    with pytest.raises(KeyError, match="stop"):
        _core.convert_file(str(src), str(dst), [("a", "BF16")], False, progress, 1 << 16)
    assert dst.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["in.safetensors", "out.safetensors"]


# -- sharded directories --------------------------------------------------------------


def make_sharded(folder, tensors):
    folder.mkdir()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in shards.items():
        fst_np.save_file({k: tensors[k] for k in keys}, folder / shard, metadata={"format": "pt"})
        weight_map.update({k: shard for k in keys})
    total = sum(v.nbytes for v in tensors.values())
    index = {"metadata": {"total_size": total, "total_parameters": sum(v.size for v in tensors.values())},
             "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text('{"torch_dtype": "float32"}')
    (folder / "tokenizer.json").write_text("{}")
    (folder / "extra").mkdir()
    return shards


def test_sharded_directory(tmp_path):
    tensors = model()
    src, dst = tmp_path / "src", tmp_path / "dst"
    shards = make_sharded(src, tensors)
    report = fastensors.convert_file(src, dst, "bf16")
    converting = FLOATS - {"model.layers.1.attn.weight"}
    for shard, keys in shards.items():
        ref = tmp_path / ("ref-" + shard)
        fst_np.save_file(expected({k: tensors[k] for k in keys}, BF16, converting), ref, metadata={"format": "pt"})
        assert (dst / shard).read_bytes() == ref.read_bytes(), shard
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    want_total = sum(v.size * 2 if k in FLOATS else v.nbytes for k, v in tensors.items())
    assert index["metadata"]["total_size"] == want_total == report.bytes_out
    assert index["metadata"]["total_parameters"] == sum(v.size for v in tensors.values())
    assert index["weight_map"] == json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    assert (dst / "config.json").read_text() == '{"torch_dtype": "float32"}'
    assert sorted(report.copied_files) == ["config.json", "tokenizer.json"]
    assert report.skipped == ["extra"]
    # The whole converted checkpoint loads like the original, as BF16.
    for shard in shards:
        for k, v in fst_np.load_file(dst / shard).items():
            want = astype(tensors[k], BF16) if k in converting else tensors[k]
            assert v.dtype == want.dtype and v.tobytes() == want.tobytes()


def test_sharded_directory_errors(tmp_path):
    tensors = model()
    src = tmp_path / "src"
    make_sharded(src, tensors)
    with pytest.raises(fastensors.InvalidArgument, match="source directory"):
        fastensors.convert_file(src, src, "bf16")
    (src / "other.safetensors.index.json").write_text("{}")
    with pytest.raises(fastensors.InvalidArgument, match="exactly one"):
        fastensors.convert_file(src, tmp_path / "dst", "bf16")
    os.unlink(src / "other.safetensors.index.json")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    index["weight_map"]["x"] = "../evil.safetensors"
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(fastensors.InvalidArgument, match="outside"):
        fastensors.convert_file(src, tmp_path / "dst", "bf16")


# -- CLI and progress ----------------------------------------------------------------------


def test_cli_convert(tmp_path, capsys):
    tensors = model()
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    fst_np.save_file(tensors, src)
    rc = cli_main(["convert", str(src), str(dst), "--dtype", "f16", "--keep", "lm_head", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr()
    assert "converted 4 tensors to F16, kept 4 unchanged" in out.out  # the F16 one stays as it is
    assert out.err == ""
    with fastensors.safe_open(dst, "np") as f:
        assert f.tensor_info("lm_head.weight").dtype == "F32"
        assert f.tensor_info("model.embed.weight").dtype == "F16"
    rc = cli_main(["convert", str(src), str(tmp_path / "x.safetensors"), "--dtype", "bf17"])
    assert rc == 1 and "unknown dtype 'bf17'" in capsys.readouterr().err
    rc = cli_main(["convert", str(tmp_path / "missing.safetensors"), str(dst), "--dtype", "f16"])
    assert rc == 1 and "missing.safetensors" in capsys.readouterr().err


def test_cli_entry_point_shows_progress(tmp_path):
    src, dst = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    fst_np.save_file({"w": np.ones((256, 1024), np.float32)}, src)
    proc = subprocess.run([sys.executable, "-m", "fastensors", "convert", str(src), str(dst), "--dtype", "bf16",
                           "--no-fsync"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "100" in proc.stderr  # the bar (tqdm or the plain line) reached the end
    assert "converted 1 tensors to BF16" in proc.stdout


def test_plain_progress_line_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    stream = io.StringIO()
    bar = Progress(2_000_000, "convert x", stream=stream)
    bar.update_to(1_000_000)
    bar.update_to(2_000_000)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\rconvert x:") and "100.0%" in text and text.endswith("\n")
    assert "2.0 MB / 2.0 MB" in text


# -- memory --------------------------------------------------------------------------------

RSS_WORKER = r"""
import json, os, sys
import fastensors

def kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

src, dst = sys.argv[1], sys.argv[2]
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
before = kib("VmRSS")
fastensors.convert_file(src, dst, "f32", durable=False)
print(json.dumps({"before_kib": before, "peak_kib": kib("VmHWM"), "reset": reset}))
"""

MAKE_MODEL = r"""
import sys, numpy as np, ml_dtypes
import fastensors.numpy as fst_np
n, rows = int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
bits = rng.integers(0, 1 << 16, (rows, 1024), dtype=np.uint16) & np.uint16(0xBFFF)
fst_np.save_file({f"layer.{i}.weight": bits.view(ml_dtypes.bfloat16) for i in range(n)}, sys.argv[1],
                 durable=False)
"""


def test_peak_memory_stays_near_one_tensor(tmp_path):
    # 40 BF16 tensors of 8 MiB (one array reused: building the file is cheap):
    # a 320 MiB model becomes 640 MiB of F32.
    n, rows = 40, 4096
    src, dst = tmp_path / "big.safetensors", tmp_path / "big-f32.safetensors"
    subprocess.run([sys.executable, "-c", MAKE_MODEL, str(src), str(n), str(rows)], check=True)
    model_bytes = os.path.getsize(src)
    proc = subprocess.run([sys.executable, "-c", RSS_WORKER, str(src), str(dst)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    largest_out = rows * 1024 * 4
    growth = (rec["peak_kib"] - rec["before_kib"]) * 1024
    if not rec["reset"]:  # no clear_refs: the peak includes the import, so bound the peak itself
        growth = rec["peak_kib"] * 1024 - (60 << 20)
    assert growth < largest_out * 3 + (100 << 20), f"peak grew by {growth >> 20} MiB"
    assert growth < model_bytes / 2
    assert os.path.getsize(dst) > 2 * model_bytes - (1 << 20)
    with fastensors.safe_open(dst, "np") as f:
        assert f.get_tensor("layer.7.weight")[5, 7] == astype(
            np.asarray(fastensors.safe_open(src, "np").get_tensor("layer.7.weight")[5, 7]), np.float32)


def test_in_place_conversion(tmp_path):
    # The source stays open (pread) until the output is renamed over it.
    path = tmp_path / "m.safetensors"
    x = sample_array(np.float32, (300, 7), seed=3)
    fst_np.save_file({"w": x}, path, metadata={"k": "v"})
    fastensors.convert_file(path, path, "bf16")
    with fastensors.safe_open(path, "np") as f:
        assert f.metadata() == {"k": "v"}
        assert f.get_tensor("w").tobytes() == astype(x, BF16).tobytes()
    assert os.listdir(tmp_path) == ["m.safetensors"]
