"""Sharded checkpoints: fastensors against huggingface_hub and the reference
``safetensors`` package in the same run.

    python bench/bench_sharding.py                    # everything
    python bench/bench_sharding.py save durable       # only the writes
    python bench/bench_sharding.py --size-mib 128     # a quick run
    python bench/bench_sharding.py --help

Benchmarks (names for the positional argument):

  save      save_sharded(durable=False) of a --size-mib state dict (BF16,
            64 tensors) into 5 shards vs huggingface_hub.save_torch_state_dict
            with the same max_shard_size (identical files, checked)
  durable   save_sharded (durable) vs the disk's limit for the same bytes:
            the same files written with os.write from memory, then all
            fsynced, then the directory; hub + fsync reported too
  open-one  open a 100-shard checkpoint and read one tensor (every byte),
            vs json-parsing the index + safetensors.safe_open of the shard;
            ours given the index file (like for like) and the directory
  iterate   open the 100-shard checkpoint and get every tensor, with and
            without reading every byte, vs the same with the reference

Method: the writes reuse bench_io's interleaved runner: variants alternate
round by round (rotating order), every target is removed and os.sync()
flushes dirty pages before each timed write, one untimed warm-up round
comes first, medians of --runs rounds. The reads run on files warm in the
page cache; each variant is timed --read-runs times, interleaved, medians.
Results go to stdout as markdown and to bench/results/bench_sharding-*.json."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_io import Variant, fmt_table, interleave, row  # noqa: E402

BENCHMARKS = ("save", "durable", "open-one", "iterate")


def rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def five_shard_limit(sd) -> int:
    """A decimal byte limit that splits ``sd`` (equal-size tensors) into 5 shards."""
    sizes = [t.nelement() * t.element_size() for t in sd.values()]
    per = -(-len(sizes) // 5)  # tensors per shard
    return per * max(sizes)


def dir_prepare(targets: List[str], sync: bool) -> Callable[[], dict]:
    def prepare() -> dict:
        for t in targets:
            rmtree(t)
            os.makedirs(t)  # huggingface_hub needs the directory to exist; give everyone the same start
        if sync:
            os.sync()
        return {"dirty_mib_before": round(common.dirty_mib(), 1)}

    return prepare


def fsync_tree(path: str) -> None:
    for name in os.listdir(path):
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def same_output(ours: str, hub: str) -> bool:
    """Same file names, same shard bytes, same index once total_parameters is out."""
    if sorted(os.listdir(ours)) != sorted(os.listdir(hub)):
        return False
    for name in os.listdir(hub):
        a = open(os.path.join(ours, name), "rb").read()
        b = open(os.path.join(hub, name), "rb").read()
        if name.endswith(".json"):
            index = json.loads(a)
            index["metadata"].pop("total_parameters", None)
            a = json.dumps(index, indent=2).encode()
        if a != b:
            return False
    return True


# -- writes ----------------------------------------------------------------------

def bench_save(ctx) -> Tuple[List[dict], dict]:
    import fastensors
    from huggingface_hub import save_torch_state_dict

    sd = ctx.state_dict()
    limit = five_shard_limit(sd)
    ours_d, hub_d = ctx.path("save-fastensors"), ctx.path("save-hub")
    # correctness of the comparison: the same files
    for d in (ours_d, hub_d):
        rmtree(d)
        os.makedirs(d)
    fastensors.save_sharded(sd, ours_d, max_shard_size=limit, durable=False)
    save_torch_state_dict(sd, hub_d, max_shard_size=limit)
    identical = same_output(ours_d, hub_d)
    shards = len([n for n in os.listdir(ours_d) if n.endswith(".safetensors")])
    nbytes = sum(os.path.getsize(os.path.join(ours_d, n)) for n in os.listdir(ours_d))
    prep = dir_prepare([ours_d, hub_d], ctx.sync)
    variants = [
        Variant("fastensors save_sharded(durable=False)",
                lambda: fastensors.save_sharded(sd, ours_d, max_shard_size=limit, durable=False), prepare=prep),
        Variant("huggingface_hub save_torch_state_dict",
                lambda: save_torch_state_dict(sd, hub_d, max_shard_size=limit), prepare=prep),
    ]
    ctx.log(f"save: {shards} shards, max_shard_size={limit}, not durable; identical output: {identical}")
    res = interleave(variants, ctx.runs, ctx.warmup, ctx.log)
    for d in (ours_d, hub_d):
        rmtree(d)
    r = row(f"sharded save, {shards} shards (not durable)", variants[0].name, variants[1].name, res, nbytes,
            "no slower (speedup >= 1.00)", None)
    r["met"] = r["speedup"] >= 1.0
    return [r], {"results": res, "identical_output": identical, "shards": shards, "max_shard_size": limit}


def bench_durable(ctx) -> Tuple[List[dict], dict]:
    import fastensors
    from huggingface_hub import save_torch_state_dict

    sd = ctx.state_dict()
    limit = five_shard_limit(sd)
    ours_d, raw_d, hub_d = ctx.path("durable-fastensors"), ctx.path("durable-raw"), ctx.path("durable-hub")
    rmtree(ours_d)
    fastensors.save_sharded(sd, ours_d, max_shard_size=limit, durable=False)
    files = {n: os.path.getsize(os.path.join(ours_d, n)) for n in sorted(os.listdir(ours_d))}
    rmtree(ours_d)
    nbytes = sum(files.values())
    # the same bytes, in memory: one buffer per file
    flat = np.concatenate([common_bytes(t) for t in sd.values()])
    buffers = {}
    off = 0
    for name, size in files.items():
        n = min(size, flat.size - off)
        b = np.full(size, 0x5A, np.uint8)
        b[:n] = flat[off:off + n]
        off += n
        buffers[name] = b
    del flat

    def raw_write():
        # The plain fastest way to put these bytes on disk: write every file
        # from memory, then fsync them all and the directory (fsyncing each
        # file right after writing it would serialize writeback and be slower).
        fds = []
        try:
            for name, buf in buffers.items():
                fd = os.open(os.path.join(raw_d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                fds.append(fd)
                view = memoryview(buf)
                done = 0
                while done < buf.size:
                    done += os.write(fd, view[done:])
            for fd in fds:
                os.fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)
        dfd = os.open(raw_d, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def hub_fsync():
        save_torch_state_dict(sd, hub_d, max_shard_size=limit)
        fsync_tree(hub_d)

    prep = dir_prepare([ours_d, raw_d, hub_d], ctx.sync)
    variants = [
        Variant("fastensors save_sharded (durable)",
                lambda: fastensors.save_sharded(sd, ours_d, max_shard_size=limit, durable=True), prepare=prep),
        Variant("os.write all, then fsync all (disk limit)", raw_write, prepare=prep),
        Variant("huggingface_hub save_torch_state_dict + fsync", hub_fsync, prepare=prep),
    ]
    ctx.log(f"durable: {len(files)} files, {nbytes} bytes, fsynced")
    res = interleave(variants, ctx.runs, ctx.warmup, ctx.log)
    for d in (ours_d, raw_d, hub_d):
        rmtree(d)
    r1 = row("sharded save durable vs disk limit", variants[0].name, variants[1].name, res, nbytes,
             "within 15% of the disk limit (speedup >= 0.87)", None)
    r1["met"] = res[variants[0].name]["median"] <= 1.15 * res[variants[1].name]["median"]
    r2 = row("sharded save durable vs hub + fsync", variants[0].name, variants[2].name, res, nbytes,
             "— (reported)", None)
    return [r1, r2], {"results": res}


def common_bytes(t) -> np.ndarray:
    import torch

    return t.reshape(-1).view(torch.uint8).numpy()


# -- reads -------------------------------------------------------------------------

def make_100_shards(ctx) -> Tuple[str, int, List[str]]:
    """A 100-shard checkpoint of F32 tensors (10 per shard, --shard-tensor-kib
    each), written once and kept warm in the page cache."""
    import fastensors

    d = ctx.path("hundred")
    if not os.path.exists(os.path.join(d, "model.safetensors.index.json")):
        rmtree(d)
        rng = np.random.default_rng(0)
        elems = ctx.tensor_kib * 1024 // 4
        sd = {}
        for i in range(1000):
            sd[f"model.layers.{i // 10}.block.{i % 10}.weight"] = rng.standard_normal(elems, dtype=np.float32)
        fastensors.save_sharded(sd, d, max_shard_size=10 * elems * 4, durable=False)
    names = sorted(os.listdir(d))
    assert len([n for n in names if n.endswith(".safetensors")]) == 100, names[:3]
    nbytes = 0
    for n in names:
        nbytes += os.path.getsize(os.path.join(d, n))
        common.warm_file(os.path.join(d, n))
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        keys = list(json.load(f)["weight_map"])
    return d, nbytes, keys


def time_interleaved(variants: Dict[str, Callable[[], object]], runs: int) -> Dict[str, dict]:
    """Each variant ``runs`` times, alternating, order rotating; one warm-up call each."""
    names = list(variants)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for n in names:
        variants[n]()
    for r in range(runs):
        shift = r % len(names)
        for n in names[shift:] + names[:shift]:
            common.collect()
            times[n].append(common.time_call(variants[n]))
    return {n: common.summarize(ts) for n, ts in times.items()}


def reference_open(d: str):
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        return json.load(f)["weight_map"]


def touch(t) -> int:
    return common.touch_bytes(t) if isinstance(t, np.ndarray) else common.touch_torch(t)


def bench_open_one(ctx) -> Tuple[List[dict], dict]:
    import fastensors
    import safetensors

    d, nbytes, keys = make_100_shards(ctx)
    target = keys[len(keys) // 2]
    rows = []
    details = {}
    index = os.path.join(d, "model.safetensors.index.json")
    for fw in ("np", "pt"):
        def ours(path):
            def run():
                with fastensors.open_checkpoint(path, framework=fw) as ckpt:
                    touch(ckpt.get_tensor(target))
            return run

        def ref():
            weight_map = reference_open(d)
            with safetensors.safe_open(os.path.join(d, weight_map[target]), framework=fw) as f:
                touch(f.get_tensor(target))

        # Like for like: the reference is handed the index file, so is ours;
        # given the directory, ours also looks for model.safetensors first.
        res = time_interleaved({f"fastensors open_checkpoint(index) ({fw})": ours(index),
                                f"json index + safetensors.safe_open ({fw})": ref,
                                f"fastensors open_checkpoint(directory) ({fw})": ours(d)}, ctx.read_runs)
        a, b, c = list(res)
        ctx.log(f"open-one ({fw}): {res[a]['median'] * 1e3:.3f} ms (index), {res[c]['median'] * 1e3:.3f} ms"
                f" (directory) vs {res[b]['median'] * 1e3:.3f} ms")
        r = row(f"100 shards: open index + read one tensor ({fw})", a, b, res, ctx.tensor_kib * 1024,
                "no slower (speedup >= 1.00)", None)
        r["met"] = r["speedup"] >= 1.0
        rows.append(r)
        rows.append(row(f"100 shards: open directory + read one tensor ({fw})", c, b, res, ctx.tensor_kib * 1024,
                        "— (reported)", None))
        details[fw] = res
    return rows, {"results": details, "checkpoint_bytes": nbytes}


def bench_iterate(ctx) -> Tuple[List[dict], dict]:
    import fastensors
    import safetensors

    d, nbytes, keys = make_100_shards(ctx)
    rows = []
    details = {}
    for fw in ("np", "pt"):
        for read in (False, True):
            def ours():
                out = []
                with fastensors.open_checkpoint(d, framework=fw) as ckpt:
                    for k in ckpt.keys():
                        t = ckpt.get_tensor(k)
                        if read:
                            touch(t)
                        out.append(t)
                return out

            def ref():
                weight_map = reference_open(d)
                by_file: Dict[str, List[str]] = {}
                for k, fname in weight_map.items():
                    by_file.setdefault(fname, []).append(k)
                out = []
                for fname, names in by_file.items():
                    with safetensors.safe_open(os.path.join(d, fname), framework=fw) as f:
                        for k in names:
                            t = f.get_tensor(k)
                            if read:
                                touch(t)
                            out.append(t)
                return out

            what = "get + read every byte" if read else "get every tensor"
            res = time_interleaved({f"fastensors open_checkpoint ({fw}, {what})": ours,
                                    f"json index + safetensors.safe_open ({fw}, {what})": ref},
                                   max(5, ctx.read_runs // 20))
            a, b = list(res)
            ctx.log(f"iterate ({fw}, {what}): {res[a]['median'] * 1e3:.1f} ms vs {res[b]['median'] * 1e3:.1f} ms")
            r = row(f"100 shards: iterate, {what} ({fw})", a, b, res, nbytes, "no slower (speedup >= 1.00)", None)
            r["met"] = r["speedup"] >= 1.0
            rows.append(r)
            details[f"{fw}-{'read' if read else 'get'}"] = res
    return rows, {"results": details, "checkpoint_bytes": nbytes}


# -- driver ------------------------------------------------------------------------

class Context(common.Context):
    def __init__(self, args):
        super().__init__(args)
        self.read_runs = args.read_runs
        self.tensor_kib = args.shard_tensor_kib
        self._sd = None

    def state_dict(self):
        if self._sd is None:
            self._sd = common.make_state_dict(self.size_mib, self.tensors, "bfloat16", seed=0)
        return self._sd


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmarks", nargs="*", metavar="BENCH", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    p.add_argument("--size-mib", type=int, default=1024, help="state dict size for the writes (default 1024)")
    p.add_argument("--tensors", type=int, default=64, help="tensors in the state dict (default 64)")
    p.add_argument("--runs", type=int, default=5, help="timed rounds per write benchmark (default 5)")
    p.add_argument("--read-runs", type=int, default=200, help="timed calls per read variant (default 200)")
    p.add_argument("--shard-tensor-kib", type=int, default=256,
                   help="size of each of the 1000 tensors of the 100-shard checkpoint (default 256 KiB)")
    p.add_argument("--dir", default=os.path.join(common.RESULTS_DIR, "work-sharding"),
                   help="where files are written (default bench/results/work-sharding)")
    p.add_argument("--no-sync", action="store_true", help="skip os.sync() before each timed write")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up round")
    p.add_argument("--json", default=None, help="result file name under bench/results/")
    args = p.parse_args(argv)
    unknown = sorted(set(args.benchmarks) - {*BENCHMARKS, "all"})
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    wanted = args.benchmarks or ["all"]
    selected = BENCHMARKS if "all" in wanted else tuple(b for b in BENCHMARKS if b in wanted)
    if "FASTENSORS_DURABLE" in os.environ:
        print(f"note: unsetting FASTENSORS_DURABLE={os.environ['FASTENSORS_DURABLE']!r} for this run", file=sys.stderr)
        del os.environ["FASTENSORS_DURABLE"]

    ctx = Context(args)
    info = common.machine_info(ctx.dir)
    try:
        import huggingface_hub

        info["huggingface_hub"] = huggingface_hub.__version__
    except ImportError:
        info["huggingface_hub"] = "unavailable"
    load_before = common.loadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    ctx.log(f"fastensors {info['fastensors']} vs huggingface_hub {info['huggingface_hub']} / safetensors "
            f"{info['safetensors']}; torch {info['torch']}; load average {load_before}")
    runners = {"save": bench_save, "durable": bench_durable, "open-one": bench_open_one, "iterate": bench_iterate}
    rows: List[dict] = []
    details: Dict[str, object] = {}
    loads = {}
    for name in selected:
        got, details[name] = runners[name](ctx)
        rows.extend(got)
        loads[name] = common.loadavg()
    load_after = common.loadavg()

    print(f"## Sharded checkpoints — fastensors {info['fastensors']} vs huggingface_hub {info['huggingface_hub']}"
          f" / safetensors {info['safetensors']}\n")
    print(fmt_table(rows))
    print()
    if "save" in details:
        print(f"Sharded save: {details['save']['shards']} shards of a {args.size_mib} MiB BF16 state dict "
              f"({args.tensors} tensors), max_shard_size={details['save']['max_shard_size']}; "
              f"files identical to huggingface_hub's: {details['save']['identical_output']}.")
    if "open-one" in details or "iterate" in details:
        print(f"100-shard checkpoint: 1000 F32 tensors of {args.shard_tensor_kib} KiB, warm in the page cache; "
              f"read medians of {args.read_runs} (open-one) / {max(5, args.read_runs // 20)} (iterate) calls.")
    print(f"Load average before: {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {', '.join(f'{x:.2f}' for x in load_after)} ({info['nproc']} CPUs).")
    payload = {"started": started, "args": vars(args), "machine": info, "loadavg_before": load_before,
               "loadavg_after": load_after, "loadavg_after_each": loads, "rows": rows, "details": details}
    name = args.json or f"bench_sharding-{time.strftime('%Y%m%d-%H%M%S')}.json"
    print(f"\nJSON: {common.write_json(name, payload)}")
    rmtree(ctx.path("hundred"))
    ctx.remove_dir_if_empty()
    return 0


if __name__ == "__main__":
    sys.exit(main())
