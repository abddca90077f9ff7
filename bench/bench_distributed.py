"""Distributed checkpoints: fastensors' DCP storage against torch's own
Hugging Face storage (``HuggingFaceStorageWriter``/``Reader``) in the same
run, on the same float-only workload (torch's consolidation refuses ints).

    python bench/bench_distributed.py                  # 128 MiB, 2 ranks, 3 rounds
    python bench/bench_distributed.py --size-mib 512 --nproc 2 --runs 5
    python bench/bench_distributed.py --only quantize --quant-mib 256

It launches itself under torchrun (gloo, loopback). The state dict is BF16
DTensors on a 1-D mesh of all ranks: half the tensors row-sharded
(Shard(0)), half column-sharded (Shard(1)), 4096 columns each.

  save       dcp.save with fastensors.distributed.StorageWriter (durable,
             and durable=False) vs HuggingFaceStorageWriter(save_distributed=
             True, enable_consolidation=True) given the same file split:
             both produce model-0000i-of-0000n.safetensors + index; every
             save starts after a sync (no writeback of the save before it)
  load       dcp.load into DTensors of the same layout from that checkpoint,
             files warm in the page cache: StorageReader vs
             HuggingFaceStorageReader, and the limit: every rank copying
             the same bytes from memory it holds into the same destinations
  cold load  the same after evicting the files from the page cache
             (fsync, posix_fadvise DONTNEED): ours vs torch vs plain pread
             of the same bytes by the same ranks (the device's limit)

  quantize   fastensors.quantize_model (int4 group 128, validate=True) of a
             sharded BF16 llama-like model of --quant-mib: one process
             (rank 0 alone, the others idle) vs quantize_model(...,
             process_group="default") on every rank; the output files are
             compared byte for byte once

Per variant and rank: wall seconds from a barrier to the call's return, and
peak RSS growth during the call (VmHWM reset through /proc/self/clear_refs
before it). Variants alternate order round by round; medians of --runs
rounds. Results: markdown to stdout, JSON to bench/results/."""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import MiB, machine_info, markdown_table, proc_status_kib, reset_peak_rss, write_json  # noqa: E402

COLS = 4096
N_TENSORS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args) -> int:
    work = tempfile.mkdtemp(prefix="bench-distributed-", dir=args.dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc), "--nnodes", "1",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), os.path.abspath(__file__), "--worker",
           "--size-mib", str(args.size_mib), "--runs", str(args.runs), "--dir", work, "--only", args.only,
           "--quant-mib", str(args.quant_mib)]
    try:
        return subprocess.run(cmd, env=env, timeout=1800).returncode
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the worker (one rank) ---------------------------------------------------------

def state_dict(size_mib: int, mesh):
    import torch
    from torch.distributed.tensor import Shard, distribute_tensor

    rows = size_mib * MiB // 2 // COLS // N_TENSORS
    g = torch.Generator().manual_seed(0)
    out = {}
    for i in range(N_TENSORS):
        full = torch.randn(rows, COLS, generator=g).to(torch.bfloat16)
        out[f"layers.{i:02d}.weight"] = distribute_tensor(full, mesh, [Shard(i % 2)], src_data_rank=None)
    return out


def empty_like(sd):
    import torch

    return {k: torch.distributed.tensor.DTensor.from_local(torch.empty_like(v.to_local()), v.device_mesh,
                                                           v.placements, run_check=False) for k, v in sd.items()}


def evict(directory: str) -> None:
    for root, _dirs, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(fn, settle: bool = False):
    """(seconds, peak RSS growth in MiB) of one call, after a barrier.
    ``settle``: write every dirty page out first (sync), so that a save does
    not share the device with the writeback of the variant before it."""
    import torch.distributed as dist

    import ctypes
    import gc
    if settle:
        os.sync()
    gc.collect()
    # Freed heap goes back to the OS first, or a variant reusing what an
    # earlier one freed would show no growth.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    dist.barrier()
    ok = reset_peak_rss()
    before = proc_status_kib("VmRSS")
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    peak = proc_status_kib("VmHWM") if ok else float("nan")
    dist.barrier()
    return dt, (peak - before) / 1024


