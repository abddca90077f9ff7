"""Sharded saves: the same files and index as huggingface_hub for the same
state dict and limit, atomic replacement of a previous checkpoint (including
processes killed mid-save), and the ``shard`` / ``merge`` commands."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastensors
import fastensors.numpy as fst_np
from fastensors.checkpoint import commit as _fileset
from fastensors.sharding import Entry, merge, parse_size, plan_shards, prepare_torch, reshard
from conftest import sample_array, same_array, same_up_to_metadata_order, split_header

torch = pytest.importorskip("torch")
hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import save_torch_state_dict, split_torch_state_dict_into_shards  # noqa: E402


# -- helpers ---------------------------------------------------------------------------

def torch_sd(sizes, dtype="float32", seed=0):
    """Tensors t000, t001, ... of ``sizes`` elements each."""
    g = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    return {f"t{i:03d}": torch.randn(n, generator=g).to(dt) for i, n in enumerate(sizes)}


def hub_save(sd, directory, **kwargs):
    os.makedirs(directory, exist_ok=True)
    save_torch_state_dict(dict(sd), directory, **kwargs)


def files_of(directory):
    return sorted(n for n in os.listdir(directory))


def assert_same_as_hub(ours_dir, hub_dir):
    """Same file names; shards byte-identical (metadata key order aside for
    a single file, where the reference orders keys arbitrarily); the index
    equal to the hub's once ``total_parameters`` is taken out."""
    assert files_of(ours_dir) == files_of(hub_dir)
    for name in files_of(hub_dir):
        ours = open(os.path.join(ours_dir, name), "rb").read()
        ref = open(os.path.join(hub_dir, name), "rb").read()
        if name.endswith(".index.json"):
            index = json.loads(ours)
            assert isinstance(index["metadata"].pop("total_parameters"), int)
            assert json.dumps(index, indent=2).encode() == ref, name
        else:
            assert ours == ref or same_up_to_metadata_order(ours, ref), name


def load_dir(path):
    with fastensors.open_checkpoint(path) as ckpt:
        return {k: np.array(v) for k, v in ckpt.get_tensors().items()}


# -- sizes -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["5GB", "500MB", "2GB", "1.5GB", "100KB", " 7mb ", "3TB", "0KB", "10kb"])
def test_parse_size_like_hub(text):
    from huggingface_hub.serialization._base import parse_size_to_int

    assert parse_size(text) == parse_size_to_int(text)


@pytest.mark.parametrize("bad", ["5G", "GB", "five GB", "-1GB", "5 XB", True, 1.5, None])
def test_parse_size_rejects(bad):
    with pytest.raises(fastensors.InvalidArgument):
        parse_size(bad)


def test_parse_size_int():
    assert parse_size(123) == 123
    assert parse_size(np.int64(7)) == 7


# -- plans ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=25), limit=st.integers(0, 120))
def test_plan_matches_hub_split(sizes, limit):
    sd = torch_sd(sizes)  # float32: 4 bytes per element
    ref = split_torch_state_dict_into_shards(sd, max_shard_size=limit)
    # Storage ids matter even here: empty tensors share the null storage.
    plan = plan_shards(prepare_torch(sd, None, True).entries, limit)
    assert plan.filename_to_tensors == ref.filename_to_tensors
    assert list(plan.tensor_to_filename.items()) == list(ref.tensor_to_filename.items())
    assert plan.total_size == ref.metadata["total_size"]
    assert plan.is_sharded == ref.is_sharded


def test_plan_oversize_tensor_alone_and_order():
    # [1, 10, 1] elements * 4 bytes with a 20-byte limit: the big one is closed
    # into its own shard before the open one, as the reference does.
    sd = torch_sd([1, 10, 1, 3])
    ref = split_torch_state_dict_into_shards(sd, max_shard_size=20)
    plan = plan_shards([Entry(k, v.nbytes, None) for k, v in sd.items()], 20)
    assert plan.filename_to_tensors == ref.filename_to_tensors
    assert list(plan.filename_to_tensors.values())[0] == ["t001"]


# -- saves against huggingface_hub ------------------------------------------------------

