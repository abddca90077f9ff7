"""The parallel read engine (docs/read_engine.md) as the loaders use it:
mapped files made resident before their tensors are returned, get_tensor
loops read ahead, pread files read into fresh arrays, the GPU staging ring;
and what happens when the plan is wrong, the file shrinks, or the disk fails
(the fault shim of tests/faultinject)."""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import safetensors.numpy as ref_np

import fastensors
import fastensors.numpy as fnp
from fastensors import _core
from fastensors.format import plans

torch = pytest.importorskip("torch")
import fastensors.torch as ft  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)
_PAGE = mmap.PAGESIZE


def resident(path, offset: int = 0, size: int = None) -> float:
    """Fraction of the pages of [offset, offset + size) of ``path`` in the
    page cache (mincore on a mapping of our own)."""
    total = os.path.getsize(path)
    size = total - offset if size is None else size
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
    try:
        base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        start = offset - offset % _PAGE
        pages = (offset + size - start + _PAGE - 1) // _PAGE
        vec = (ctypes.c_ubyte * pages)()
        rc = _libc.mincore(ctypes.c_void_p(base + start), ctypes.c_size_t(offset + size - start), vec)
        assert rc == 0, os.strerror(ctypes.get_errno())
        return sum(v & 1 for v in vec) / pages
    finally:
        del base
        mm.close()


