"""fastensors.distributed: DCP storage and tensor-parallel loading.

Multi-rank cases run under torchrun with the gloo backend on loopback
(tests/distributed_worker.py, one launch covering many cases); the oracles
are the full tensors, ``save_sharded`` of the full state dict (byte for
byte), torch's own HF storage reader and writer, huggingface_hub's writer,
and here the reference ``safetensors`` reader of the output. Every launch
has a timeout and the workers' collectives a 60 s one, so a failing rank
never hangs the suite. Single-process cases check the byte-run arithmetic
against numpy indexing and the errors of malformed input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed.checkpoint")

import fastensors  # noqa: E402
import fastensors.numpy  # noqa: E402,F401
from fastensors import distributed as fd  # noqa: E402
from fastensors.distributed.catalog import DCP_SHARDING_INFO, Catalog  # noqa: E402
from fastensors.distributed.layout import byte_runs  # noqa: E402
from torchrun_helpers import load_worker, rank_reports, torchrun  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_worker.py")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def _worker_module():
    return load_worker(WORKER)


def launch(scenario: str, out, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    return torchrun(WORKER, scenario, out, nproc, timeout)


def check_output_with_reference_reader(ckpt: str) -> None:
    """Our checkpoint read by the reference safetensors package equals the full tensors."""
    from safetensors import safe_open as ref_open

    full = _worker_module().full_state_dict()
    with open(os.path.join(ckpt, "model.safetensors.index.json")) as f:
        index = json.load(f)
    assert set(index["weight_map"]) == set(full)
    assert index["metadata"]["run"] == "test"
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in full.values())
    seen = set()
    for fname in sorted(set(index["weight_map"].values())):
        with ref_open(os.path.join(ckpt, fname), framework="pt") as f:
            assert f.metadata() == {"format": "pt"}
            for k in f.keys():
                assert index["weight_map"][k] == fname
                got, want = f.get_tensor(k), full[k]
                assert got.dtype == want.dtype and got.shape == want.shape, k
                assert torch.equal(got.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)), k
                seen.add(k)
    assert seen == set(full)


def check_convert_shared(out, reports: list) -> None:
    """Each shard of the converted checkpoint was converted by exactly one rank."""
    shards = [n for n in os.listdir(os.path.join(out, "conv_ref")) if n.endswith(".safetensors")]
    assert len(shards) >= len(reports)
    assert sum(rep["convert_shards"] for rep in reports) == len(shards)


def check_errors_everywhere(reports: list, world: int) -> None:
    for r, rep in enumerate(reports):
        for case in ("shape", "dtype", "dtype_dcp_planner", "missing"):
            assert rep[case][0] == "StateDictMismatch", (r, case, rep[case])
        assert rep["changed"][0] == "FileChanged", (r, rep["changed"])
        assert rep["not_tensor"][0] == "InvalidArgument" and "`step` is not a tensor" in rep["not_tensor"][1]
        assert rep["write_failed"][0] == "SafetensorIOError" and "disk full (injected)" in rep["write_failed"][1]
        assert rep["one_rank"][0] == ("StateDictMismatch" if r == world - 1 else "RankFailed")
        assert rep["bytes_read"] == rep["bytes_local"]
        assert rep["convert_shards"] >= 1  # every rank converted a share
        assert rep["convert_converted"] == 2 * world + 1  # the same report everywhere


def test_two_ranks_save_reshard_load_and_errors(tmp_path):
    """2 ranks: row, column and replicated DTensors of mixed dtypes saved as
    save_sharded's files; resharded loads (ours, torch's HF reader); torch's
    per-rank output and a hub checkpoint loaded three ways; typed errors."""
    proc = launch("main", tmp_path)
    reports = rank_reports(tmp_path, 2, proc)  # a failed rank's own traceback first
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert reports[0]["files"] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                                   "model.safetensors.index.json"]
    check_errors_everywhere(reports, 2)
    check_convert_shared(tmp_path, reports)
    # The two ranks split the reads: together they read each byte once.
    full = _worker_module().full_state_dict()
    replicated = sum(full[k].numel() * full[k].element_size()
                     for k in ("model.f8.weight", "model.norm.weight", "model.mask", "model.scale"))
    total = sum(v.numel() * v.element_size() for v in full.values())
    assert sum(r["bytes_read"] for r in reports) == total + replicated  # replicated ones are read by both
    check_output_with_reference_reader(str(tmp_path / "ckpt"))


def test_rank_killed_mid_save_leaves_the_old_checkpoint(tmp_path):
    proc = launch("kill", tmp_path)
    assert proc.returncode != 0, "the launch should fail: a rank was killed"
    with open(tmp_path / "before.json") as f:
        before = json.load(f)
    ckpt = tmp_path / "ckpt"
    assert sorted(os.listdir(ckpt)) == sorted(before)  # nothing new is visible
    worker = _worker_module()
    assert worker.tree_digest(str(ckpt)) == before  # and the old files are intact
    assert not (tmp_path / "rank1.json").exists()  # the rank really died
    # A later save removes what the dead save staged.
    fastensors.save_sharded(worker.full_state_dict(), str(ckpt), max_shard_size=worker.MAX_SHARD)
    assert [n for n in os.listdir(tmp_path) if ".fastensors-staging-" in n] == []
    assert worker.tree_digest(str(ckpt)) == before  # same tensors, same bytes


@pytest.mark.slow
def test_four_ranks(tmp_path):
    os.makedirs(tmp_path / "one")
    proc = launch("main", tmp_path / "one", nproc=4, timeout=600)
    reports = rank_reports(tmp_path / "one", 4, proc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_errors_everywhere(reports, 4)
    check_convert_shared(tmp_path / "one", reports)
    check_output_with_reference_reader(str(tmp_path / "one" / "ckpt"))
    os.makedirs(tmp_path / "two")
    proc = launch("mesh2d", tmp_path / "two", nproc=4, timeout=600)
    rank_reports(tmp_path / "two", 4, proc)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# -- one process -------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_byte_runs_match_numpy_indexing(seed):
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(0, 4))
    shape = [int(d) for d in rng.integers(1, 6, ndim)]
    offsets = [int(rng.integers(0, d)) for d in shape]
    sizes = [int(rng.integers(0, d - o + 1)) for d, o in zip(shape, offsets)]
    itemsize = int(rng.choice([1, 2, 4, 8]))
    starts, length = byte_runs(shape, itemsize, offsets, sizes)
    got = np.concatenate([np.arange(s, s + length) for s in starts]) if len(starts) else np.zeros(0, int)
    elems = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    box = elems[tuple(slice(o, o + s) for o, s in zip(offsets, sizes))].reshape(-1)
    want = (box[:, None] * itemsize + np.arange(itemsize)).reshape(-1)
    assert got.tolist() == want.tolist()


def _quiet():
    warnings.filterwarnings("ignore", message=".*torch.distributed is disabled.*")


def test_one_process_save_is_save_sharded_byte_for_byte(tmp_path):
    _quiet()
    sd = _worker_module().full_state_dict()
    for limit in ("5GB", 1500, 1):
        fd.save(sd, tmp_path / f"ours{limit}", max_shard_size=limit, metadata={"k": "v"})
        fastensors.save_sharded(sd, str(tmp_path / f"ref{limit}"), max_shard_size=limit, metadata={"k": "v"})
        names = sorted(os.listdir(tmp_path / f"ref{limit}"))
        assert sorted(os.listdir(tmp_path / f"ours{limit}")) == names
        for n in names:
            assert (tmp_path / f"ours{limit}" / n).read_bytes() == (tmp_path / f"ref{limit}" / n).read_bytes(), n
    dest = {k: torch.empty_like(v) for k, v in sd.items()}
    fd.load(dest, tmp_path / "ours1")
    for k in sd:
        assert torch.equal(dest[k].reshape(-1).view(torch.uint8), sd[k].reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("durable", [True, False])
def test_every_file_is_flushed_after_its_last_write(tmp_path, monkeypatch, durable):
    """durable=True: each data file is fsynced after every byte of it is
    written (by the coordinator, for the ranks on its kernel); False: none."""
    _quiet()
    events = []
    real_fsync, real_write_runs = os.fsync, fd.writer.write_runs

    def fsync(fd_):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd_}"))))
        return real_fsync(fd_)

    def write_runs(fd_, path, *args):
        events.append(("write", os.path.basename(path)))
        return real_write_runs(fd_, path, *args)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(fd.writer, "write_runs", write_runs)
    sd = _worker_module().full_state_dict()
    fd.save(sd, tmp_path / "c", max_shard_size=1500, durable=durable)
    written = {name for kind, name in events if kind == "write"}
    assert len(written) > 1
    for name in written:
        last_write = max(i for i, e in enumerate(events) if e == ("write", name))
        flushed = [i for i, e in enumerate(events) if e == ("fsync", name)]
        assert (max(flushed, default=-1) > last_write) == durable, (name, events)


def test_ranks_start_writing_at_different_files():
    """Each rank takes the files from its share of the file list onwards,
    keeping the plan's order within a file, and writes every item once."""
    from types import SimpleNamespace

    from fastensors.distributed.writer import _Placed, _RankPlan, _rotated

    files = [f"model-0000{k}-of-00004.safetensors" for k in range(1, 5)]
    placed = {f"t{k}.{j}": _Placed(files[k], 0, (1,), 1) for k in range(4) for j in range(2)}
    items = [SimpleNamespace(index=SimpleNamespace(fqn=name)) for name in placed]

    def order(slot, subset=items):
        return [it.index.fqn for it in _rotated(subset, _RankPlan("s", placed, False, slot))]

    assert order((0, 2)) == list(placed)
    assert order((1, 2)) == ["t2.0", "t2.1", "t3.0", "t3.1", "t0.0", "t0.1", "t1.0", "t1.1"]
    assert order((3, 4))[:2] == ["t3.0", "t3.1"]
    # A rank writing only some files keeps the global rotation.
    assert order((1, 2), items[:4]) == ["t0.0", "t0.1", "t1.0", "t1.1"]
    assert order((1, 2), items[2:6]) == ["t2.0", "t2.1", "t1.0", "t1.1"]
    # More ranks than files: several start at one file, still each item once.
    for i in range(7):
        assert sorted(order((i, 7))) == sorted(placed)