@pytest.mark.parametrize("limit", ["5GB", "1KB", "2KB", 1000, "100KB"])
def test_save_sharded_identical_to_hub(tmp_path, limit):
    sd = torch_sd([10, 300, 50, 600, 5, 5, 256, 1])
    fastensors.save_sharded(sd, tmp_path / "ours", max_shard_size=limit)
    hub_save(sd, tmp_path / "hub", max_shard_size=limit)
    assert_same_as_hub(tmp_path / "ours", tmp_path / "hub")


def test_single_file_when_everything_fits(tmp_path):
    sd = torch_sd([10, 20])
    plan = fastensors.save_sharded(sd, tmp_path / "m")
    assert not plan.is_sharded and plan.index_file is None
    assert files_of(tmp_path / "m") == ["model.safetensors"]
    header, _ = split_header((tmp_path / "m" / "model.safetensors").read_bytes())
    assert header["__metadata__"] == {"format": "pt"}


def test_index_contents(tmp_path):
    sd = torch_sd([100, 200, 240], dtype="bfloat16")
    plan = fastensors.save_sharded(sd, tmp_path, max_shard_size=500)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"] == {"total_parameters": 540, "total_size": 1080}
    assert index["weight_map"] == {
        "t000": "model-00001-of-00003.safetensors",
        "t001": "model-00002-of-00003.safetensors",
        "t002": "model-00003-of-00003.safetensors",
    }
    assert plan.tensor_to_filename == index["weight_map"]
    for name in plan.filename_to_tensors:
        header, _ = split_header((tmp_path / name).read_bytes())
        assert header["__metadata__"] == {"format": "pt"}


@pytest.mark.parametrize("limit", ["1KB", "5GB"])
def test_tied_weights_stored_once_like_hub(tmp_path, limit):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(40, 8, generator=g)
    sd = {"model.embed.weight": emb, "model.layer.weight": torch.randn(30, 8, generator=g), "lm_head.weight": emb,
          "z.bias": torch.randn(3, generator=g)}
    fastensors.save_sharded(sd, tmp_path / "ours", max_shard_size=limit, metadata={"note": "x"})
    hub_save(sd, tmp_path / "hub", max_shard_size=limit, metadata={"note": "x"})
    assert_same_as_hub(tmp_path / "ours", tmp_path / "hub")
    loaded = load_dir(tmp_path / "ours")
    assert "model.embed.weight" not in loaded  # the reference keeps the alphabetically first name
    assert same_array(loaded["lm_head.weight"], emb.numpy())
    meta = fastensors.open_checkpoint(tmp_path / "ours").metadata()
    assert meta["model.embed.weight"] == "lm_head.weight" and meta["note"] == "x"


def test_partial_views_of_one_storage_refused_like_hub(tmp_path):
    # Neither view covers the storage: storing them would store more than
    # the tensors; the reference refuses, and so do we.
    base = torch.arange(400, dtype=torch.float32)
    sd = {"a": torch.randn(100), "v1": base[:200], "v2": base[200:]}
    with pytest.raises(RuntimeError, match="None is covering the entire storage"):
        hub_save(sd, tmp_path / "hub", max_shard_size=1000)
    with pytest.raises(RuntimeError, match="None is covering the entire storage"):
        fastensors.save_sharded(sd, tmp_path / "ours", max_shard_size=1000)
    assert not (tmp_path / "ours").exists()


def test_empty_tensors_share_a_shard_like_hub(tmp_path):
    # Empty tensors all have the null storage, so the reference's storage
    # grouping puts them in the shard of the first one.
    sd = {"a": torch.randn(100), "e1": torch.empty(0), "b": torch.randn(200), "e2": torch.empty(0, 3),
          "c": torch.randn(150), "e3": torch.empty(0, dtype=torch.int64)}
    fastensors.save_sharded(sd, tmp_path / "ours", max_shard_size=700)
    hub_save(sd, tmp_path / "hub", max_shard_size=700)
    assert_same_as_hub(tmp_path / "ours", tmp_path / "hub")