def evict(*paths) -> None:
    """Drop the files from the page cache; skip when the filesystem keeps them."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    for p in paths:
        if resident(p) > 0.05:
            pytest.skip("this filesystem keeps the files in the page cache (cold reads cannot be set up)")


def weights(n_tensors: int = 6, rows: int = 256, cols: int = 1024, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {f"layer.{i:02d}.weight": rng.standard_normal((rows, cols), dtype=np.float32) for i in range(n_tensors)}


@pytest.fixture()
def model(tmp_path):
    tensors = weights()
    tensors["ids"] = np.arange(1000, dtype=np.int64)
    path = tmp_path / "model.safetensors"
    fnp.save_file(tensors, path)
    return path, tensors


def sharded(tmp_path, n_shards: int = 3):
    tensors = weights(9, 128, 1024)
    names = sorted(tensors)
    weight_map = {}
    for s in range(n_shards):
        part = {n: tensors[n] for n in names[s::n_shards]}
        fname = f"model-{s + 1:05d}-of-{n_shards:05d}.safetensors"
        fnp.save_file(part, tmp_path / fname)
        weight_map.update({n: fname for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return tensors, sorted(set(weight_map.values()))


# -- the engine from Python --------------------------------------------------------------------

def test_plan_reads_into_arrays_and_reports_what_it_did(model):
    path, tensors = model
    f = _core.File(str(path), "pread")
    plan = _core.ReadPlan()
    outs = []
    for name in f.offset_keys():
        _, _, _, b, e = f.info(name)
        outs.append((name, np.empty(e - b, np.uint8)))
        plan.read(f, f.data_start + b, outs[-1][1])
    job = _core.ReadJob(plan, threads=3, request_bytes=64 * 1024)
    job.wait()
    stats = job.stats()
    job.close()
    assert stats.bytes_read == sum(a.size for _, a in outs)
    # The tensors are adjacent: joined, then cut at 64 KiB, so about size / 64 KiB requests.
    assert stats.bytes_read // (64 * 1024) <= stats.requests <= stats.bytes_read // (64 * 1024) + len(outs)
    for name, raw in outs:
        np.testing.assert_array_equal(raw.view(tensors[name].dtype).reshape(tensors[name].shape), tensors[name])


@pytest.mark.parametrize("case", ["overlap", "past-end", "negative", "pread-prefetch", "readonly", "wrong-dtype",
                                  "strided"])
def test_bad_plans_are_typed_errors(model, case):
    path, _ = model
    f = _core.File(str(path), "mmap")
    p = _core.File(str(path), "pread")
    buf = np.zeros(4096, np.uint8)
    plan = _core.ReadPlan()
    if case == "overlap":
        plan.read(f, 0, buf[:100])
        plan.read(f, 500, buf[50:200])
        with pytest.raises(fastensors.InvalidArgument, match="overlapping destinations"):
            _core.ReadJob(plan)
    elif case == "past-end":
        plan.read(f, f.file_size - 10, buf[:11])
        with pytest.raises(fastensors.InvalidArgument, match="past the end"):
            _core.ReadJob(plan)
    elif case == "negative":
        with pytest.raises(TypeError):
            plan.read(f, -1, buf)
    elif case == "pread-prefetch":
        plan.prefetch(p, 0, 10)
        with pytest.raises(fastensors.InvalidArgument, match="mapped file"):
            _core.ReadJob(plan)
    elif case == "readonly":
        ro = np.zeros(10, np.uint8)
        ro.flags.writeable = False
        with pytest.raises(TypeError):
            plan.read(f, 0, ro)
    elif case == "wrong-dtype":
        with pytest.raises(TypeError):
            plan.read(f, 0, np.zeros(10, np.float32))
    elif case == "strided":
        with pytest.raises(TypeError):
            plan.read(f, 0, np.zeros(20, np.uint8)[::2])


def test_wait_entry_bounds_and_closed_job(model):
    path, _ = model
    f = _core.File(str(path), "pread")
    plan = _core.ReadPlan()
    plan.read(f, 0, np.empty(8, np.uint8))
    job = _core.ReadJob(plan)
    job.wait_entry(0)
    with pytest.raises(fastensors.InvalidArgument, match="does not exist"):
        job.wait_entry(1)
    job.close()
    job.close()  # twice is fine
    with pytest.raises(fastensors.InvalidArgument, match="closed"):
        job.wait()


# -- loaders -----------------------------------------------------------------------------------

@pytest.mark.parametrize("loader", ["numpy", "torch", "safe_open"])
def test_cold_load_makes_the_mapping_resident_and_stays_zero_copy(model, loader):
    path, tensors = model
    evict(path)
    if loader == "numpy":
        out = fnp.load_file(path)
    elif loader == "torch":
        out = {k: v.numpy() for k, v in ft.load_file(path).items()}
    else:
        with fastensors.safe_open(path, "np") as f:
            out = f.get_tensors()
    # Before anything is touched, the engine has read the file.
    assert resident(path) > 0.95
    ref = ref_np.load_file(str(path))
    assert sorted(out) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])
    # Zero-copy: the arrays are views of a mapping, not fresh buffers.
    assert not out["layer.00.weight"].flags.owndata


def test_warm_load_does_no_io(model, monkeypatch):
    path, _ = model
    fnp.load_file(path)  # cached now
    seen = []
    real = plans.prefetch

    def spy(ranges):
        stats = real(ranges)
        seen.append(stats)
        return stats

    monkeypatch.setattr("fastensors.format.reader.prefetch", spy)
    fnp.load_file(path)
    assert len(seen) == 1
    assert seen[0].requests == 0 and seen[0].bytes_populated == 0
    assert seen[0].bytes_cached >= os.path.getsize(path) - 2 * _PAGE - 8 * 1024


def test_pread_backend_reads_fresh_arrays_in_parallel(model):
    path, tensors = model
    out = ft.load_file(path, backend="pread")
    for k, v in tensors.items():
        np.testing.assert_array_equal(out[k].numpy(), v)
        assert out[k].numpy().flags.owndata or out[k].numpy().base is not None


@pytest.mark.parametrize("order", ["file", "sorted"])
def test_get_tensor_loop_reads_ahead_of_the_consumer(tmp_path, order):
    # The writer puts wider dtypes first: F64 "w0, w2, ..." then F32 "w1,
    # w3, ...", so neighbours in one order are never neighbours in the other.
    rng = np.random.default_rng(1)
    tensors = {f"w{i}": rng.standard_normal((256, 1024)) if i % 2 == 0 else
               rng.standard_normal((512, 1024), dtype=np.float32) for i in range(8)}
    path = tmp_path / "m.safetensors"
    fnp.save_file(tensors, path)
    evict(path)
    with fastensors.safe_open(path, "np") as f:
        keys = f.offset_keys() if order == "file" else f.keys()
        assert keys != (f.keys() if order == "file" else f.offset_keys())
        last = f.tensor_info(keys[-1])
        start = f._file.data_start + last.data_offsets[0]
        f.get_tensor(keys[0])
        f.get_tensor(keys[1])  # the pattern: the rest is read ahead
        deadline = time.monotonic() + 10
        while resident(path, start, last.nbytes) < 0.99 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert resident(path, start, last.nbytes) >= 0.99, "the last tensor was not read ahead"
        for k in keys:
            np.testing.assert_array_equal(f.get_tensor(k), tensors[k])


def test_random_access_is_not_read_ahead(tmp_path):
    tensors = weights(8, 64, 1024)  # 256 KiB each: under the size read alone in parallel
    path = tmp_path / "m.safetensors"
    fnp.save_file(tensors, path)
    evict(path)
    with fastensors.safe_open(path, "np") as f:
        keys = f.offset_keys()
        for k in (keys[5], keys[2], keys[7]):
            np.testing.assert_array_equal(f.get_tensor(k), tensors[k])
        assert f._ahead._job is None


def test_checkpoint_get_tensors_reads_every_shard_in_one_plan(tmp_path, monkeypatch):
    tensors, files = sharded(tmp_path)
    evict(*(tmp_path / f for f in files))
    calls = []
    real = plans.prefetch

    def spy(ranges):
        calls.append({os.path.basename(r[0].path) for r in ranges})
        return real(ranges)

    monkeypatch.setattr("fastensors.checkpoint.reader._prefetch", spy)
    with fastensors.open_checkpoint(tmp_path) as ckpt:
        out = ckpt.get_tensors()
    assert calls == [set(files)]
    for f in files:
        assert resident(tmp_path / f) > 0.95
    for k, v in tensors.items():
        np.testing.assert_array_equal(out[k], v)


def test_checkpoint_iteration_reads_ahead_across_shards(tmp_path):
    tensors, files = sharded(tmp_path)
    evict(*(tmp_path / f for f in files))
    with fastensors.open_checkpoint(tmp_path) as ckpt:
        keys = list(ckpt)  # sorted names: every shard in turn
        ckpt.get_tensor(keys[0])
        ckpt.get_tensor(keys[1])  # the pattern: the rest is read ahead, shard after shard

        def ahead_resident():
            out = []
            for k in keys[2:]:
                handle = ckpt._shard(ckpt.file_of(k))
                info = handle.tensor_info(k)
                out.append(resident(tmp_path / ckpt.file_of(k), handle._file.data_start + info.data_offsets[0],
                                    info.nbytes))
            return min(out)

        deadline = time.monotonic() + 10
        while ahead_resident() < 0.99 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ahead_resident() >= 0.99
        for k in keys:
            np.testing.assert_array_equal(ckpt.get_tensor(k), tensors[k])


def test_checkpoint_prefetch_hint(tmp_path):
    tensors, files = sharded(tmp_path)
    evict(*(tmp_path / f for f in files))
    with fastensors.open_checkpoint(tmp_path) as ckpt:
        wanted = ckpt.tensors_in_file(files[2])
        ckpt.prefetch(wanted + wanted[:1])  # a name given twice is read once
        assert ckpt._ahead._job is not None
        for k in wanted:
            np.testing.assert_array_equal(ckpt.get_tensor(k), tensors[k])
        assert resident(tmp_path / files[2]) > 0.95
        assert resident(tmp_path / files[0]) < 0.5  # only what was asked for
        with pytest.raises(fastensors.TensorNotFound):
            ckpt.prefetch(["no.such.tensor"])


def test_threads_sharing_a_reader_get_the_right_bytes(tmp_path):
    tensors = weights(12, 128, 512)
    path = tmp_path / "m.safetensors"
    fnp.save_file(tensors, path)
    errors = []
    with fastensors.safe_open(path, "np") as f:
        keys = f.offset_keys()

        def work(order):
            try:
                for k in order:
                    np.testing.assert_array_equal(f.get_tensor(k), tensors[k])
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(keys if i % 2 else keys[::-1],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors, errors


def test_load_pretrained_reads_through_the_engine(tmp_path):
    lin = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 8))
    fastensors.save_sharded(lin.state_dict(), tmp_path, max_shard_size=4000)
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 1
    evict(*(tmp_path / s for s in shards))
    fresh = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 8))
    ft.load_pretrained(fresh, tmp_path)
    for a, b in zip(lin.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


# -- the GPU path ------------------------------------------------------------------------------

def test_staging_ring_splits_and_packs_tensors_on_the_cpu(model):
    """The ring's logic (fills packed from small tensors, large ones split,
    buffers reused) with the CPU as the destination: the same code as for a
    GPU except the asynchronous copies."""
    from fastensors.format.arrays import get_framework
    from fastensors.format.staging import load_staged

    path, tensors = model
    with fastensors.safe_open(path, "pt", backend="pread") as f:
        wanted = [(n, f._file.info(n)) for n in f._file.offset_keys()]
        out = load_staged(f._file, wanted, f._framework, "cpu", buffers=2, buffer_bytes=300_000)
    for k, v in tensors.items():
        assert torch.equal(out[k], torch.from_numpy(v))
    with pytest.raises(fastensors.InvalidArgument, match="even number"):
        load_staged(None, [], get_framework("pt"), "cpu", buffers=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_gpu_load_stages_through_pinned_buffers(model, backend):
    path, tensors = model
    out = ft.load_file(path, device="cuda:0", backend=backend)
    for k, v in tensors.items():
        assert out[k].device.type == "cuda"
        assert torch.equal(out[k].cpu(), torch.from_numpy(v))
    with fastensors.safe_open(path, "pt", device="cuda:0") as f:
        assert torch.equal(f.get_tensor("ids").cpu(), torch.from_numpy(tensors["ids"]))


# -- files that change, disks that fail ---------------------------------------------------------

@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_a_file_cut_before_the_load_is_file_changed(model, backend):
    path, _ = model
    with fastensors.safe_open(path, "np", backend=backend) as f:
        os.truncate(path, os.path.getsize(path) // 2)  # the pages past the new end leave the cache too
        with pytest.raises(fastensors.FileChanged, match="offset") as e:
            f.get_tensors()
        assert e.value.path == str(path)


@pytest.mark.parametrize("request_bytes", [0, 1000, 300_000, 4096 * 3])
def test_requests_of_any_size_split_on_pages(model, request_bytes):
    """Requests are split at page boundaries whatever request_bytes asks, so
    populate calls stay valid: a file cut short is the engine's own
    FileChanged naming the offset (not the consumer's fault guard)."""
    path, tensors = model
    f = fastensors._core.File(str(path), "mmap")
    try:
        plan = fastensors._core.ReadPlan()
        for _, _, _, begin, end in f.infos():
            plan.prefetch(f, f.data_start + begin, end - begin)
        os.truncate(path, os.path.getsize(path) // 2)
        job = fastensors._core.ReadJob(plan, request_bytes=request_bytes)
        try:
            with pytest.raises(fastensors.FileChanged, match="offset"):
                job.wait()
        finally:
            job.close()
    finally:
        f.close()


SHIM_WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastensors, fastensors.numpy as fnp
    path, backend = sys.argv[1], sys.argv[2]
    try:
        out = fnp.load_file(path, backend=backend)
        print(json.dumps({"ok": {k: float(np.asarray(v, np.float64).sum()) for k, v in out.items()}}))
    except fastensors.SafetensorError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e), "path": e.path}))
