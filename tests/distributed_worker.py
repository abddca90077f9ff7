"""One rank of tests/test_distributed.py, run by torchrun (gloo, loopback):

    python -m torch.distributed.run --nproc-per-node N distributed_worker.py SCENARIO OUT

Every rank builds the same full tensors (``full_state_dict``), makes them
DTensors of a given layout, and runs the scenario. Each check compares with
an independent oracle (the full tensors; ``save_sharded`` of the full state
dict; torch's own HF storage; huggingface_hub's writer). A rank writes what
it saw to ``OUT/rank<r>.json``; a failed check raises (the launch fails).
Collectives run under a 60 s process-group timeout."""

from __future__ import annotations

import datetime
import filecmp
import gc
import hashlib
import json
import os
import signal
import sys
import traceback

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.device_mesh import init_device_mesh

import fastensors
from fastensors import distributed as fd
from fastensors.distributed import io as dio
from fastensors.distributed.api import typed_failure
from torchrun_helpers import expect_error  # this folder is on sys.path

MAX_SHARD = 1500  # bytes: several files


def full_state_dict() -> dict:
    """The full tensors, identical on every rank (and in the test process)."""
    g = torch.Generator().manual_seed(1234)
    raw8 = torch.randint(0, 256, (16, 8), generator=g, dtype=torch.uint8)
    return {
        "model.embed.weight": torch.randn(48, 16, generator=g).to(torch.bfloat16),
        "model.proj.weight": torch.randn(12, 10, generator=g),
        "model.position_ids": torch.arange(40, dtype=torch.int64).reshape(1, 40),
        "model.mask": torch.rand(7, 5, generator=g) > 0.5,
        "model.f8.weight": raw8.view(torch.float8_e4m3fn),
        "model.norm.weight": torch.randn(16, generator=g).to(torch.float16),
        "model.scale": torch.tensor(0.125),
        "model.counts": torch.randint(-1000, 1000, (9, 3), generator=g, dtype=torch.int32),
    }


# Placements when saving, and another layout when loading (resharding).
SAVE_LAYOUT = {
    "model.embed.weight": [Shard(0)], "model.proj.weight": [Shard(1)], "model.position_ids": [Replicate()],
    "model.f8.weight": [Shard(0)], "model.norm.weight": [Shard(0)], "model.counts": [Shard(0)],
}
LOAD_LAYOUT = {
    "model.embed.weight": [Shard(1)], "model.proj.weight": [Shard(0)], "model.position_ids": [Shard(1)],
    "model.f8.weight": [Replicate()], "model.norm.weight": [Replicate()], "model.counts": [Shard(1)],
}
FLOATS = ["model.embed.weight", "model.proj.weight", "model.norm.weight"]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaN patterns of FP8 included)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.contiguous(), b.contiguous()
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def distribute(full: dict, layout: dict, mesh) -> dict:
    return {k: distribute_tensor(v, mesh, layout[k], src_data_rank=None) if k in layout else v.clone() for k, v in full.items()}


def empty_like_layout(full: dict, layout: dict, mesh) -> dict:
    """Destinations of the layout, filled with a value no checkpoint holds."""
    out = {}
    for k, v in full.items():
        z = torch.full_like(v.view(torch.uint8) if v.dtype == torch.float8_e4m3fn else v, 0x7)
        z = z.view(v.dtype) if v.dtype == torch.float8_e4m3fn else z
        out[k] = distribute_tensor(z, mesh, layout[k], src_data_rank=None) if k in layout else z
    return out


def check_equal(dest: dict, full: dict, what: str) -> None:
    for k, v in dest.items():
        if isinstance(v, DTensor):
            got = v.full_tensor()
            local = v.to_local()
            from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
            shape, off = compute_local_shape_and_global_offset(v.shape, v.device_mesh, v.placements)
            want = full[k]
            for d, (o, s) in enumerate(zip(off, shape)):
                want = want.narrow(d, o, s)
            assert same(local, want), f"{what}: local piece of {k} differs"
        else:
            got = v
        assert same(got, full[k]), f"{what}: {k} differs"


def locals_of(dest: dict) -> dict:
    """The rank's own pieces as plain tensors (copies)."""
    return {k: (v.to_local() if isinstance(v, DTensor) else v).clone() for k, v in dest.items()}


def local_bytes(dest: dict) -> int:
    n = 0
    for v in dest.values():
        t = v.to_local() if isinstance(v, DTensor) else v
        n += t.numel() * t.element_size()
    return n


