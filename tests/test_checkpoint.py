"""open_checkpoint: one object over a file or over shards and their index,
checked against the index, read the same as the reference package reads
each shard; the metadata helpers."""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.numpy as ref_np

import fastensors
from conftest import sample_array, same_array


def write_sharded(directory, shards, metadata=None, index_extra=None):
    """Write ``shards`` ({file: {name: array}}) with the reference writer and
    an index listing every tensor; returns the index path."""
    os.makedirs(directory, exist_ok=True)
    weight_map = {}
    for fname, tensors in shards.items():
        ref_np.save_file(tensors, os.path.join(directory, fname), metadata={"format": "pt"})
        for name in tensors:
            weight_map[name] = fname
    index = {"metadata": dict(metadata or {"total_size": 0}), "weight_map": weight_map}
    index.update(index_extra or {})
    path = os.path.join(directory, "model.safetensors.index.json")
    with open(path, "w") as f:
        json.dump(index, f, indent=2)
    return path


@pytest.fixture
def sharded(tmp_path):
    shards = {
        "model-00001-of-00003.safetensors": {
            "a.weight": sample_array(np.float32, (4, 5), 1),
            "a.bias": sample_array(np.float32, (5,), 2),
        },
        "model-00002-of-00003.safetensors": {
            "b.weight": sample_array(ml_dtypes.bfloat16, (3, 3), 3),
            "ids": sample_array(np.int64, (7,), 4),
        },
        "model-00003-of-00003.safetensors": {"c": sample_array(np.float16, (2, 2, 2), 5)},
    }
    write_sharded(tmp_path, shards, metadata={"total_size": 123, "note": "hi", "n": 5})
    flat = {k: v for t in shards.values() for k, v in t.items()}
    return tmp_path, shards, flat


