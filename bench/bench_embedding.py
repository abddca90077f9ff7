"""Loading a sharded checkpoint from C and C++ (the embedding API) against the
Python path, the reference package and the device's limit, cold and warm.

A synthetic checkpoint (``--size-mib`` MiB of BF16 tensors in ``--shards``
shards with a ``model.safetensors.index.json``) is loaded, every run in a
fresh process, by:

- ``c``: ``bench/embed/load_c.c`` (``fst_checkpoint_open``, then
  ``fst_checkpoint_read`` of every tensor into one caller buffer);
- ``cpp``: ``bench/embed/load_cpp.cpp`` (``Checkpoint::open``, ``read``);
- ``python_into``: ``fastensors.open_checkpoint`` + ``read_into`` of every
  tensor into one preallocated buffer (the C++ read path, from Python);
  numpy backs a large array with transparent huge pages, and a cold read
  into those ran slower here, so ``python_into_4k`` is the same with
  ``NUMPY_MADVISE_HUGEPAGE=0`` (4 KiB pages, like the C and C++ loaders'
  buffers);
- ``python``: ``fastensors.open_checkpoint`` + ``get_tensor`` of every
  tensor (a zero-copy view of the mapping) copied into one preallocated
  buffer (``np.copyto``);
- ``reference``: ``safetensors.safe_open`` per shard (``framework="pt"``:
  its numpy path has no BF16), the same copies;
- ``device``: the limit: ``os.preadv`` of the shard files, whole, into one
  buffer, in requests of 8 MiB by 8 threads (the read engine's defaults;
  no parsing at all).

Each process times itself from before the open to after the last byte (the
buffer is allocated and touched first; interpreter start-up and imports are
not counted). Peers run interleaved, round after round. Cold runs drop the
files from the page cache first (``posix_fadvise(DONTNEED)``) and check with
``mincore`` that under 1% of their pages remain; a run where more remained
is reported as such. The loaders are compiled against the installed
package (``python -m fastensors --cmake-dir``), linking the static library.

    python bench/bench_embedding.py                   # 512 MiB, 4 shards
    python bench/bench_embedding.py --size-mib 128 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from typing import Dict, List

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PEERS = ("c", "cpp", "python_into", "python_into_4k", "python", "reference", "device")

def _fastensors_loop(body: str) -> str:
    """A peer script: open_checkpoint, then ``body`` for every name, which
    puts the tensor into ``arena`` at ``total`` and advances ``total``."""
    return textwrap.dedent("""
        import json, sys, time, numpy as np, fastensors
        path, size = sys.argv[1], int(sys.argv[2])
        arena = np.ones(size, np.uint8)
        t0 = time.perf_counter()
        total = 0
        with fastensors.open_checkpoint(path, "np") as ckpt:
            for name in ckpt.keys():
        {body}
        print(json.dumps({{"seconds": time.perf_counter() - t0, "bytes": total}}))
    """).format(body=textwrap.indent(textwrap.dedent(body), " " * 8))


PY_FASTENSORS = _fastensors_loop("""
    t = ckpt.get_tensor(name)
    raw = t.reshape(-1).view(np.uint8)
    np.copyto(arena[total:total + raw.nbytes], raw)
    total += raw.nbytes
""")

PY_INTO = _fastensors_loop("""
    total += ckpt.read_into(name, arena[total:])
""")

PY_REFERENCE = textwrap.dedent("""
    import json, os, sys, time, numpy as np, torch
    from safetensors import safe_open
    path, size = sys.argv[1], int(sys.argv[2])
    arena = np.ones(size, np.uint8)
    t0 = time.perf_counter()
    index = json.load(open(os.path.join(path, "model.safetensors.index.json")))
    total = 0
    for shard in dict.fromkeys(index["weight_map"].values()):
        with safe_open(os.path.join(path, shard), framework="pt") as f:  # its numpy has no BF16
            for name in f.keys():
                raw = f.get_tensor(name).reshape(-1).view(torch.uint8).numpy()
                np.copyto(arena[total:total + raw.nbytes], raw)
                total += raw.nbytes
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": total}))
""")

PY_DEVICE = textwrap.dedent("""
    import json, os, sys, time, numpy as np
    from concurrent.futures import ThreadPoolExecutor
    path, size = sys.argv[1], int(sys.argv[2])
    files = sys.argv[3:]
    arena = np.ones(size, np.uint8)
    view = memoryview(arena)
    t0 = time.perf_counter()
    fds, jobs, at = [], [], 0
    for name in files:
        fd = os.open(os.path.join(path, name), os.O_RDONLY)
        fds.append(fd)
        n = os.fstat(fd).st_size
        for off in range(0, n, 8 << 20):
            jobs.append((fd, at + off, off, min(8 << 20, n - off)))
        at += n

    def read(job):
        fd, dst, off, n = job
        done = 0
        while done < n:
            got = os.preadv(fd, [view[dst + done:dst + n]], off + done)
            if got <= 0:
                raise OSError("short read")
            done += got
        return done

    with ThreadPoolExecutor(8) as pool:
        total = sum(pool.map(read, jobs))
    for fd in fds:
        os.close(fd)
    print(json.dumps({"seconds": time.perf_counter() - t0, "bytes": total}))