def tree_digest(path: str) -> dict:
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def scenario_main(out: str, rank: int, world: int, mesh) -> dict:
    seen: dict = {}
    full = full_state_dict()
    ckpt = os.path.join(out, "ckpt")

    # 1. Save DTensors of every placement and dtype; the files are save_sharded's.
    fd.save(distribute(full, SAVE_LAYOUT, mesh), ckpt, max_shard_size=MAX_SHARD, metadata={"run": "test"})
    dist.barrier()
    if rank == 0:
        ref = os.path.join(out, "ref")
        fastensors.save_sharded(full, ref, max_shard_size=MAX_SHARD, metadata={"run": "test"})
        names = sorted(os.listdir(ref))
        assert sorted(os.listdir(ckpt)) == names, (os.listdir(ckpt), names)
        assert len(names) > 2, names
        for n in names:
            assert filecmp.cmp(os.path.join(ckpt, n), os.path.join(ref, n), shallow=False), f"{n} differs"
        seen["files"] = names
    dist.barrier()

    # 2. Load into another layout: each rank reads exactly its pieces' bytes.
    dest = empty_like_layout(full, LOAD_LAYOUT, mesh)
    before = dio.bytes_requested()
    fd.load(dest, ckpt)
    seen["bytes_read"] = dio.bytes_requested() - before
    seen["bytes_local"] = local_bytes(dest)
    assert seen["bytes_read"] == seen["bytes_local"], seen
    check_equal(dest, full, "reshard load")

    # 3. torch's own HF reader reads our output (an independent reader).
    from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
    dest = empty_like_layout(full, LOAD_LAYOUT, mesh)
    dcp.load(dest, storage_reader=HuggingFaceStorageReader(ckpt))
    check_equal(dest, full, "torch HF reader")

    # 4. torch's per-rank output (float tensors: torch's consolidation refuses ints), read by us.
    floats = {k: full[k] for k in FLOATS}
    tdir = os.path.join(out, "torch_dist")
    dcp.save(distribute(floats, SAVE_LAYOUT, mesh), storage_writer=HuggingFaceStorageWriter(tdir, save_distributed=True))
    dist.barrier()
    dest = empty_like_layout(floats, LOAD_LAYOUT, mesh)
    fd.load(dest, tdir)
    check_equal(dest, floats, "torch per-rank files")
    plain = locals_of(empty_like_layout(floats, LOAD_LAYOUT, mesh))
    fd.load_tensor_parallel(plain, tdir, placements={k: LOAD_LAYOUT[k] for k in plain}, device_mesh=mesh)
    dest = {k: DTensor.from_local(v, mesh, LOAD_LAYOUT[k], run_check=False) for k, v in plain.items()}
    check_equal(dest, floats, "torch per-rank files, tensor-parallel helper")

    # 5. A checkpoint huggingface_hub wrote, into DTensors, three ways.
    hub = os.path.join(out, "hub")
    if rank == 0:
        from huggingface_hub import save_torch_state_dict
        os.makedirs(hub)
        save_torch_state_dict(full, hub, max_shard_size=MAX_SHARD)
    dist.barrier()
    dest = empty_like_layout(full, LOAD_LAYOUT, mesh)
    fd.load(dest, hub)
    check_equal(dest, full, "hub checkpoint, DCP")
    dest = empty_like_layout(full, LOAD_LAYOUT, mesh)
    before = dio.bytes_requested()
    result = fd.load_tensor_parallel(dest, hub)
    assert dio.bytes_requested() - before == local_bytes(dest)
    assert result.missing_keys == [] and result.unexpected_keys == [], result
    check_equal(dest, full, "hub checkpoint, tensor-parallel helper")
    dest = empty_like_layout(full, LOAD_LAYOUT, mesh)
    before = dio.bytes_requested()
    fd.load_tensor_parallel(dest, hub, broadcast=True)
    read = dio.bytes_requested() - before
    total = sum(v.numel() * v.element_size() for v in full.values())
    assert read == (total if rank == 0 else 0), (rank, read, total)
    check_equal(dest, full, "hub checkpoint, read once and broadcast")

    # 6. Bad input: the same typed error on every rank, no hang.
    bad = empty_like_layout(full, LOAD_LAYOUT, mesh)
    bad["model.proj.weight"] = distribute_tensor(torch.zeros(12, 11), mesh, [Shard(0)], src_data_rank=None)
    seen["shape"] = expect_error(lambda: fd.load(bad, ckpt), fastensors.StateDictMismatch)
    bad = empty_like_layout(full, LOAD_LAYOUT, mesh)
    bad["model.counts"] = distribute_tensor(torch.zeros(9, 3, dtype=torch.int64), mesh, [Shard(1)], src_data_rank=None)
    seen["dtype"] = expect_error(lambda: fd.load(bad, ckpt), fastensors.StateDictMismatch)
    bad = dcp_dtype = empty_like_layout(full, LOAD_LAYOUT, mesh)
    dcp_dtype["model.counts"] = distribute_tensor(torch.zeros(9, 3, dtype=torch.int64), mesh, [Shard(1)], src_data_rank=None)

    def plain_dcp_load():
        try:
            dcp.load(dcp_dtype, storage_reader=fd.StorageReader(ckpt))  # DCP's own planner: caught when reading
        except CheckpointException as e:
            raise typed_failure(e, rank) from None
    seen["dtype_dcp_planner"] = expect_error(plain_dcp_load, fastensors.StateDictMismatch)
    bad = empty_like_layout(full, LOAD_LAYOUT, mesh)
    bad["model.absent"] = torch.zeros(3)
    seen["missing"] = expect_error(lambda: fd.load(bad, ckpt), fastensors.StateDictMismatch)
    fd.load(bad, ckpt, strict=False)
    del bad["model.absent"]
    check_equal(bad, full, "partial load")
    # A mismatch on one rank only: that rank's error there, RankFailed elsewhere.
    plain = locals_of(empty_like_layout(full, LOAD_LAYOUT, mesh))
    if rank == world - 1:
        plain["model.mask"] = torch.zeros(7, 6, dtype=torch.bool)
    seen["one_rank"] = expect_error(
        lambda: fd.load_tensor_parallel(plain, ckpt, placements={k: LOAD_LAYOUT[k] for k in LOAD_LAYOUT},
                                        device_mesh=mesh),
        fastensors.StateDictMismatch, fastensors.RankFailed)
    assert seen["one_rank"][0] == ("StateDictMismatch" if rank == world - 1 else "RankFailed"), seen["one_rank"]
    # The checkpoint changes between its headers and its data being read.
    reader = fd.StorageReader(ckpt)
    reader.catalog  # headers read now
    dist.barrier()
    first = os.path.join(ckpt, seen.get("files", sorted(os.listdir(ckpt)))[0])
    if rank == 0:
        st = os.stat(first)
        os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    dist.barrier()

    def changed_load():
        try:
            dcp.load(empty_like_layout(full, LOAD_LAYOUT, mesh), storage_reader=reader)
        except CheckpointException as e:
            raise typed_failure(e, rank) from None
    seen["changed"] = expect_error(changed_load, fastensors.FileChanged)
    # Not a tensor.
    seen["not_tensor"] = expect_error(lambda: fd.save({"step": 3, **full}, os.path.join(out, "x")),
                                      fastensors.InvalidArgument)
    # One rank fails while writing: every rank raises, the checkpoint is untouched.
    digest = tree_digest(ckpt)
    real = dio.write_runs
    if rank == world - 1:
        def failing(*a, **k):
            raise fastensors.SafetensorIOError("disk full (injected)")
        dio.write_runs = failing
        sys.modules["fastensors.distributed.writer"].write_runs = failing
    changed = {k: v + 1 if v.dtype == torch.float32 else v for k, v in full.items()}
    seen["write_failed"] = expect_error(
        lambda: fd.save(distribute(changed, SAVE_LAYOUT, mesh), ckpt, max_shard_size=MAX_SHARD),
        fastensors.SafetensorIOError)
    sys.modules["fastensors.distributed.writer"].write_runs = real
    dio.write_runs = real
    gc.collect()
    dist.barrier()
    assert tree_digest(ckpt) == digest, "a failed save changed the checkpoint"
    leftovers = [n for n in os.listdir(out) if ".fastensors-staging-" in n]
    assert not leftovers, leftovers
    dist.barrier()  # every rank has looked before rank 0 writes again
    seen.update(check_convert(out, rank, world))
    return seen


