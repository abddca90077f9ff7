"""load_file into each framework: fastensors' adapter against the reference
``safetensors`` adapter of the same framework, in the same run.

    python bench/bench_frameworks.py                       # every framework installed
    python bench/bench_frameworks.py flax paddle           # some
    python bench/bench_frameworks.py --size-mib 128 --runs 3   # a quick look

For each framework, in its own process (tensorflow and paddle abort when
imported into one): a --size-mib F32 checkpoint of 64 tensors, warm in the
page cache, loaded with ``fastensors.<fw>.load_file`` and with
``safetensors.<fw>.load_file``, timed as

  load         load_file, until the arrays are made (jax's asynchronous
               copies waited for, mlx evaluated): a copy, or the mapping
               itself where the framework shares it
  load+touch   load_file and a sum over every tensor in the framework
               (every byte read, the result forced)

Two files: one whose data section starts 64-byte aligned (so every tensor
is at a 64-byte offset: jax can share it, XLA's rule) and one written by the
reference writer as is (8-byte aligned; jax must copy); the reference
adapters copy either way. The variants alternate run by run with the order
rotating, ``gc.collect()`` before each, medians of --runs. Results go to
stdout as markdown and to bench/results/bench_frameworks-*.json."""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FRAMEWORKS = {"flax": ("jax", "flax"), "tf": ("tensorflow", "tensorflow"), "paddle": ("paddle", "paddle"),
              "mlx": ("mlx.core", "mlx")}


def write_files(directory: str, size_mib: int):
    """(aligned path, unaligned path): the same tensors, the first padded in
    its metadata so the data section starts at a multiple of 64 bytes."""
    import fastensors.numpy as fnp

    rng = np.random.default_rng(0)
    shapes = common.tensor_shapes(size_mib, 64, itemsize=4)
    tensors = {f"layer.{i}.weight": rng.standard_normal(s, dtype=np.float32) for i, s in enumerate(shapes)}
    plain = os.path.join(directory, "plain.safetensors")
    fnp.save_file(tensors, plain, metadata={"format": "np"})
    aligned = os.path.join(directory, "aligned.safetensors")
    for pad in range(0, 64):
        fnp.save_file(tensors, aligned, metadata={"format": "np", "pad": "x" * pad})
        with open(aligned, "rb") as fh:
            if (8 + int.from_bytes(fh.read(8), "little")) % 64 == 0:
                break
    with open(plain, "rb") as fh:
        plain_start = 8 + int.from_bytes(fh.read(8), "little")
    return aligned, plain, plain_start % 64 == 0


def ready(fw: str, tensors: dict) -> dict:
    """``tensors`` once the framework has finished making them: jax copies
    asynchronously (``device_put`` returns before an unaligned copy is done),
    mlx evaluates lazily."""
    if fw == "flax":
        import jax

        jax.block_until_ready(tensors)
    elif fw == "mlx":
        import mlx.core as mx

        mx.eval(list(tensors.values()))
    return tensors


def touch(fw: str, tensors: dict) -> float:
    """A sum over every tensor, computed by the framework and forced."""
    total = 0.0
    if fw == "flax":
        import jax.numpy as jnp

        for t in tensors.values():
            total += float(jnp.sum(t))
    elif fw == "tf":
        import tensorflow as tf

        for t in tensors.values():
            total += float(tf.reduce_sum(t))
    elif fw == "paddle":
        import paddle

        for t in tensors.values():
            total += float(paddle.sum(t))
    else:
        import mlx.core as mx

        for t in tensors.values():
            total += mx.sum(t).item()
    return total