def test_non_contiguous_and_many_dtypes_like_hub(tmp_path):
    g = torch.Generator().manual_seed(2)
    sd = {
        "t": torch.randn(20, 30, generator=g).t(),  # non-contiguous
        "half": torch.randn(64, generator=g).half(),
        "bf16": torch.randn(64, generator=g).bfloat16(),
        "f8": torch.randn(64, generator=g).to(torch.float8_e4m3fn),
        "i64": torch.arange(50),
        "flags": torch.rand(33, generator=g) > 0.5,
        "scalar": torch.tensor(3.0),
        "empty": torch.empty(0, 4),
    }
    fastensors.save_sharded(sd, tmp_path / "ours", max_shard_size=600)
    hub_save(sd, tmp_path / "hub", max_shard_size=600)
    assert_same_as_hub(tmp_path / "ours", tmp_path / "hub")


def test_custom_pattern_like_hub(tmp_path):
    sd = torch_sd([300, 300, 300])
    pattern = "weights{suffix}.safetensors"
    fastensors.save_sharded(sd, tmp_path / "ours", max_shard_size="2KB", filename_pattern=pattern)
    hub_save(sd, tmp_path / "hub", max_shard_size="2KB", filename_pattern=pattern)
    assert_same_as_hub(tmp_path / "ours", tmp_path / "hub")
    assert "weights.safetensors.index.json" in files_of(tmp_path / "ours")


def test_force_contiguous_false_refuses_views(tmp_path):
    sd = {"t": torch.randn(4, 5).t()}
    with pytest.raises(ValueError, match="non contiguous"):
        fastensors.save_sharded(sd, tmp_path / "m", force_contiguous=False)
    assert not (tmp_path / "m").exists()


def test_numpy_state_dict_same_bytes_as_hub_from_torch(tmp_path):
    arrays = {f"w{i}": sample_array(np.float32, (30 + i, 7), seed=i) for i in range(6)}
    arrays["bf"] = sample_array(ml_dtypes.bfloat16, (40,), seed=9)
    fastensors.save_sharded(arrays, tmp_path / "ours", max_shard_size="2KB")
    tensors = {k: torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) if k == "bf" else torch.from_numpy(v)
               for k, v in arrays.items()}
    hub_save(tensors, tmp_path / "hub", max_shard_size="2KB")
    assert_same_as_hub(tmp_path / "ours", tmp_path / "hub")
    loaded = load_dir(tmp_path / "ours")
    for k, v in arrays.items():
        assert same_array(loaded[k], v)


def test_numpy_aliases_stored_once(tmp_path):
    w = sample_array(np.float32, (5, 5))
    fastensors.save_sharded({"b": w, "a": w, "c": w[1:]}, tmp_path)
    with fastensors.open_checkpoint(tmp_path) as ckpt:
        assert ckpt.keys() == ["a", "c"]
        assert ckpt.metadata() == {"format": "pt", "b": "a"}


def test_empty_state_dict_is_one_empty_file(tmp_path):
    fastensors.save_sharded({}, tmp_path)
    assert files_of(tmp_path) == ["model.safetensors"]
    assert fastensors.open_checkpoint(tmp_path).keys() == []


def test_bad_arguments(tmp_path):
    with pytest.raises(fastensors.InvalidArgument):
        fastensors.save_sharded({"a": np.zeros(2)}, tmp_path, filename_pattern="model.safetensors")
    with pytest.raises(fastensors.InvalidArgument):
        fastensors.save_sharded({"a": np.zeros(2)}, tmp_path, filename_pattern="sub/m{suffix}.safetensors")
    with pytest.raises(fastensors.InvalidArgument):
        fastensors.save_sharded({"a": np.zeros(2), "b": torch.zeros(2)}, tmp_path)
    with pytest.raises(fastensors.InvalidArgument):
        fastensors.save_sharded({"a": [1, 2]}, tmp_path)
    with pytest.raises(fastensors.InvalidArgument):
        fastensors.save_sharded({"a": torch.zeros(2, device="meta")}, tmp_path)
    assert files_of(tmp_path) == []


# -- replacing a previous checkpoint -------------------------------------------------------

STATES = {
    # name: (sizes in float32 elements, limit in bytes) -> shard count
    "three": ([100, 100, 100], 400),   # 3 shards
    "three_b": ([90, 110, 100], 440),  # 3 shards again: same names, new contents
    "two": ([150, 150], 600),          # 2 shards
    "single": ([50, 60], 10_000),      # model.safetensors
}


def numpy_sd(sizes, seed):
    rng = np.random.default_rng(seed)
    return {f"t{i:03d}": rng.standard_normal(n, dtype=np.float32) for i, n in enumerate(sizes)}