""")



def build_loaders(workdir: str) -> Dict[str, str]:
    """Compiles load_c and load_cpp against the installed package."""
    prefix = subprocess.run([sys.executable, "-m", "fastensors", "--cmake-dir"], capture_output=True, text=True,
                            check=True).stdout.strip()
    inc, lib = os.path.join(prefix, "include"), os.path.join(prefix, "lib", "libfastensors.a")
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "embed")
    out = {}
    for peer, compiler, src, std in (("c", "cc", "load_c.c", "-std=c99"), ("cpp", "c++", "load_cpp.cpp", "-std=c++17")):
        exe = os.path.join(workdir, f"load_{peer}")
        subprocess.run([compiler, std, "-O2", "-I", inc, os.path.join(here, src), "-o", exe, lib, "-lstdc++",
                        "-fopenmp", "-lpthread", "-lm"], check=True)
        out[peer] = exe
    return out


def make_checkpoint(path: str, size_mib: int, shards: int, tensors: int) -> List[str]:
    """BF16 tensors (random finite values), ``shards`` files and an index."""
    import ml_dtypes

    import fastensors.numpy as fnp

    os.makedirs(path, exist_ok=True)
    shapes = common.tensor_shapes(size_mib, tensors, 2, 4096)
    rng = np.random.default_rng(0)
    per = (len(shapes) + shards - 1) // shards
    weight_map, files = {}, []
    for s in range(shards):
        part = {}
        for i in range(s * per, min(len(shapes), (s + 1) * per)):
            bits = rng.integers(0, 1 << 16, size=shapes[i], dtype=np.uint16) & np.uint16(~(1 << 14) & 0xFFFF)
            part[f"model.layers.{i}.weight"] = bits.view(ml_dtypes.bfloat16)
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        fnp.save_file(part, os.path.join(path, name), metadata={"format": "pt"})
        files.append(name)
        weight_map.update({k: name for k in part})
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": size_mib * common.MiB}, "weight_map": weight_map}, f)
    return files


def drop_cache(path: str, files: List[str]) -> float:
    """Evicts the checkpoint's files; returns the largest fraction left resident."""
    worst = 0.0
    for name in files + ["model.safetensors.index.json"]:
        p = os.path.join(path, name)
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        worst = max(worst, common.cached_fraction(p))
    return worst


def run_peer(peer: str, exe: Dict[str, str], path: str, arena: int, files: List[str]) -> dict:
    env = dict(os.environ, LOAD_ARENA_BYTES=str(arena))
    if peer == "python_into_4k":
        env["NUMPY_MADVISE_HUGEPAGE"] = "0"
    if peer in ("c", "cpp"):
        cmd = [exe[peer], path, "mmap"]
    else:
        script = {"python": PY_FASTENSORS, "python_into": PY_INTO, "python_into_4k": PY_INTO,
                  "reference": PY_REFERENCE, "device": PY_DEVICE}[peer]
        cmd = [sys.executable, "-c", script, path, str(arena)] + (files if peer == "device" else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{peer} failed: {out.stderr.strip()}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--tensors", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5, help="warm rounds (every peer once per round)")
    ap.add_argument("--cold-runs", type=int, default=3)
    ap.add_argument("--dir", default=os.path.join(common.RESULTS_DIR, "work", "embedding"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    path = os.path.abspath(os.path.join(args.dir, "ckpt"))
    os.makedirs(args.dir, exist_ok=True)
    print(f"building a {args.size_mib} MiB checkpoint in {args.shards} shards ...", file=sys.stderr)
    files = make_checkpoint(path, args.size_mib, args.shards, args.tensors)
    exe = build_loaders(args.dir)
    data_bytes = sum(os.path.getsize(os.path.join(path, f)) for f in files)
    arena = data_bytes

    results: Dict[str, Dict[str, List[float]]] = {"warm": {p: [] for p in PEERS}, "cold": {p: [] for p in PEERS}}
    residue: List[float] = []
    loaded: Dict[str, int] = {}
    for r in range(args.cold_runs):
        for peer in PEERS:
            left = drop_cache(path, files)
            residue.append(left)
            got = run_peer(peer, exe, path, arena, files)
            loaded[peer] = got["bytes"]
            results["cold"][peer].append(got["seconds"] if left < 0.01 else float("nan"))
            print(f"cold {r} {peer}: {got['seconds']:.3f} s (resident before: {left:.1%})", file=sys.stderr)
    for peer in PEERS:  # warm the cache once for everyone
        run_peer(peer, exe, path, arena, files)
    for r in range(args.runs):
        for peer in PEERS:
            got = run_peer(peer, exe, path, arena, files)
            results["warm"][peer].append(got["seconds"])
            print(f"warm {r} {peer}: {got['seconds']:.3f} s", file=sys.stderr)

    rows = []
    med = {k: {p: common.median([x for x in v if x == x] or [float("nan")]) for p, v in d.items()}
           for k, d in results.items()}
    for peer in PEERS:
        nbytes = loaded[peer]
        rows.append([peer, f"{med['cold'][peer]:.3f}", f"{common.gbps(nbytes, med['cold'][peer]):.2f}",
                     f"{med['cold'][peer] / med['cold']['c']:.2f}",
                     f"{med['warm'][peer]:.3f}", f"{common.gbps(nbytes, med['warm'][peer]):.2f}",
                     f"{med['warm'][peer] / med['warm']['c']:.2f}"])
    print(common.markdown_table(["peer", "cold s", "cold GB/s", "cold / c", "warm s", "warm GB/s",
                                 "warm / c"], rows))
    print(f"\n{data_bytes / common.MiB:.0f} MiB in {len(files)} shards; medians of {args.cold_runs} cold and "
          f"{args.runs} warm runs; largest resident fraction before a cold run: {max(residue):.2%}")
    payload = {"args": vars(args), "bytes": data_bytes, "results": results, "residue": residue,
               "machine": common.machine_info(path)}
    out = common.write_json(args.json or f"bench_embedding-{args.size_mib}MiB", payload)
    print(f"raw results: {out}", file=sys.stderr)
    for f in files + ["model.safetensors.index.json"]:
        common.remove(os.path.join(path, f))
    for f in ("load_c", "load_cpp"):
        common.remove(os.path.join(args.dir, f))
    try:
        os.rmdir(path)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