""")


def run_with_shim(shim, path, backend, **env):
    full = dict(os.environ, LD_PRELOAD=shim, FASTENSORS_FAULT_DIR=str(path.parent), **env)
    proc = subprocess.run([sys.executable, "-c", SHIM_WORKER, str(path), backend], env=full, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eio_in_the_middle_of_a_plan_names_file_and_offset(fault_shim, tmp_path):
    path = tmp_path / "big.safetensors"
    fnp.save_file(weights(5, 1024, 1024), path)  # 20 MiB: three 8 MiB requests
    # Call 1 reads the header's length, call 2 the header; 4 is the plan's second request.
    got = run_with_shim(fault_shim, path, "pread", FASTENSORS_FAULT_OP="read", FASTENSORS_FAULT_N="4",
                        FASTENSORS_READ_THREADS="1")
    assert got.get("error") == "SafetensorIOError", got
    assert "at offset 8389" in got["message"], got  # 8 MiB into the data, after the header
    assert "offset" in got["message"] and "Input/output error" in got["message"], got
    assert got["path"] == str(path)


def test_eio_while_populating_a_mapping(fault_shim, model):
    path, _ = model
    evict(path)
    got = run_with_shim(fault_shim, path, "mmap", FASTENSORS_FAULT_OP="populate", FASTENSORS_FAULT_N="1")
    assert got.get("error") == "SafetensorIOError", got
    assert "offset" in got["message"], got


@pytest.mark.parametrize("backend", ["pread", "mmap"])
def test_short_reads_are_resumed(fault_shim, model, backend):
    path, tensors = model
    got = run_with_shim(fault_shim, path, backend, FASTENSORS_FAULT_SHORT="1")
    assert "ok" in got, got
    for k, v in tensors.items():
        assert got["ok"][k] == float(np.asarray(v, np.float64).sum())


@pytest.mark.parametrize("backend", ["mmap", "pread"])
def test_a_file_written_in_place_while_open_is_file_changed(model, backend):
    path, tensors = model
    with fastensors.safe_open(path, "np", backend=backend) as f:
        with open(path, "r+b") as fh:  # same size, other bytes: an in-place edit
            fh.seek(os.path.getsize(path) - 4)
            fh.write(b"\xff" * 4)
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        with pytest.raises(fastensors.FileChanged, match="written to while open"):
            f.get_tensors()
    # A file renamed over the path is another file: the open one reads as before.
    with fastensors.safe_open(path, "np", backend=backend) as f:
        fnp.save_file({"other": np.zeros(3, np.float32)}, path)
        assert f.get_tensors().keys() == tensors.keys()