def state(name, seed):
    sizes, limit = STATES[name]
    return numpy_sd(sizes, seed), limit


def expected_arrays(name, seed):
    return state(name, seed)[0]


@pytest.mark.parametrize("can_exchange", [True, False], ids=["exchange", "rename"])
@pytest.mark.parametrize("durable", [False, True], ids=["fast", "durable"])
def test_shards_replaced_under_their_own_names(tmp_path, monkeypatch, can_exchange, durable):
    """A save whose shard names equal the current ones (three -> three_b):
    where the filesystem can exchange two entries, no weight file is renamed
    over an existing one (ext4 would write it out before the rename
    returns); where it cannot, renames do the same job. Either way the new
    checkpoint is complete and nothing of the old one is left."""
    if can_exchange:
        probe = tmp_path / "probe"
        probe.mkdir()
        (probe / "a").write_text("a")
        (probe / "b").write_text("b")
        if not _fileset.exchange_paths(str(probe / "a"), str(probe / "b")):
            pytest.skip("this OS or filesystem cannot exchange two entries")
        assert (probe / "a").read_text() == "b"
        for n in ("a", "b"):
            os.unlink(probe / n)
        probe.rmdir()
    sd0, limit0 = state("three", 0)
    fastensors.save_sharded(sd0, tmp_path, max_shard_size=limit0)
    if not can_exchange:
        monkeypatch.setattr(_fileset, "exchange_paths", lambda a, b: False)
    over = []
    real_rename = os.rename

    def rename(src, dst, *a, **k):
        if str(dst).endswith(".safetensors") and os.path.exists(dst):
            over.append(os.path.basename(dst))
        return real_rename(src, dst, *a, **k)

    monkeypatch.setattr(os, "rename", rename)
    sd1, limit1 = state("three_b", 1)
    names = set(plan_shards([Entry(k, v.nbytes, None) for k, v in sd1.items()], limit1).filename_to_tensors)
    assert names == set(files_of(tmp_path)) - {"model.safetensors.index.json"}  # the same names
    fastensors.save_sharded(sd1, tmp_path, max_shard_size=limit1, durable=durable)
    monkeypatch.undo()
    assert sorted(over) == ([] if can_exchange else sorted(names))
    got = load_dir(tmp_path)
    want = expected_arrays("three_b", 1)
    assert got.keys() == want.keys() and all(same_array(got[k], want[k]) for k in want)
    assert set(files_of(tmp_path)) == names | {"model.safetensors.index.json"}
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_replace_keeps_unrelated_files_and_removes_stale(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.backup").write_text("keep me")
    for seed, name in enumerate(["single", "three", "three_b", "two", "single", "two"]):
        sd, limit = state(name, seed)
        fastensors.save_sharded(sd, tmp_path, max_shard_size=limit, durable=(seed % 2 == 0))
        got = load_dir(tmp_path)
        want = expected_arrays(name, seed)
        assert got.keys() == want.keys() and all(same_array(got[k], want[k]) for k in want)
        names = set(files_of(tmp_path)) - {"config.json", "model.safetensors.backup"}
        plan_files = set(plan_shards([Entry(k, v.nbytes, None) for k, v in sd.items()], limit).filename_to_tensors)
        if len(plan_files) > 1:
            plan_files.add("model.safetensors.index.json")
        assert names == plan_files, name
    assert (tmp_path / "model.safetensors.backup").read_text() == "keep me"
    assert not [n for n in os.listdir(tmp_path.parent) if _fileset.STAGING_MARK in n]


def test_new_directory_appears_whole(tmp_path):
    target = tmp_path / "new" / "ckpt"
    os.makedirs(target.parent)
    sd, limit = state("three", 0)
    fastensors.save_sharded(sd, target, max_shard_size=limit)
    assert files_of(target) == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                "model-00003-of-00003.safetensors", "model.safetensors.index.json"]
    assert files_of(target.parent) == ["ckpt"]