def check_convert(out: str, rank: int, world: int) -> dict:
    """fastensors.distributed.convert_file: the shards shared out, the files
    those of the one-process convert_file."""
    src, dst, ref = (os.path.join(out, n) for n in ("conv_src", "conv_dst", "conv_ref"))
    if rank == 0:
        floats = {f"layer.{i}.weight": torch.randn(16, 8, generator=torch.Generator().manual_seed(i))
                  for i in range(2 * world + 1)}
        floats["ids"] = torch.arange(5)
        fastensors.save_sharded(floats, src, max_shard_size=600)
        with open(os.path.join(src, "config.json"), "w") as f:
            f.write('{"model_type": "test"}')
        fastensors.convert_file(src, ref, "bf16")
    dist.barrier()
    before = dio.bytes_requested()
    module = sys.modules["fastensors.distributed.convert"]
    calls = []
    real = module._convert_one
    module._convert_one = lambda s, *a, **k: (calls.append(s), real(s, *a, **k))
    report = fd.convert_file(src, dst, "bf16")
    module._convert_one = real
    assert dio.bytes_requested() == before
    if rank == 0:
        assert sorted(os.listdir(dst)) == sorted(os.listdir(ref))
        for n in os.listdir(ref):
            assert filecmp.cmp(os.path.join(dst, n), os.path.join(ref, n), shallow=False), n
    dist.barrier()
    # One rank fails converting: every rank raises, the converted set stays as it was.
    digest = tree_digest(dst)
    if rank == world - 1:
        def failing(*a, **k):
            raise fastensors.SafetensorIOError("disk full (injected)")
        module._convert_one = failing
    failed = expect_error(lambda: fd.convert_file(src, dst, "f16"), fastensors.SafetensorIOError,
                          fastensors.RankFailed)
    module._convert_one = real
    dist.barrier()
    assert tree_digest(dst) == digest
    assert failed[0] == ("SafetensorIOError" if rank == world - 1 else "RankFailed"), failed
    assert not [n for n in os.listdir(out) if ".fastensors-staging-" in n]
    return {"convert_shards": len(calls), "convert_converted": len(report.converted),
            "convert_bytes_out": report.bytes_out, "convert_failed": failed}