def test_ranks_on_other_kernels_flush_their_own_writes(tmp_path):
    from torch.distributed.checkpoint.planner import SavePlan

    writer = fd.StorageWriter(tmp_path / "c")
    here = fd.writer._node()
    plans = [SavePlan([], storage_data=fd.writer._LocalPlan([], node)) for node in (here, "boot:elsewhere", here)]
    try:
        out = writer.prepare_global_plan(plans)
        assert [p.storage_data.durable for p in out] == [False, True, False]
    finally:
        writer.reset()
    writer = fd.StorageWriter(tmp_path / "d", durable=False)
    try:
        assert not any(p.storage_data.durable for p in writer.prepare_global_plan(plans))
    finally:
        writer.reset()


def test_save_replaces_the_previous_checkpoint_atomically(tmp_path):
    _quiet()
    fd.save({"a": torch.ones(4), "b": torch.zeros(300)}, tmp_path / "c", max_shard_size=100)
    assert len(os.listdir(tmp_path / "c")) == 3
    fd.save({"a": torch.full((4,), 2.0)}, tmp_path / "c")
    assert sorted(os.listdir(tmp_path / "c")) == ["model.safetensors"]  # old shards and index removed
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "c" / "model.safetensors"))["a"], torch.full((4,), 2.0))