def test_failed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    sd, limit = state("three", 0)
    fastensors.save_sharded(sd, tmp_path, max_shard_size=limit)
    before = {n: (tmp_path / n).read_bytes() for n in files_of(tmp_path)}
    calls = []
    real = fastensors.sharding.write_specs

    def failing(specs, path, metadata, durable):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(specs, path, metadata, durable)

    monkeypatch.setattr(fastensors.sharding, "write_specs", failing)
    sd2, limit2 = state("three_b", 1)
    with pytest.raises(OSError, match="No space"):
        fastensors.save_sharded(sd2, tmp_path, max_shard_size=limit2)
    assert {n: (tmp_path / n).read_bytes() for n in files_of(tmp_path)} == before
    assert not [n for n in os.listdir(tmp_path.parent) if _fileset.STAGING_MARK in n]


# -- processes killed in the middle of a save -------------------------------------------------

def complete_states(directory):
    """What each reader rule sees in ``directory``: transformers' (the single
    file first) and huggingface_hub's (the index first). Each must be a
    complete checkpoint; returns the tensor dicts."""
    directory = str(directory)
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    views = []
    for first, second in ((single, index), (index, single)):
        path = first if os.path.exists(first) else second
        with fastensors.open_checkpoint(path, lazy=False) as ckpt:
            views.append({k: np.array(v) for k, v in ckpt.get_tensors().items()})
    return views


def matches(got, want):
    return got.keys() == want.keys() and all(same_array(got[k], want[k]) for k in want)


TRANSITIONS = [(None, "three"), ("single", "three"), ("three", "three_b"), ("three", "two"), ("two", "single")]


@pytest.mark.parametrize("before,after", TRANSITIONS, ids=[f"{a}-to-{b}" for a, b in TRANSITIONS])
@pytest.mark.parametrize("durable", [False, True], ids=["fast", "durable"])
def test_killed_at_every_step(tmp_path, before, after, durable):
    """Kill the writer (SIGKILL) at each step of the commit in turn; after
    each kill both reader rules see the complete old or the complete new
    checkpoint, and the next save cleans up what the killed one left."""
    target = tmp_path / "ckpt"
    old = expected_arrays(before, 0) if before else None
    new = expected_arrays(after, 1)
    step = 0
    while True:
        if target.exists():
            for n in os.listdir(target):
                os.unlink(target / n)
            os.rmdir(target)
        if before:
            sd0, limit0 = state(before, 0)
            fastensors.save_sharded(sd0, target, max_shard_size=limit0, durable=False)
        sd1, limit1 = state(after, 1)
        pid = os.fork()
        if pid == 0:  # the writer
            seen = [0]

            def hook(label, _at=step):
                if seen[0] == _at:
                    os.kill(os.getpid(), signal.SIGKILL)
                seen[0] += 1

            _fileset._step_hook = hook
            try:
                fastensors.save_sharded(sd1, target, max_shard_size=limit1, durable=durable)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status)
        if before is None and killed and not target.exists():
            pass  # killed before the new directory appeared: nothing to read
        else:
            for view in complete_states(target):
                assert (old is not None and matches(view, old)) or matches(view, new), step
        if not killed:
            break
        step += 1
        assert step < 100
    assert step >= (1 if before is None else 4)  # the hook saw the commit's steps
    # A later save cleans up after the killed one.
    sd2, limit2 = state("two", 2)
    fastensors.save_sharded(sd2, target, max_shard_size=limit2)
    leftovers = [n for n in os.listdir(target) if n.startswith(".")]
    leftovers += [n for n in os.listdir(tmp_path) if _fileset.STAGING_MARK in n]
    assert not leftovers


WRITER = r"""
import sys, numpy as np, fastensors
STATES = {states!r}

def numpy_sd(sizes, seed):
    rng = np.random.default_rng(seed)
    return {{f"t{{i:03d}}": rng.standard_normal(n, dtype=np.float32) for i, n in enumerate(sizes)}}

target = sys.argv[1]
order = ["three", "three_b", "two", "single"]
i = 0
while True:
    name = order[i % len(order)]
    sizes, limit = STATES[name]
    fastensors.save_sharded(numpy_sd(sizes, i % len(order)), target, max_shard_size=limit, durable=False)
    i += 1
    print(i, flush=True)
"""