def scenario_kill(out: str, rank: int, world: int, mesh) -> dict:
    """Save once, then save again and have the last rank killed while writing."""
    full = full_state_dict()
    ckpt = os.path.join(out, "ckpt")
    fd.save(distribute(full, SAVE_LAYOUT, mesh), ckpt, max_shard_size=MAX_SHARD)
    dist.barrier()
    if rank == 0:
        with open(os.path.join(out, "before.json"), "w") as f:
            json.dump(tree_digest(ckpt), f)
    dist.barrier()
    if rank == world - 1:
        real = dio.write_runs

        def dying(*a, **k):
            real(*a, **k)  # some bytes are in the staged files, then the rank dies
            os.kill(os.getpid(), signal.SIGKILL)
        sys.modules["fastensors.distributed.writer"].write_runs = dying
    changed = {k: v + 1 if v.dtype == torch.float32 else v for k, v in full.items()}
    fd.save(distribute(changed, SAVE_LAYOUT, mesh), ckpt, max_shard_size=MAX_SHARD)
    return {"saved_again": True}  # not reached by a correct run


def scenario_mesh2d(out: str, rank: int, world: int, mesh) -> dict:
    """A 2x2 mesh: (Shard(0), Shard(1)) saved, (Shard(1), Replicate()) loaded."""
    mesh2 = init_device_mesh("cpu", (2, world // 2))
    full = full_state_dict()
    save = {k: [Shard(0), Shard(1)] for k in ("model.embed.weight", "model.proj.weight", "model.counts")}
    load = {k: [Shard(1), Replicate()] for k in save}
    ckpt = os.path.join(out, "ckpt2d")
    fd.save(distribute(full, save, mesh2), ckpt, max_shard_size=MAX_SHARD)
    dist.barrier()
    if rank == 0:
        ref = os.path.join(out, "ref2d")
        fastensors.save_sharded(full, ref, max_shard_size=MAX_SHARD)
        for n in os.listdir(ref):
            assert filecmp.cmp(os.path.join(ckpt, n), os.path.join(ref, n), shallow=False), n
    dest = empty_like_layout(full, load, mesh2)
    fd.load(dest, ckpt)
    check_equal(dest, full, "2-D mesh")
    return {"mesh2d": True}


def main() -> int:
    scenario, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    try:
        seen = {"main": scenario_main, "kill": scenario_kill, "mesh2d": scenario_mesh2d}[scenario](out, rank, world,
                                                                                               mesh)
        seen["ok"] = True
    except BaseException:
        seen = {"ok": False, "error": traceback.format_exc()}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(seen, f, indent=1, default=str)
    # Every rank reaches the teardown before any closes its connections: a
    # gloo pair torn down while a peer still sends can abort the process.
    if seen["ok"]:
        dist.barrier()
    dist.destroy_process_group()
    return 0 if seen["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