def test_pieces_that_do_not_tile_a_tensor_are_refused(tmp_path):
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex, TensorProperties
    from torch.distributed.checkpoint.planner import SavePlan, TensorWriteData, WriteItem, WriteItemType

    def item(off, size):
        chunk = ChunkStorageMetadata(torch.Size(off), torch.Size(size))
        data = TensorWriteData(chunk, TensorProperties(dtype=torch.float32), torch.Size([4, 4]))
        return WriteItem(MetadataIndex("w", torch.Size(off)), WriteItemType.SHARD, tensor_data=data)

    cases = {"overlap": [item([0, 0], [3, 4]), item([2, 0], [2, 4])], "gap": [item([0, 0], [2, 4])],
             "outside": [item([0, 0], [4, 4]), item([4, 0], [1, 4])]}
    for name, items in cases.items():
        writer = fd.StorageWriter(tmp_path / name)
        writer.set_up_storage_writer(True)
        plans = [writer.prepare_local_plan(SavePlan([it])) for it in items]
        with pytest.raises(fastensors.StateDictMismatch, match="`w`"):
            writer.prepare_global_plan(plans)
        assert not os.path.exists(tmp_path / name)
        assert [n for n in os.listdir(tmp_path) if "staging" in n] == []


def _torch_rank_file(path, tensors, info):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={DCP_SHARDING_INFO: json.dumps(info)})