def run_kill_trials(tmp_path, trials, seed):
    rng = random.Random(seed)
    target = tmp_path / "ckpt"
    code = WRITER.format(states=STATES)
    known = [expected_arrays(n, i) for i, n in enumerate(["three", "three_b", "two", "single"])]
    for trial in range(trials):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdout.readline()  # at least one complete save exists
        time.sleep(rng.uniform(0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for view in complete_states(target):
            assert any(matches(view, k) for k in known), f"trial {trial}: incomplete checkpoint"


def test_killed_at_random_points(tmp_path):
    run_kill_trials(tmp_path, trials=8, seed=0)


@pytest.mark.slow
def test_killed_at_random_points_many(tmp_path):
    run_kill_trials(tmp_path, trials=200, seed=1)


# -- the shard and merge commands -----------------------------------------------------------

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastensors", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_shard_matches_hub_and_carries_files(tmp_path):
    import safetensors.torch as ref_torch

    src = tmp_path / "src"
    src.mkdir()
    sd = torch_sd([200, 50, 300, 120, 80], dtype="bfloat16", seed=3)
    ref_torch.save_file(sd, src / "model.safetensors", metadata={"format": "pt"})
    (src / "config.json").write_text('{"model_type": "x"}')
    (src / "tokenizer.json").write_text("{}")
    out = run_cli("shard", src, tmp_path / "dst", "--max-shard-size", "1KB", "--no-fsync")
    assert out.returncode == 0, out.stderr
    hub_save(ref_torch.load_file(src / "model.safetensors"), tmp_path / "hub", max_shard_size="1KB")
    ours = tmp_path / "dst"
    assert (ours / "config.json").read_text() == '{"model_type": "x"}'
    assert (ours / "tokenizer.json").exists()
    os.unlink(ours / "config.json")
    os.unlink(ours / "tokenizer.json")
    assert_same_as_hub(ours, tmp_path / "hub")


def test_reshard_and_merge_round_trip(tmp_path):
    import safetensors.numpy as ref_np

    arrays = {f"w{i}": sample_array(np.float16, (20 + i, 9), seed=i) for i in range(12)}
    ref_np.save_file(arrays, tmp_path / "one.safetensors", metadata={"format": "pt", "origin": "test"})
    (tmp_path / "notes.txt").write_text("a neighbour of a lone file, not part of a model directory")
    plan = reshard(tmp_path / "one.safetensors", tmp_path / "sharded", max_shard_size="2KB")
    assert plan.is_sharded
    assert sorted(os.listdir(tmp_path / "sharded")) == sorted([*plan.filename_to_tensors, plan.index_file])
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert index["metadata"]["origin"] == "test"
    # resharding a sharded checkpoint with a new limit
    reshard(tmp_path / "sharded", tmp_path / "resharded", max_shard_size="4KB")
    out = run_cli("merge", tmp_path / "resharded", tmp_path / "merged.safetensors")
    assert out.returncode == 0, out.stderr
    merged = ref_np.load_file(tmp_path / "merged.safetensors")
    assert merged.keys() == arrays.keys() and all(same_array(merged[k], arrays[k]) for k in arrays)
    header, _ = split_header((tmp_path / "merged.safetensors").read_bytes())
    assert header["__metadata__"] == {"format": "pt", "origin": "test"}
    # merging gives the bytes the reference writes for the same tensors
    assert (tmp_path / "merged.safetensors").read_bytes() == ref_np.save(arrays, metadata={"format": "pt",
                                                                                             "origin": "test"}) or \
        same_up_to_metadata_order((tmp_path / "merged.safetensors").read_bytes(),
                                  ref_np.save(arrays, metadata={"format": "pt", "origin": "test"}))


def test_merge_single_file_and_every_dtype(tmp_path):
    arrays = {f"{np.dtype(dt).name}": sample_array(dt, (3, 4), seed=i) for i, dt in enumerate(
        [np.float32, np.int8, np.uint64, ml_dtypes.bfloat16, ml_dtypes.float8_e5m2, np.bool_])}
    fst_np.save_file(arrays, tmp_path / "a.safetensors")
    merge(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_cli_errors(tmp_path):
    out = run_cli("merge", tmp_path / "missing", tmp_path / "x.safetensors")
    assert out.returncode == 1 and "no checkpoint" in out.stderr
    out = run_cli("shard", tmp_path / "missing", tmp_path / "d", "--max-shard-size", "5XB")
    assert out.returncode == 1
    out = run_cli("demo", "--help")
    assert out.returncode == 0