def reference_read(directory):
    """The reference way: parse the index, safe_open each shard."""
    with open(os.path.join(directory, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    out = {}
    for fname in sorted(set(weight_map.values())):
        with safetensors.safe_open(os.path.join(directory, fname), framework="np") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out


# -- reading -----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["directory", "index"])
@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_sharded_reads_like_reference(sharded, how, backend):
    directory, shards, flat = sharded
    path = directory if how == "directory" else directory / "model.safetensors.index.json"
    ref = reference_read(directory) if backend == "mmap" else None
    with fastensors.open_checkpoint(path, backend=backend) as ckpt:
        assert ckpt.is_sharded
        assert ckpt.keys() == sorted(flat)
        assert len(ckpt) == len(flat) and "c" in ckpt and "zz" not in ckpt
        for name, want in flat.items():
            assert same_array(ckpt.get_tensor(name), want)
            if ref is not None and name != "b.weight":  # the reference numpy path has no bfloat16
                assert same_array(ckpt.get_tensor(name), ref[name])
            info = ckpt.tensor_info(name)
            assert info.shape == want.shape
        assert same_array(ckpt.get_slice("a.weight")[1:3, ::2], flat["a.weight"][1:3, ::2])
        assert ckpt.get_slice("ids").get_shape() == [7]
        assert ckpt.file_of("c") == "model-00003-of-00003.safetensors"
        assert ckpt.metadata() == {"format": "pt", "note": "hi", "n": "5"}
        assert ckpt.index_metadata == {"total_size": 123, "note": "hi", "n": 5}
        tensors = ckpt.get_tensors()
        assert list(tensors) == ckpt.offset_keys()
        assert all(same_array(tensors[k], flat[k]) for k in flat)


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_read_into_caller_memory(sharded, backend):
    """read_into: whole tensors, boxes and conversions into caller buffers,
    against the reference reader's tensors sliced by numpy and cast by
    ml_dtypes (round to nearest even)."""
    directory, _, flat = sharded
    ref = reference_read(directory)
    with fastensors.open_checkpoint(directory, backend=backend) as ckpt:
        arena = np.full(sum(v.nbytes for v in flat.values()) + 16, 0xAB, np.uint8)
        at = 0
        for name in ckpt.keys():
            wrote = ckpt.read_into(name, arena[at:])
            want = flat[name] if name == "b.weight" else ref[name]
            assert wrote == want.nbytes
            assert arena[at:at + wrote].tobytes() == np.ascontiguousarray(want).tobytes()
            at += wrote
        assert (arena[at:] == 0xAB).all()  # nothing past the bytes reported
        box = np.zeros((2, 3), np.float32)
        assert ckpt.read_into("a.weight", box, start=[1, 2], stop=[3, 5]) == 24
        assert same_array(box, ref["a.weight"][1:3, 2:5])
        column = np.zeros(3, ml_dtypes.bfloat16)
        assert ckpt.read_into("b.weight", column, start=[0, 1], stop=[3, 2]) == 6
        assert same_array(column, flat["b.weight"][:, 1])
        for to, np_type in (("F32", np.float32), ("F16", np.float16), ("BF16", ml_dtypes.bfloat16)):
            out = np.zeros(flat["c"].size, np_type)
            ckpt.read_into("c", out, dtype=to)
            assert out.tobytes() == flat["c"].astype(np_type).reshape(-1).tobytes()
            out = np.zeros((2, 5), np_type)
            ckpt.read_into("a.weight", out, start=[2, 0], stop=[4, 5], dtype=to)
            assert out.tobytes() == ref["a.weight"][2:4].astype(np_type).tobytes()
        buf = bytearray(7 * 8)
        assert ckpt.read_into("ids", buf) == 56 and bytes(buf) == ref["ids"].tobytes()
        with pytest.raises(fastensors.SizeMismatch, match="needs 80"):
            ckpt.read_into("a.weight", np.zeros(19, np.float32))
        with pytest.raises(fastensors.InvalidArgument, match="does not fit axis 1"):
            ckpt.read_into("a.weight", box, start=[0, 4], stop=[2, 6])
        with pytest.raises(fastensors.InvalidArgument, match="3 start and 2 stop indices"):
            ckpt.read_into("a.weight", box, start=[0, 0, 0])
        with pytest.raises(fastensors.InvalidArgument, match="writable"):
            ckpt.read_into("ids", bytes(56))
        with pytest.raises(fastensors.InvalidArgument, match="C-contiguous"):
            ckpt.read_into("ids", np.zeros(16, np.int64)[::2])
        with pytest.raises(fastensors.TensorNotFound):
            ckpt.read_into("zz", buf)
        with pytest.raises(fastensors.SafetensorError):
            ckpt.read_into("ids", buf, dtype="Q4")
        with pytest.raises(fastensors.InvalidArgument, match="out holds F32 elements, the read of 'b.weight' gives BF16"):
            ckpt.read_into("b.weight", np.zeros(9, np.float32))  # would have been half filled with BF16 bytes
        with pytest.raises(fastensors.InvalidArgument, match="gives F16"):
            ckpt.read_into("b.weight", np.zeros(9, np.float32), dtype="F16")
        raw = np.zeros(18, np.uint8)  # bytes take any dtype
        assert ckpt.read_into("b.weight", raw) == 18 and raw.tobytes() == flat["b.weight"].tobytes()


def test_read_into_torch_tensors(sharded):
    torch = pytest.importorskip("torch")
    directory, _, flat = sharded
    with fastensors.open_checkpoint(directory, "pt") as ckpt:
        dst = torch.nn.Parameter(torch.zeros(4, 5))  # a model's parameter, filled in place
        ckpt.read_into("a.weight", dst)
        assert torch.equal(dst.detach(), torch.from_numpy(flat["a.weight"]))
        half = torch.zeros(3, 3, dtype=torch.bfloat16)
        ckpt.read_into("b.weight", half)
        assert torch.equal(half.view(torch.int16), torch.from_numpy(flat["b.weight"].view(np.int16)))
        wide = torch.zeros(3, 3)
        ckpt.read_into("b.weight", wide, dtype="F32")
        assert torch.equal(wide, torch.from_numpy(flat["b.weight"].astype(np.float32)))
        with pytest.raises(fastensors.InvalidArgument, match="contiguous"):
            ckpt.read_into("a.weight", torch.zeros(5, 4).t())
        with pytest.raises(fastensors.InvalidArgument, match="gives BF16"):
            ckpt.read_into("b.weight", torch.zeros(3, 3))


def test_single_file_and_directory_with_one_file(tmp_path):
    arrays = {"x": sample_array(np.float32, (3,)), "y": sample_array(np.uint8, (2, 2))}
    ref_np.save_file(arrays, tmp_path / "weights.safetensors", metadata={"k": "v"})
    for path in (tmp_path / "weights.safetensors", tmp_path):
        with fastensors.open_checkpoint(path) as ckpt:
            assert not ckpt.is_sharded and ckpt.keys() == ["x", "y"]
            assert ckpt.metadata() == {"k": "v"}
            assert ckpt.files == ["weights.safetensors"]
            assert all(same_array(ckpt.get_tensor(k), v) for k, v in arrays.items())


def test_model_safetensors_preferred_over_index(tmp_path, sharded):
    directory, _, _ = sharded
    ref_np.save_file({"only": np.zeros(2, np.float32)}, directory / "model.safetensors")
    assert fastensors.open_checkpoint(directory).keys() == ["only"]


def test_torch_framework(sharded):
    torch = pytest.importorskip("torch")
    directory, _, flat = sharded
    with fastensors.open_checkpoint(directory, framework="pt") as ckpt:
        t = ckpt.get_tensor("b.weight")
        assert isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
        assert np.array_equal(t.view(torch.int16).numpy(), flat["b.weight"].view(np.int16))


def test_lazy_opening(sharded):
    directory, _, flat = sharded
    ckpt = fastensors.open_checkpoint(directory)
    assert ckpt._handles == {}
    ckpt.get_tensor("c")
    assert list(ckpt._handles) == ["model-00003-of-00003.safetensors"]
    ckpt.close()
    eager = fastensors.open_checkpoint(directory, lazy=False)
    assert len(eager._handles) == 3


def test_tensors_stay_valid_after_close(sharded):
    directory, _, flat = sharded
    with fastensors.open_checkpoint(directory) as ckpt:
        a = ckpt.get_tensor("a.weight")
    assert same_array(a, flat["a.weight"])


def test_kwargs_reach_the_shard(sharded, monkeypatch):
    directory, _, _ = sharded
    seen = {}

    def fake_get_tensor(self, name, **kwargs):
        seen[name] = kwargs
        return None

    monkeypatch.setattr(fastensors.safe_open, "get_tensor", fake_get_tensor)
    fastensors.open_checkpoint(directory).get_tensor("c", dtype="F32")
    assert seen == {"c": {"dtype": "F32"}}


# -- index and shards disagree --------------------------------------------------------

def test_missing_shard(sharded):
    directory, _, _ = sharded
    os.unlink(directory / "model-00002-of-00003.safetensors")
    ckpt = fastensors.open_checkpoint(directory)  # lazy: found when needed
    assert ckpt.get_tensor("c").shape == (2, 2, 2)
    with pytest.raises(fastensors.ShardNotFound, match="model-00002-of-00003") as e:
        ckpt.get_tensor("ids")
    assert e.value.tensor == "b.weight"
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, fastensors.CheckpointError)
    with pytest.raises(fastensors.ShardNotFound):
        ckpt.keys()
    with pytest.raises(fastensors.ShardNotFound):
        fastensors.open_checkpoint(directory, lazy=False)


def test_tensor_listed_but_absent(tmp_path):
    write_sharded(tmp_path, {"s1.safetensors": {"a": np.zeros(2, np.float32)},
                             "s2.safetensors": {"b": np.zeros(2, np.float32)}})
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["ghost"] = "s2.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    ckpt = fastensors.open_checkpoint(tmp_path)
    assert ckpt.get_tensor("a").shape == (2,)  # the first shard agrees with the index
    assert ckpt.get_tensor("b").shape == (2,)  # "b" is where the index says
    with pytest.raises(fastensors.TensorMissingFromShard, match="'ghost'.*s2.safetensors") as e:
        ckpt.get_tensor("ghost")
    assert e.value.tensor == "ghost"
    with pytest.raises(fastensors.TensorMissingFromShard, match="'ghost'"):
        ckpt.keys()
    with pytest.raises(fastensors.TensorMissingFromShard):
        fastensors.open_checkpoint(tmp_path, lazy=False)


def test_tensor_present_but_unlisted(tmp_path):
    write_sharded(tmp_path, {"s1.safetensors": {"a": np.zeros(2, np.float32), "extra": np.ones(1, np.int8)}})
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    del index["weight_map"]["extra"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(fastensors.UnlistedTensor, match="'extra'") as e:
        fastensors.open_checkpoint(tmp_path).keys()
    assert e.value.tensor == "extra" and e.value.path.endswith("s1.safetensors")


def test_tensor_in_two_shards(tmp_path):
    write_sharded(tmp_path, {"s1.safetensors": {"a": np.zeros(2, np.float32), "dup": np.ones(2, np.float32)},
                             "s2.safetensors": {"b": np.zeros(3, np.float32), "dup": np.ones(2, np.float32)}})
    # write_sharded mapped "dup" to the last shard written
    with pytest.raises(fastensors.TensorInMultipleShards, match="'dup'.*s2.safetensors.*s1.safetensors"):
        fastensors.open_checkpoint(tmp_path, lazy=False)


def test_tensor_in_the_wrong_shard(tmp_path):
    write_sharded(tmp_path, {"s1.safetensors": {"a": np.zeros(2, np.float32)},
                             "s2.safetensors": {"b": np.zeros(3, np.float32)}})
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["a"] = "s2.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(fastensors.CheckpointError, match="'a'"):
        fastensors.open_checkpoint(tmp_path, lazy=False)


@pytest.mark.parametrize("content,match", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[]", "weight_map"),
    (b'{"metadata": {}}', "weight_map"),
    (b'{"weight_map": []}', "weight_map"),
    (b'{"weight_map": {"a": 3}}', "not a file name"),
    (b'{"weight_map": {"a": "s.safetensors", "a": "s.safetensors"}}', "duplicate key"),
    (b'{"metadata": [], "weight_map": {}}', "metadata"),
    (b'{"weight_map": {"a": "../outside.safetensors"}}', "relative path"),
    (b'{"weight_map": {"a": "/etc/x.safetensors"}}', "relative path"),
    (b'{"weight_map": {"a": "C:\\\\x.safetensors"}}', "relative path"),
    (b'{"weight_map": {"a": "pytorch_model.bin"}}', "does not end with"),
])
def test_corrupted_index(tmp_path, content, match):
    (tmp_path / "model.safetensors.index.json").write_bytes(content)
    with pytest.raises(fastensors.InvalidIndex, match=match):
        fastensors.open_checkpoint(tmp_path, lazy=False)
    try:  # lazily: at the latest when the entry is used or everything is checked
        ckpt = fastensors.open_checkpoint(tmp_path)
    except fastensors.InvalidIndex as e:
        assert e.path.endswith("model.safetensors.index.json")
        return
    with pytest.raises(fastensors.CheckpointError):  # the entry's own problem, or its shard is missing
        ckpt.get_tensor("a")
    with pytest.raises(fastensors.InvalidIndex, match=match):
        ckpt.verify()


def test_other_shard_name_checked_before_it_is_opened(tmp_path):
    # s1 holds "a", but the index maps "a" to a file outside the directory:
    # that file must not be opened to see whether it holds "a" too.
    outside = tmp_path / "outside.safetensors"
    ref_np.save_file({"a": np.zeros(1, np.float32)}, outside)
    inner = tmp_path / "ckpt"
    write_sharded(inner, {"s1.safetensors": {"a": np.zeros(2, np.float32), "b": np.ones(2, np.float32)}})
    index = json.loads((inner / "model.safetensors.index.json").read_text())
    index["weight_map"]["a"] = "../outside.safetensors"
    (inner / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(fastensors.InvalidIndex, match="relative path"):  # at open (local), or on use (remote)
        fastensors.open_checkpoint(inner).get_tensor("b")


def test_truncated_shard_is_a_header_error(sharded):
    directory, _, _ = sharded
    path = directory / "model-00003-of-00003.safetensors"
    path.write_bytes(path.read_bytes()[:-3])
    ckpt = fastensors.open_checkpoint(directory)
    ckpt.get_tensor("a.bias")
    with pytest.raises(fastensors.SafetensorError):
        ckpt.get_tensor("c")


def test_not_found_and_ambiguous(tmp_path):
    with pytest.raises(fastensors.CheckpointNotFound):
        fastensors.open_checkpoint(tmp_path / "nope")
    with pytest.raises(fastensors.CheckpointNotFound):
        fastensors.open_checkpoint(tmp_path)
    ref_np.save_file({"a": np.zeros(1)}, tmp_path / "x.safetensors")
    ref_np.save_file({"a": np.zeros(1)}, tmp_path / "y.safetensors")
    with pytest.raises(fastensors.AmbiguousCheckpoint, match="x.safetensors"):
        fastensors.open_checkpoint(tmp_path)
    with pytest.raises(fastensors.TensorNotFound):
        fastensors.open_checkpoint(tmp_path / "x.safetensors").get_tensor("b")


# -- metadata helpers ------------------------------------------------------------------

def test_get_safetensors_metadata_sharded(sharded):
    directory, shards, flat = sharded
    meta = fastensors.get_safetensors_metadata(directory)
    assert meta.sharded and meta.metadata == {"total_size": 123, "note": "hi", "n": 5}
    assert meta.weight_map == {k: f for f, t in shards.items() for k in t}
    assert set(meta.files_metadata) == set(shards)
    expected_counts = {}
    for fname, tensors in shards.items():
        fm = meta.files_metadata[fname]
        assert fm.metadata == {"format": "pt"}
        with safetensors.safe_open(directory / fname, framework="np") as f:
            for name in f.keys():
                sl = f.get_slice(name)
                assert fm.tensors[name].dtype == sl.get_dtype()
                assert list(fm.tensors[name].shape) == sl.get_shape()
                expected_counts[sl.get_dtype()] = expected_counts.get(sl.get_dtype(), 0) + int(np.prod(sl.get_shape()))
    assert meta.parameter_count == expected_counts


def test_get_safetensors_metadata_single_and_list(tmp_path):
    arrays = {"w": sample_array(np.float32, (3, 4)), "s": sample_array(np.int8, ())}
    ref_np.save_file(arrays, tmp_path / "m.safetensors", metadata={"a": "b"})
    meta = fastensors.get_safetensors_metadata(tmp_path / "m.safetensors")
    assert not meta.sharded and meta.metadata is None
    assert meta.files_metadata["m.safetensors"].metadata == {"a": "b"}
    assert meta.parameter_count == {"F32": 12, "I8": 1}
    listed = fastensors.list_safetensors_tensors(tmp_path / "m.safetensors")
    assert [(t.name, t.dtype, t.shape, t.file) for t in listed] == [
        ("s", "I8", (), "m.safetensors"), ("w", "F32", (3, 4), "m.safetensors")]


def test_list_tensors_sharded(sharded):
    directory, shards, flat = sharded
    listed = fastensors.list_safetensors_tensors(directory)
    assert [t.name for t in listed] == sorted(flat)
    for t in listed:
        assert t.shape == flat[t.name].shape
        assert t.nbytes == flat[t.name].nbytes
        assert t.name in shards[t.file]


# -- against huggingface_hub's loader ----------------------------------------------------

def test_hub_loader_reads_our_shards_and_we_read_hubs(tmp_path):
    torch = pytest.importorskip("torch")
    hub = pytest.importorskip("huggingface_hub")
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 10))
    fastensors.save_sharded(model.state_dict(), tmp_path / "ours", max_shard_size="1KB")
    fresh = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 10))
    result = hub.load_torch_model(fresh, tmp_path / "ours", strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)
    os.makedirs(tmp_path / "hub")
    hub.save_torch_state_dict(model.state_dict(), tmp_path / "hub", max_shard_size="1KB")
    with fastensors.open_checkpoint(tmp_path / "hub", framework="pt", lazy=False) as ckpt:
        assert ckpt.keys() == sorted(model.state_dict())
        for k, v in model.state_dict().items():
            assert torch.equal(ckpt.get_tensor(k), v)