def test_torch_per_rank_files_are_assembled(tmp_path):
    full = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    _torch_rank_file(tmp_path / "shard-00001-model-00001-of-00001.safetensors", {"w": full[:, :4].contiguous()},
                     {"w": {"saved_offsets": [0, 0]}})
    _torch_rank_file(tmp_path / "shard-00002-model-00001-of-00001.safetensors", {"w": full[:, 4:].contiguous()},
                     {"w": {"saved_offsets": [0, 4]}})
    cat = Catalog(tmp_path)
    assert cat.tensors["w"].shape == (4, 6) and len(cat.tensors["w"].pieces) == 2
    _quiet()
    dest = {"w": torch.zeros(4, 6)}
    fd.load(dest, tmp_path)
    assert torch.equal(dest["w"], full)
    dest = {"w": torch.zeros(4, 6)}
    fd.load_tensor_parallel(dest, tmp_path)
    assert torch.equal(dest["w"], full)


@pytest.mark.parametrize("info,error", [
    ("not json", fastensors.InvalidMetadata),
    ({"w": {"saved_offsets": [0]}}, fastensors.InvalidMetadata),
    ({"w": {"saved_offsets": [0, -1]}}, fastensors.InvalidMetadata),
    ({"w": {}}, fastensors.InvalidMetadata),
    ({"w": {"saved_offsets": [0, 1]}}, fastensors.StateDictMismatch),  # overlaps the other piece
])
def test_malformed_torch_per_rank_files(tmp_path, info, error):
    from safetensors.torch import save_file

    good = {"w": {"saved_offsets": [0, 0]}}
    _torch_rank_file(tmp_path / "a.safetensors", {"w": torch.zeros(2, 2)}, good)
    meta = info if isinstance(info, str) else json.dumps(info)
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "b.safetensors"), metadata={DCP_SHARDING_INFO: meta})
    with pytest.raises(error):
        Catalog(tmp_path)