def plain_pread(ckpt: str, sd) -> None:
    """Read the bytes this rank's pieces need with os.pread, 16 MiB at a time
    for row pieces, one run per row for column pieces (what any reader must)."""
    import json

    from fastensors.distributed.layout import byte_runs

    with open(os.path.join(ckpt, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    heads = {}
    for fname in set(weight_map.values()):
        with open(os.path.join(ckpt, fname), "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            heads[fname] = (8 + n, json.loads(f.read(n)))
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    fds = {fname: os.open(os.path.join(ckpt, fname), os.O_RDONLY) for fname in heads}
    try:
        for name, v in sd.items():
            fname = weight_map[name]
            start, header = heads[fname]
            begin = start + header[name]["data_offsets"][0]
            shape, off = compute_local_shape_and_global_offset(v.shape, v.device_mesh, v.placements)
            starts, length = byte_runs(v.shape, 2, off, shape)
            buf = bytearray(min(length, 16 * MiB))
            for s in starts:
                done = 0
                while done < length:
                    n = min(len(buf), length - done)
                    os.preadv(fds[fname], [memoryview(buf)[:n]], begin + int(s) + done)
                    done += n
    finally:
        for fd in fds.values():
            os.close(fd)


QUANT_HIDDEN, QUANT_INTER = 1024, 2816


def llama_like(path: str, size_mib: int) -> None:
    """A BF16 llama-like checkpoint of about ``size_mib`` MiB in 4 shards, with config.json."""
    import json

    import numpy as np

    import fastensors
    import fastensors.numpy  # noqa: F401
    from ml_dtypes import bfloat16

    rng = np.random.default_rng(0)
    h, i = QUANT_HIDDEN, QUANT_INTER
    per_layer = (4 * h * h + 3 * h * i) * 2
    layers = max(1, size_mib * MiB // per_layer)
    sd = {"model.embed_tokens.weight": (rng.standard_normal((4096, h), np.float32) * 0.02).astype(bfloat16)}
    for n in range(layers):
        p = f"model.layers.{n}."
        for name, shape in (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (h, h)), ("self_attn.v_proj", (h, h)),
                            ("self_attn.o_proj", (h, h)), ("mlp.gate_proj", (i, h)), ("mlp.up_proj", (i, h)),
                            ("mlp.down_proj", (h, i))):
            sd[p + name + ".weight"] = (rng.standard_normal(shape, np.float32) * 0.02).astype(bfloat16)
        sd[p + "input_layernorm.weight"] = np.ones(h, bfloat16)
    sd["model.norm.weight"] = np.ones(h, bfloat16)
    total = sum(a.nbytes for a in sd.values())
    fastensors.save_sharded(sd, path, max_shard_size=total // 4 + 1)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "hidden_size": h, "intermediate_size": i, "num_hidden_layers": layers}, f)


def bench_quantize(args, rank: int, world: int) -> dict:
    """One process vs every rank on the same model; the files compared once."""
    import filecmp

    import torch.distributed as dist

    import fastensors

    src = os.path.join(args.dir, "quant_src")
    if rank == 0:
        llama_like(src, args.quant_mib)
    dist.barrier()
    total = sum(os.path.getsize(os.path.join(src, n)) for n in os.listdir(src) if n.endswith(".safetensors"))
    kwargs = dict(scheme="int4", group_size=128, validate=True, max_shard_size=total // 4 // (4 * world) + 1,
                  overwrite=True)
    one, split = os.path.join(args.dir, "quant_one"), os.path.join(args.dir, "quant_split")

    def one_process():
        if rank == 0:
            fastensors.quantize_model(src, one, **kwargs)

    variants = {"one process (rank 0)": one_process,
                f"{world} ranks": lambda: fastensors.quantize_model(src, split, process_group="default", **kwargs)}
    results = {("quantize", k): [] for k in variants}
    for r in range(args.runs):
        names = list(variants)
        names = names[r % len(names):] + names[:r % len(names)]
        for name in names:
            results[("quantize", name)].append(measure(variants[name]))
    if rank == 0:
        names = sorted(os.listdir(one))
        assert sorted(os.listdir(split)) == names, "the split output has other files"
        for n in names:
            assert filecmp.cmp(os.path.join(one, n), os.path.join(split, n), shallow=False), f"{n} differs"
        print(f"quantize: {len(names)} files, byte-identical between one process and {world} ranks")
    return results, total


def worker(args) -> int:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader, HuggingFaceStorageWriter
    from torch.distributed.device_mesh import init_device_mesh

    from fastensors import distributed as fd
    from fastensors.checkpoint.sharding import Entry, plan_shards

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=600))
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.only == "quantize":
        results, total = bench_quantize(args, rank, world)
        every = [None] * world
        dist.all_gather_object(every, {f"{g}|{n}": v for (g, n), v in results.items()})
        if rank == 0:
            report(args, every, {"quantize": total}, world)
        dist.destroy_process_group()
        return 0
    mesh = init_device_mesh("cpu", (world,))
    sd = state_dict(args.size_mib, mesh)
    total = sum(v.numel() * v.element_size() for v in sd.values())
    shard = total // 4 + 1  # 4 files
    plan = plan_shards([Entry(k, v.numel() * v.element_size(), None) for k, v in sd.items()], shard)
    mapping = {k: int(f.split("-")[1]) for k, f in plan.tensor_to_filename.items()}
    ours = os.path.join(args.dir, "ours")
    theirs = os.path.join(args.dir, "torch")

    def torch_save():
        if rank == 0:
            shutil.rmtree(theirs, ignore_errors=True)
        dist.barrier()
        dcp.save(sd, storage_writer=HuggingFaceStorageWriter(theirs, fqn_to_index_mapping=mapping,
                                                             save_distributed=True, enable_consolidation=True))

    saves = {
        "fastensors": lambda: dcp.save(sd, storage_writer=fd.StorageWriter(ours, max_shard_size=shard)),
        "fastensors durable=False": lambda: dcp.save(sd, storage_writer=fd.StorageWriter(
            ours, max_shard_size=shard, durable=False)),
        "torch HF": torch_save,
    }
    dest = empty_like(sd)
    # The warm load's physical limit: every rank copying its pieces' bytes
    # from memory it already holds into the same destinations, at once.
    held = {k: v.to_local().clone() for k, v in sd.items()}

    def memcpy_limit():
        for k, v in held.items():
            dest[k].to_local().copy_(v)

    loads = {
        "fastensors": lambda: dcp.load(dest, storage_reader=fd.StorageReader(ours)),
        "torch HF": lambda: dcp.load(dest, storage_reader=HuggingFaceStorageReader(ours)),
        "memcpy (limit)": memcpy_limit,
    }
    colds = {"fastensors": loads["fastensors"], "torch HF": loads["torch HF"],
             "plain pread": lambda: plain_pread(ours, sd)}
    results = {("save", k): [] for k in saves}
    results.update({("load", k): [] for k in loads})
    results.update({("cold load", k): [] for k in colds})
    for fn in list(saves.values()) + list(loads.values()):  # warm-up round, untimed
        fn()
    for r in range(args.runs):
        for group, variants in (("save", saves), ("load", loads), ("cold load", colds)):
            names = list(variants)
            names = names[r % len(names):] + names[:r % len(names)]
            for name in names:
                if group == "cold load":
                    if rank == 0:
                        evict(ours)
                    dist.barrier()
                results[(group, name)].append(measure(variants[name], settle=group == "save"))
    totals = {"save": total, "load": total, "cold load": total}
    if args.only == "all":
        quant, totals["quantize"] = bench_quantize(args, rank, world)
        results.update(quant)
    every = [None] * world
    dist.all_gather_object(every, {f"{g}|{n}": v for (g, n), v in results.items()})
    if rank == 0:
        report(args, every, totals, world)
    dist.destroy_process_group()
    return 0


def report(args, every, totals, world) -> None:
    """``totals``: the bytes of each step's workload, for GB/s."""
    rows, record = [], {}
    groups = {}
    for key in every[0]:
        group, name = key.split("|")
        secs = [statistics.median(t for t, _ in every[r][key]) for r in range(world)]
        rss = [statistics.median(m for _, m in every[r][key]) for r in range(world)]
        groups.setdefault(group, {})[name] = (max(secs), secs, rss)
        record[key] = {"seconds_per_rank": secs, "rss_growth_mib_per_rank": rss,
                       "runs": [every[r][key] for r in range(world)]}
    for group, variants in groups.items():
        base = variants.get("torch HF") or variants.get("one process (rank 0)")
        for name, (slowest, secs, rss) in variants.items():
            ratio = base[0] / slowest if base else None
            rss_ratio = (max(rss) / max(base[2])) if base and max(base[2]) > 0 else None
            rows.append([group, name, slowest, " / ".join(f"{s:.3f}" for s in secs), totals[group] / slowest / 1e9,
                         " / ".join(f"{m:.0f}" for m in rss), f"{ratio:.2f}x" if ratio else "—",
                         f"{rss_ratio:.2f}x" if rss_ratio is not None else "—"])
    if args.only != "quantize":
        print(f"\n{args.size_mib} MiB BF16, {N_TENSORS} DTensors (half Shard(0), half Shard(1)), {world} gloo ranks,"
              f" median of {args.runs} rounds")
    if "quantize" in totals:
        print(f"\nquantize: {totals['quantize'] / MiB:.0f} MiB BF16 llama-like model, int4 g128, validate=True,"
              f" {world} gloo ranks, median of {args.runs} rounds")
    print()
    print(markdown_table(["step", "variant", "s (slowest rank)", "s per rank", "GB/s", "RSS growth MiB per rank",
                          "speed vs base", "RSS vs base"], rows))
    print("\nbase: torch HF for save/load; the one-process run for quantize (GB/s: source bytes). The idle"
          " ranks of the one-process quantize show ~0 s and ~0 MiB.")
    info = machine_info(args.dir)
    path = write_json(f"bench_distributed-{time.strftime('%Y%m%d-%H%M%S')}.json",
                      {"size_mib": args.size_mib, "quant_mib": args.quant_mib, "only": args.only, "world": world, "runs": args.runs, "machine": info,
                       "results": record})
    print(f"\nJSON: {path}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=128)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--only", choices=("all", "dcp", "quantize"), default="all",
                   help="dcp: save/load only; quantize: the quantize_model case only")
    p.add_argument("--quant-mib", type=int, default=128, help="size of the model quantized (BF16 MiB)")
    p.add_argument("--dir", default=None, help="where to write the checkpoints (default: a temporary directory)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    return worker(args) if args.worker else launch(args)


if __name__ == "__main__":
    sys.exit(main())