def one_framework(fw: str, files: dict, runs: int) -> list:
    """Rows for one framework (run in a child process)."""
    ours = importlib.import_module("fastensors." + FRAMEWORKS[fw][1])
    theirs = importlib.import_module("safetensors." + FRAMEWORKS[fw][1])
    variants = {("fastensors", "load"): lambda p: ready(fw, ours.load_file(p)),
                ("safetensors", "load"): lambda p: ready(fw, theirs.load_file(p)),
                ("fastensors", "load+touch"): lambda p: touch(fw, ours.load_file(p)),
                ("safetensors", "load+touch"): lambda p: touch(fw, theirs.load_file(p))}
    rows = []
    for label, path in files.items():
        common.warm_file(path)
        nbytes = os.path.getsize(path)
        for v in variants.values():  # untimed warm-up (imports, first allocations)
            v(path)
            gc.collect()
        times = {k: [] for k in variants}
        keys = list(variants)
        for r in range(runs):
            for k in keys[r % len(keys):] + keys[:r % len(keys)]:
                gc.collect()
                t0 = time.perf_counter()
                out = variants[k](path)
                times[k].append(time.perf_counter() - t0)
                del out
        for mode in ("load", "load+touch"):
            a, b = times[("fastensors", mode)], times[("safetensors", mode)]
            rows.append({"framework": fw, "file": label, "mode": mode, "fastensors": common.summarize(a),
                         "safetensors": common.summarize(b), "speedup": common.median(b) / common.median(a),
                         "fastensors_gbps": common.gbps(nbytes, common.median(a)),
                         "safetensors_gbps": common.gbps(nbytes, common.median(b))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frameworks", nargs="*", default=list(FRAMEWORKS), metavar="FRAMEWORK",
                        help="flax, tf, paddle, mlx (default: all)")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one framework, files given as JSON
        spec = json.loads(args.child)
        print(json.dumps(one_framework(spec["fw"], spec["files"], args.runs)))
        return
    work = os.path.join(args.dir, f"bench_frameworks_{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    try:
        aligned, plain, plain_aligned = write_files(work, args.size_mib)
        rows, skipped = [], []
        for fw in args.frameworks:
            module = FRAMEWORKS[fw][0]
            if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode:
                skipped.append(fw)
                continue
            # jax shares only 64-byte aligned tensors: both files; the others do not care
            files = {"64-aligned": aligned, "as written": plain} if fw == "flax" else {"as written": plain}
            child = subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--child",
                                    json.dumps({"fw": fw, "files": files})], capture_output=True, text=True)
            if child.returncode:
                sys.stderr.write(child.stderr[-3000:])
                raise SystemExit(f"{fw}: the benchmark process failed")
            rows += json.loads(child.stdout.strip().splitlines()[-1])
        table = common.markdown_table(
            ["framework", "file", "mode", "fastensors s median (min)", "safetensors s median (min)",
             "speedup (medians)", "fastensors GB/s", "safetensors GB/s"],
            [[r["framework"], r["file"], r["mode"],
              f"{r['fastensors']['median']:.3f} ({r['fastensors']['min']:.3f})",
              f"{r['safetensors']['median']:.3f} ({r['safetensors']['min']:.3f})",
              f"{r['speedup']:.2f}x", f"{r['fastensors_gbps']:.2f}", f"{r['safetensors_gbps']:.2f}"] for r in rows])
        print(f"{args.size_mib} MiB F32, 64 tensors, medians (min) of {args.runs} runs; the as-written file's"
              f" data section is {'' if plain_aligned else 'not '}64-byte aligned")
        print(table)
        if skipped:
            print(f"not installed, skipped: {', '.join(skipped)}")
        payload = {"rows": rows, "size_mib": args.size_mib, "runs": args.runs, "skipped": skipped,
                   "machine": common.machine_info(work)}
        path = common.write_json(f"bench_frameworks-{time.strftime('%Y%m%d-%H%M%S')}.json", payload)
        print(f"results: {path}")
    finally:
        for name in ("aligned.safetensors", "plain.safetensors"):
            common.remove(os.path.join(work, name))
        os.rmdir(work)


if __name__ == "__main__":
    main()