def test_any_sharding_info_gives_a_catalog_or_a_typed_error(tmp_path_factory):
    """Fuzz: torch's per-rank metadata is parsed from the files' headers, so
    any value there (JSON or not, any shape, any numbers) either describes
    pieces that tile their tensors or raises a SafetensorError."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from safetensors.torch import save_file

    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                        st.text(max_size=8))
    values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                          max_leaves=12)
    offsets = st.lists(st.integers(-3, 2**65), min_size=0, max_size=3)
    infos = st.one_of(
        st.text(max_size=40),  # not JSON, or JSON of another type
        values.map(json.dumps),
        st.dictionaries(st.sampled_from(["w", "v", "x"]),
                        st.one_of(values, st.fixed_dictionaries({"saved_offsets": st.one_of(offsets, values)})),
                        max_size=3).map(json.dumps))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(first=infos, second=infos)
    def check(first, second):
        folder = tmp_path_factory.mktemp("dcp")
        save_file({"w": torch.zeros(2, 2), "v": torch.zeros(3)}, str(folder / "a.safetensors"),
                  metadata={DCP_SHARDING_INFO: first})
        save_file({"w": torch.zeros(2, 2)}, str(folder / "b.safetensors"), metadata={DCP_SHARDING_INFO: second})
        try:
            cat = Catalog(folder)
        except fastensors.SafetensorError:
            return
        for stored in cat.tensors.values():  # accepted: the pieces tile the tensor exactly
            cells = sum(int(np.prod(p.shape)) for p in stored.pieces)
            assert cells == int(np.prod(stored.shape))

    check()


def test_several_plain_files_without_an_index_are_ambiguous(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    save_file({"b": torch.zeros(2)}, str(tmp_path / "y.safetensors"))
    with pytest.raises(fastensors.AmbiguousCheckpoint):
        fd.StorageReader(tmp_path).read_metadata()
    with pytest.raises(fastensors.CheckpointNotFound):
        fd.StorageReader(tmp_path / "absent").read_metadata()


def test_an_index_that_lies_is_refused(tmp_path):
    _quiet()
    fd.save({"a": torch.ones(4), "b": torch.zeros(300)}, tmp_path, max_shard_size=100)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["weight_map"]["a"], index["weight_map"]["b"] = index["weight_map"]["b"], index["weight_map"]["a"]
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(fastensors.CheckpointError):
        fd.load({"a": torch.ones(4), "b": torch.zeros(300)}, tmp_path)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_read_ranges_gathers_column_pieces_like_numpy(tmp_path, dtype):
    from fastensors.distributed.io import Source, _read_ranges, bytes_requested

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 250, (40, 37)).astype(dtype)
    path = str(tmp_path / "m.safetensors")
    fastensors.numpy.save_file({"pad": np.zeros(3, np.uint8), "m": arr}, path)
    src = Source(path)
    try:
        for col, width in [(0, 37), (0, 1), (3, 5), (36, 1), (10, 20), (1, 36)]:
            for row, height in [(0, 40), (5, 30), (39, 1)]:
                starts, length = byte_runs(arr.shape, arr.itemsize, [row, col], [height, width])
                dst = np.empty(height * width * arr.itemsize, np.uint8)
                before = bytes_requested()
                _read_ranges(src, "m", starts, length, dst)
                assert bytes_requested() - before == dst.nbytes
                assert dst.view(dtype).reshape(height, width).tolist() == arr[row:row + height,
                                                                              col:col + width].tolist()
    finally:
        src.close()


def test_one_batch_reads_pieces_of_several_files_like_numpy(tmp_path):
    from fastensors.distributed.io import ReadBatch, Source, bytes_requested

    rng = np.random.default_rng(1)
    arrays = {f"f{i}": {"a": rng.integers(0, 250, (64, 48)).astype(np.uint16),
                        "b": rng.integers(0, 250, (9, 7, 5)).astype(np.uint8)} for i in range(3)}
    sources = {}
    for fname, tensors in arrays.items():
        path = str(tmp_path / f"{fname}.safetensors")
        fastensors.numpy.save_file(tensors, path)
        sources[fname] = Source(path)
    boxes = [("a", [0, 0], [64, 48]), ("a", [0, 8], [64, 16]), ("a", [10, 0], [20, 48]), ("a", [3, 47], [61, 1]),
             ("b", [1, 2, 0], [7, 3, 5]), ("b", [0, 0, 4], [9, 7, 1])]
    batch, want, called = ReadBatch(), [], []
    try:
        for fname, source in sources.items():
            for name, off, size in boxes:
                arr = arrays[fname][name]
                starts, length = byte_runs(arr.shape, arr.itemsize, off, size)
                dst = np.full(int(np.prod(size)) * arr.itemsize, 7, np.uint8)
                batch.add(source, name, starts, length, dst, then=lambda k=len(want): called.append(k))
                box = arr[tuple(slice(o, o + n) for o, n in zip(off, size))]
                want.append((dst, np.ascontiguousarray(box).view(np.uint8).reshape(-1)))
        nbytes = batch.nbytes
        before = bytes_requested()
        batch.run()
        assert bytes_requested() - before == nbytes == sum(w.nbytes for _, w in want)
        assert called == list(range(len(want)))
        for dst, expected in want:
            assert dst.tobytes() == expected.tobytes()
        batch.run()  # nothing left: a no-op
        with pytest.raises(ValueError, match="outside tensor"):
            batch.add(sources["f0"], "b", np.array([0, 400], np.int64), 8, np.empty(16, np.uint8))
        with pytest.raises(ValueError, match="do not fill"):
            batch.add(sources["f0"], "b", np.array([0], np.int64), 8, np.empty(9, np.uint8))
    finally:
        for source in sources.values():
            source.close()


def test_write_runs_places_every_run(tmp_path):
    from fastensors.distributed.io import write_runs

    path = str(tmp_path / "out.bin")
    with open(path, "wb") as f:
        f.truncate(4096)
    src = np.arange(240, dtype=np.uint8)
    fd_ = os.open(path, os.O_WRONLY)
    try:
        starts = np.array([0, 100, 7, 1000, 2000, 4066], np.int64)
        assert write_runs(fd_, path, 10, starts, 40, src) == 240
        assert write_runs(fd_, path, 3000, np.arange(4, dtype=np.int64) * 5, 5, src[:20]) == 20  # adjacent: one write
        with pytest.raises(fastensors.InvalidArgument, match="do not fill"):
            write_runs(fd_, path, 0, starts, 41, src)
        with pytest.raises(fastensors.InvalidArgument, match="outside a file"):
            write_runs(fd_, path, 0, np.array([-1], np.int64), 240, src)
        with pytest.raises(fastensors.InvalidArgument, match="outside a file"):
            write_runs(fd_, path, 2**63, np.array([0], np.int64), 240, src)
        with pytest.raises(fastensors.InvalidArgument, match="outside a file"):
            write_runs(fd_, path, 2**62 - 100, np.array([0], np.int64), 240, src)
    finally:
        os.close(fd_)
    data = np.fromfile(path, np.uint8)
    want = np.zeros(4116, np.uint8)
    for i, s in enumerate(starts):
        want[10 + s:10 + s + 40] = src[i * 40:(i + 1) * 40]
    want[3000:3020] = src[:20]
    assert data.tobytes() == want.tobytes()
    with pytest.raises(fastensors.SafetensorIOError, match="Bad file descriptor"):
        write_runs(fd_, path, 0, starts[:1], 40, src[:40])  # closed by now
    with pytest.raises(fastensors.InvalidArgument, match="file descriptor"):
        write_runs(-1, path, 0, starts[:1], 40, src[:40])


def test_a_file_truncated_under_a_gather_raises_file_changed(tmp_path):
    """In a subprocess: without the core's guard the strided copy would die of SIGBUS."""
    code = f"""
import os, numpy as np, fastensors, fastensors.numpy
from fastensors.distributed.io import Source, _read_ranges
from fastensors.distributed.layout import byte_runs
path = {str(tmp_path / "t.safetensors")!r}
arr = np.ones((4096, 64), np.uint8)
fastensors.numpy.save_file({{"m": arr}}, path)
src = Source(path)
src.mapped()
os.truncate(path, 4096)
starts, length = byte_runs(arr.shape, 1, [0, 8], [4096, 8])
try:
    _read_ranges(src, "m", starts, length, np.empty(4096 * 8, np.uint8))
except fastensors.FileChanged as e:
    print("raised FileChanged")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "raised FileChanged" in proc.stdout


def test_tensor_parallel_loading_into_a_module_in_one_process(tmp_path):
    _quiet()
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    want = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    fd.save(want, tmp_path)
    result = fd.load_tensor_parallel(model, tmp_path)
    assert result == fd.LoadResult([], [])
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k
    extra = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2), torch.nn.Linear(2, 1))
    with pytest.raises(fastensors.StateDictMismatch, match="not in the checkpoint"):
        fd.load_tensor_parallel(extra, tmp_path)
    result = fd.load_tensor_parallel(extra, tmp_path, strict=False)
    assert result.missing_keys == ["2.bias", "2.weight"] and result.unexpected_keys == []
    with pytest.raises(fastensors.StateDictMismatch, match="shape"):
        fd.load_tensor_parallel({"0.weight": torch.zeros(4, 9)}, tmp_path, strict=False)
