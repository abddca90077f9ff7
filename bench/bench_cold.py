"""Cold-start loading: a sharded bf16 checkpoint read from storage, every
byte touched, fastensors against the peers and the device's own limit in the
same rounds.

    python bench/bench_cold.py                         # 2 GiB, 4 shards, 5 rounds
    python bench/bench_cold.py --size-mib 512 --rounds 3
    python bench/bench_cold.py --only fst-load_file,safetensors

Loaders (each load runs in a fresh process, so no loader inherits another's
mappings or allocator state):

  device        16 threads reading the shards with O_DIRECT into aligned
                buffers: the storage's parallel-read limit, page cache bypassed
  fst-load_file fastensors.torch.load_file of each shard
  fst-ckpt      fastensors.open_checkpoint(..., "pt"), then get_tensor for
                every name in sorted order (the usual loop)
  fst-pread     fastensors.torch.load_file(..., backend="pread"): the engine
                reading into fresh buffers instead of prefetching the mapping
                (the alternative docs/read_engine.md weighs)
  safetensors   safetensors.torch.load_file of each shard
  runai         runai_model_streamer.SafetensorsStreamer over the shards
  fastsafetensors  fastsafetensors.fastsafe_open(..., nogds=True), CPU

Cold: before each load the shards are dropped from the page cache with
posix_fadvise(POSIX_FADV_DONTNEED) and the drop is checked with mincore
(the cached fraction is recorded). Warm: the shards are read once and checked
to be cached. Rounds interleave the loaders in a rotating order; the report
gives medians, per-round ratios against fastensors, peak RSS growth and the
private (anonymous) memory each loader adds. Results go to stdout as markdown
and to bench/results/bench_cold-<time>.json."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import MiB  # noqa: E402

LOADERS = ("device", "fst-load_file", "fst-ckpt", "fst-pread", "safetensors", "runai", "fastsafetensors")

# One load in a fresh interpreter: prints {"seconds", "peak_growth_kib",
# "private_kib", "bytes"}. Imports happen before the clock starts.
WORKER = r'''
import json, mmap, os, sys, threading, time
sys.path.insert(0, sys.argv[3])
import common
loader, directory = sys.argv[1], sys.argv[2]
files = sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors"))

def anon_kib():
    return common.proc_status_kib("RssAnon")

def device():
    # 16 readers, each a contiguous share of every file, 8 MiB O_DIRECT reads.
    jobs = []
    for path in files:
        size = os.path.getsize(path)
        step = 8 << 20
        chunks = [(o, min(step, size - o)) for o in range(0, size, step)]
        jobs += [(path, o, n) for o, n in chunks]
    total = [0]
    lock = threading.Lock()
    def reader(mine):
        buf = mmap.mmap(-1, 8 << 20)
        fds = {}
        got = 0
        for path, o, n in mine:
            fd = fds.get(path)
            if fd is None:
                fd = fds[path] = os.open(path, os.O_RDONLY | os.O_DIRECT)
            want = (n + 4095) // 4096 * 4096
            view = memoryview(buf)[:want]
            got += max(0, os.preadv(fd, [view], o))
        for fd in fds.values():
            os.close(fd)
        with lock:
            total[0] += got
    threads = [threading.Thread(target=reader, args=(jobs[i::16],)) for i in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    return total[0]

import torch
if loader.startswith("fst-"):
    import fastensors, fastensors.torch as ft
elif loader == "safetensors":
    import safetensors.torch as st
elif loader == "runai":
    from runai_model_streamer import SafetensorsStreamer
elif loader == "fastsafetensors":
    from fastsafetensors import fastsafe_open

def touch_all(tensors):
    n = 0
    for t in tensors:
        common.touch_torch(t)
        n += t.numel() * t.element_size()
    return n

base_anon = anon_kib()
common.reset_peak_rss()
base_rss = common.proc_status_kib("VmRSS")
t0 = time.perf_counter()
if loader == "device":
    nbytes = device()
elif loader == "fst-load_file":
    out = {}
    for f in files:
        out.update(ft.load_file(f))
    nbytes = touch_all(out.values())
elif loader == "fst-pread":
    out = {}
    for f in files:
        out.update(ft.load_file(f, backend="pread"))
    nbytes = touch_all(out.values())
elif loader == "fst-ckpt":
    with fastensors.open_checkpoint(directory, "pt") as ckpt:
        out = {k: ckpt.get_tensor(k) for k in ckpt.keys()}
    nbytes = touch_all(out.values())
elif loader == "safetensors":
    out = {}
    for f in files:
        out.update(st.load_file(f))
    nbytes = touch_all(out.values())
elif loader == "runai":
    out = {}
    with SafetensorsStreamer() as s:
        s.stream_files(files)
        for name, t in s.get_tensors():
            out[name] = t
    nbytes = touch_all(out.values())
elif loader == "fastsafetensors":
    out = {}
    with fastsafe_open(files, framework="pt", device="cpu", nogds=True) as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
        nbytes = touch_all(out.values())
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "bytes": nbytes,
                  "peak_growth_kib": common.proc_status_kib("VmHWM") - base_rss,
                  "private_kib": anon_kib() - base_anon}))
'''


def make_checkpoint(ctx, size_mib: int, shards: int) -> List[str]:
    import fastensors

    directory = ctx.path("ckpt")
    marker = os.path.join(directory, f".made-{size_mib}-{shards}")
    if os.path.exists(marker):
        return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors"))
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    sd = common.make_state_dict(size_mib, 64)
    fastensors.save_sharded(sd, directory, max_shard_size=size_mib * MiB // shards + MiB)
    del sd
    open(marker, "w").close()
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".safetensors"))


def evict(files: List[str]) -> float:
    """Drop the files from the page cache; returns the largest cached fraction left."""
    os.sync()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return max(common.cached_fraction(p) for p in files)


def warm(files: List[str]) -> float:
    return min(common.warm_file(p) for p in files)


def run_one(loader: str, directory: str, baseline: str = "") -> Dict[str, float]:
    """One load in a fresh process; "base-*" loaders run with the --baseline interpreter."""
    python = sys.executable
    if loader.startswith("base-"):
        python, loader = baseline, loader[len("base-"):]
    proc = subprocess.run([python, "-c", WORKER, loader, directory, common.HERE], capture_output=True,
                          text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{loader} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=2048)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=",".join(LOADERS), help="comma-separated loaders")
    ap.add_argument("--dir", default=os.path.join(common.HERE, "results", "cold-scratch"))
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint for the next run")
    ap.add_argument("--baseline", default="", help="a Python with another fastensors installed (an older "
                    "commit): adds base-fst-load_file and base-fst-ckpt, run by it in the same rounds")
    args = ap.parse_args()
    args.tensors, args.runs = 64, args.rounds
    ctx = common.Context(args)
    loaders = [x for x in args.only.split(",") if x]
    if args.baseline:
        loaders += ["base-fst-load_file", "base-fst-ckpt"]
    for x in loaders:
        if x not in LOADERS and not (args.baseline and x.startswith("base-fst-")):
            ap.error(f"unknown loader {x!r} (choose from {', '.join(LOADERS)})")
    files = make_checkpoint(ctx, args.size_mib, args.shards)
    directory = os.path.dirname(files[0])
    total = sum(os.path.getsize(p) for p in files)
    ctx.log(f"{len(files)} shards, {total / MiB:.0f} MiB in {directory}")
    results: Dict[str, Dict[str, List[Dict[str, float]]]] = {m: {x: [] for x in loaders} for m in ("cold", "warm")}
    for r in range(args.rounds):
        order = loaders[r % len(loaders):] + loaders[:r % len(loaders)]
        for mode in ("cold", "warm"):
            for x in order:
                if mode == "warm" and x == "device":
                    continue  # O_DIRECT never sees the cache
                left = evict(files) if mode == "cold" else warm(files)
                rec = run_one(x, directory, args.baseline)
                rec["cached_before"] = left
                results[mode][x].append(rec)
                ctx.log(f"round {r + 1} {mode:4} {x:16} {rec['seconds']:.3f} s (cached before: {left:.3f})")

    def med(mode, x, key="seconds"):
        runs = results[mode][x]
        return common.median([rr[key] for rr in runs]) if runs else None

    def ratio(mode, x, ref):
        """Median over rounds of (x's time / ref's time): > 1 means ref is faster."""
        a, b = results[mode][x], results[mode][ref]
        if not a or not b:
            return None
        return common.median([ra["seconds"] / rb["seconds"] for ra, rb in zip(a, b)])

    rows = []
    for x in loaders:
        rows.append([x, med("cold", x), ratio("cold", x, "fst-load_file") if x != "fst-load_file" else 1.0,
                     med("warm", x), ratio("warm", x, "fst-load_file") if x != "fst-load_file" and
                     results["warm"][x] else (1.0 if x == "fst-load_file" else None),
                     (med("cold", x, "peak_growth_kib") or 0) / 1024, (med("cold", x, "private_kib") or 0) / 1024])
    table = common.markdown_table(
        ["loader", "cold s", "cold x fst-load_file", "warm s", "warm x fst-load_file", "peak RSS growth MiB",
         "private MiB"], rows)
    print(f"\n{total / MiB:.0f} MiB, {len(files)} shards, {args.rounds} rounds, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print(table)
    print("\n('x fst-load_file': median over rounds of the loader's time / fastensors.torch.load_file's time, "
          "so > 1 means fastensors is faster)")
    out = common.write_json(f"bench_cold-{time.strftime('%Y%m%d-%H%M%S')}.json",
                            {"size_bytes": total, "shards": len(files), "rounds": args.rounds, "results": results,
                             "machine": common.machine_info(directory)})
    print(f"\nfull results: {out}")
    if not args.keep:
        import shutil

        shutil.rmtree(os.path.dirname(directory) if os.path.basename(directory) == "ckpt" else directory,
                      ignore_errors=True)
        ctx.remove_dir_if_empty()


if __name__ == "__main__":
    main()
