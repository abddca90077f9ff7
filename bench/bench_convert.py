"""Dtype conversion benchmark: fastensors against ml_dtypes, numpy and torch
in the same run, and ``fastensors convert`` of a whole file against the
reference ``safetensors`` load + ``.float()`` + save.

    python bench/bench_convert.py                 # everything (2^27 elements, 1 GiB file)
    python bench/bench_convert.py arrays --runs 5 --repeat 3   # on a loaded machine
    python bench/bench_convert.py file --size-mib 256
    python bench/bench_convert.py --help

Benchmarks (names for the positional argument):

  arrays  BF16->F32, F16->F32, F32->BF16, F32->F16 and F32->F8_E4M3 on 2^27
          elements: fastensors.convert with a pre-faulted ``out=`` and
          allocating its result, against ml_dtypes/numpy ``astype``, torch
          ``.float()`` / ``.to()``, and the same peers writing into
          pre-faulted outputs (``np.copyto``, ``Tensor.copy_``); plus the
          memcpy bound of this machine, measured in the same run.
  file    ``fastensors convert SRC DST --dtype f32`` of a BF16 file (1 GiB by
          default), durable and with --no-fsync, against
          ``safetensors.torch.load_file`` + ``.float()`` + ``save_file``
          (which does not fsync); each in a fresh process, with its peak RSS
          (VmHWM, which counts the source file's pages a process maps and
          touches).

Method: 2 threads everywhere (OMP_NUM_THREADS=2 for fastensors' OpenMP,
``torch.set_num_threads(2)``; numpy and ml_dtypes casts are single-threaded by
design). Variants of one benchmark run interleaved, round by round, rotating
the order; one untimed warm-up round; medians of --runs rounds. Throughput
counts bytes read + bytes written. The memcpy bound is fastensors copying a
buffer to a pre-faulted one with 2 threads (glibc memcpy per thread) and
np.copyto (1 thread); "% of bound" divides a conversion's bytes read +
written per second by the best copy's. The load average is recorded before
and after each benchmark, since other processes may share the machine.
Results go to stdout as markdown and to bench/results/bench_convert-<time>.json."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import MiB  # noqa: E402

BENCHMARKS = ("arrays", "file")


def interleave(variants: Dict[str, Callable[[], object]], runs: int, log) -> Dict[str, dict]:
    names = list(variants)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(-1, runs):
        shift = 0 if r < 0 else r % len(names)
        for name in names[shift:] + names[:shift]:
            common.collect()
            t = common.time_call(variants[name])
            if r >= 0:
                times[name].append(t)
        if r >= 0:
            log("  round %d: %s" % (r + 1, ", ".join(f"{n} {times[n][-1] * 1e3:.0f}ms" for n in names)))
    return {n: common.summarize(ts) for n, ts in times.items()}


# -- arrays ------------------------------------------------------------------------


def bench_arrays(ctx) -> dict:
    import ml_dtypes
    import torch

    import fastensors

    torch.set_num_threads(ctx.threads)
    n = ctx.elements
    rng = np.random.default_rng(0)
    bits16 = rng.integers(0, 1 << 16, n, dtype=np.uint16) & np.uint16(0xBFFF)  # finite values
    bf16 = bits16.view(ml_dtypes.bfloat16)
    f16 = (rng.integers(0, 1 << 16, n, dtype=np.uint16) & np.uint16(0xBBFF)).view(np.float16)
    f32 = rng.standard_normal(n, dtype=np.float32)
    t_bf16 = torch.from_numpy(bits16.view(np.int16)).view(torch.bfloat16)
    t_f16 = torch.from_numpy(f16)
    t_f32 = torch.from_numpy(f32)

    # Pre-faulted outputs, written once so every page is resident.
    out_f32 = np.ones(n, np.float32)
    out_bf16 = np.ones(n, ml_dtypes.bfloat16)
    out_f16 = np.ones(n, np.float16)
    out_e4m3 = np.ones(n, ml_dtypes.float8_e4m3fn)
    tout_f32 = torch.from_numpy(out_f32)
    tout_bf16 = torch.from_numpy(out_bf16.view(np.int16)).view(torch.bfloat16)
    tout_f16 = torch.from_numpy(out_f16)

    results: Dict[str, dict] = {}
    rows: List[dict] = []
    load: Dict[str, list] = {}

    # The memcpy bound, in the same run: 4n bytes copied (read + written = 8n).
    copy_dst = np.ones(n, np.float32)
    ctx.log("memcpy bound: copy 4n bytes into a pre-faulted buffer")
    load["memcpy"] = [common.loadavg()]
    copy = interleave({
        "fastensors copy (2 threads)": lambda: fastensors.convert(f32, "F32", out=copy_dst),
        "np.copyto (1 thread)": lambda: np.copyto(copy_dst, f32),
    }, ctx.runs, ctx.log)
    load["memcpy"].append(common.loadavg())
    results["memcpy"] = copy
    copy_bytes = 8 * n
    bound = max(copy_bytes / v["median"] for v in copy.values())
    for name, v in copy.items():
        rows.append({"pair": "copy F32", "variant": name, "ms": v["median"] * 1e3,
                     "gbps": copy_bytes / v["median"] / 1e9, "pct_bound": copy_bytes / v["median"] / bound * 100})

    # What any conversion that allocates its result pays before converting:
    # fresh pages, faulted in and zeroed by the kernel.
    ctx.log("page-fault floor: allocate and fill an output")
    load["alloc"] = [common.loadavg()]
    alloc = interleave({
        "np.empty + fill, 4n bytes": lambda: np.empty(n, np.float32).fill(0),
        "np.empty + fill, 2n bytes": lambda: np.empty(n, np.float16).fill(0),
    }, ctx.runs, ctx.log)
    load["alloc"].append(common.loadavg())
    results["alloc"] = alloc
    for name, v in alloc.items():
        rows.append({"pair": "alloc floor", "variant": name, "ms": v["median"] * 1e3})

    def run_pair(label, in_b, out_b, variants, goals):
        ctx.log(label)
        load[label] = [common.loadavg()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = interleave(variants, ctx.runs, ctx.log)
        load[label].append(common.loadavg())
        results[label] = res
        nbytes = n * (in_b + out_b)
        ours = res["fastensors convert(out=)"]["median"]
        goal = dict(goals)
        for name, v in res.items():
            row = {"pair": label, "variant": name, "ms": v["median"] * 1e3,
                   "gbps": nbytes / v["median"] / 1e9, "pct_bound": nbytes / v["median"] / bound * 100,
                   "fastensors_speedup": v["median"] / ours}
            if name in goal:  # the speedup fastensors(out=) must reach over this peer
                row["goal"] = f">= {goal[name]}x"
                row["met"] = v["median"] / ours >= goal[name]
            rows.append(row)

    run_pair("BF16 -> F32", 2, 4, {
        "fastensors convert(out=)": lambda: fastensors.convert(bf16, "F32", out=out_f32),
        "fastensors convert": lambda: fastensors.convert(bf16, "F32"),
        "ml_dtypes astype": lambda: bf16.astype(np.float32),
        "torch .float()": lambda: t_bf16.float(),
        "np.copyto (ml_dtypes cast, out)": lambda: np.copyto(out_f32, bf16, casting="unsafe"),
        "torch copy_ (out)": lambda: tout_f32.copy_(t_bf16),
    }, [("ml_dtypes astype", 1.8), ("torch .float()", 3.5)])
    run_pair("F16 -> F32", 2, 4, {
        "fastensors convert(out=)": lambda: fastensors.convert(f16, "F32", out=out_f32),
        "fastensors convert": lambda: fastensors.convert(f16, "F32"),
        "numpy astype": lambda: f16.astype(np.float32),
        "torch .float()": lambda: t_f16.float(),
        "np.copyto (numpy cast, out)": lambda: np.copyto(out_f32, f16, casting="unsafe"),
        "torch copy_ (out)": lambda: tout_f32.copy_(t_f16),
    }, [("numpy astype", 4.0)])
    run_pair("F32 -> BF16", 4, 2, {
        "fastensors convert(out=)": lambda: fastensors.convert(f32, "BF16", out=out_bf16),
        "fastensors convert": lambda: fastensors.convert(f32, "BF16"),
        "torch .to(bfloat16)": lambda: t_f32.to(torch.bfloat16),
        "ml_dtypes astype": lambda: f32.astype(ml_dtypes.bfloat16),
        "torch copy_ (out)": lambda: tout_bf16.copy_(t_f32),
    }, [("torch .to(bfloat16)", 1.3)])
    run_pair("F32 -> F16", 4, 2, {
        "fastensors convert(out=)": lambda: fastensors.convert(f32, "F16", out=out_f16),
        "fastensors convert": lambda: fastensors.convert(f32, "F16"),
        "torch .to(float16)": lambda: t_f32.to(torch.float16),
        "numpy astype": lambda: f32.astype(np.float16),
        "torch copy_ (out)": lambda: tout_f16.copy_(t_f32),
        "np.copyto (numpy cast, out)": lambda: np.copyto(out_f16, f32, casting="unsafe"),
    }, [("torch .to(float16)", 1.3), ("numpy astype", 4.0)])
    run_pair("F32 -> F8_E4M3", 4, 1, {
        "fastensors convert(out=)": lambda: fastensors.convert(f32, "F8_E4M3", out=out_e4m3),
        "fastensors convert": lambda: fastensors.convert(f32, "F8_E4M3"),
        "ml_dtypes astype": lambda: f32.astype(ml_dtypes.float8_e4m3fn),
        "torch .to(float8_e4m3fn)": lambda: t_f32.to(torch.float8_e4m3fn),
    }, [])
    return {"rows": rows, "results": results, "loadavg": load, "memcpy_bound_gbps": bound / 1e9,
            "isa": fastensors.isa(), "elements": n}


def combine(repeats: List[dict]) -> dict:
    """Per-cell medians over whole repeats of the array benchmark (each cell
    already a median of rounds), with the spread of each cell's medians.
    Goals are re-judged on the combined medians."""
    if len(repeats) == 1:
        return repeats[0]
    out = dict(repeats[-1])
    rows = []
    for i, row in enumerate(repeats[0]["rows"]):
        cells = [r["rows"][i] for r in repeats]
        assert all(c["variant"] == row["variant"] and c["pair"] == row["pair"] for c in cells)
        merged = dict(row)
        for key in ("ms", "gbps", "pct_bound", "fastensors_speedup"):
            if key in row:
                merged[key] = common.median([c[key] for c in cells])
        merged["ms_spread"] = [min(c["ms"] for c in cells), max(c["ms"] for c in cells)]
        rows.append(merged)
    for row in rows:  # judge goals on the medians
        if "goal" in row:
            row["met"] = row["fastensors_speedup"] >= float(row["goal"].split()[1].rstrip("x"))
    out["rows"] = rows
    out["memcpy_bound_gbps"] = common.median([r["memcpy_bound_gbps"] for r in repeats])
    out["repeats"] = len(repeats)
    out["loadavg"] = [r["loadavg"] for r in repeats]
    return out


def _maybe(x, digits):
    return None if x is None else (round(x) if digits == 0 else round(x, digits))


def print_arrays(rec: dict) -> None:
    rows = rec["rows"]
    reps = rec.get("repeats", 1)
    print(f"\n### Arrays: {rec['elements']:,} elements, level {rec['isa']}, "
          f"memcpy bound {rec['memcpy_bound_gbps']:.1f} GB/s (read + written)"
          + (f", medians of {reps} repeats" if reps > 1 else "") + "\n")
    print(common.markdown_table(
        ["pair", "variant", "median ms", "spread ms", "GB/s (r+w)", "% of memcpy", "vs fastensors(out=)", "goal",
         "met"],
        [[r["pair"], r["variant"], round(r["ms"], 1),
          ("%.0f-%.0f" % tuple(r["ms_spread"]) if "ms_spread" in r else None),
          _maybe(r.get("gbps"), 1), _maybe(r.get("pct_bound"), 0),
          (f"{r['fastensors_speedup']:.2f}x" if "fastensors_speedup" in r else None), r.get("goal"),
          ({True: "yes", False: "no"}[r["met"]] if "met" in r else None)] for r in rows]))


# -- file ------------------------------------------------------------------------------

# Each child reports its own peak RSS (VmHWM, which starts afresh at exec;
# wait4's ru_maxrss would also count the forked copy of this process).
PEAK = r"""
def _peak():
    import json
    with open("/proc/self/status") as f:
        kib = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    print(json.dumps({"vmhwm_kib": kib}))
"""

FST_CHILD = PEAK + r"""
import sys
from fastensors.cli import main
rc = main(sys.argv[1:])
_peak()
sys.exit(rc)
"""

REF_CHILD = PEAK + r"""
import sys, torch
import safetensors.torch as st
torch.set_num_threads(int(sys.argv[3]))
sd = st.load_file(sys.argv[1])
sd = {k: v.float() for k, v in sd.items()}
st.save_file(sd, sys.argv[2])
_peak()
"""

MAKE_FILE = r"""
import sys
sys.path.insert(0, sys.argv[1])
import common, safetensors.torch as st
sd = common.make_state_dict(int(sys.argv[3]), int(sys.argv[4]), "bfloat16")
st.save_file(sd, sys.argv[2])
print(max(t.nelement() * t.element_size() for t in sd.values()))
"""


def run_child(argv: List[str], env: Dict[str, str]) -> dict:
    """Run a child; its wall time and the peak RSS it reports."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} failed: {err.read().decode()}")
        text = out.read().decode().strip()
        peak = json.loads(text.splitlines()[-1])["vmhwm_kib"]
        return {"seconds": seconds, "peak_rss_mib": peak / 1024, "stdout": text}


def bench_file(ctx) -> dict:
    src = ctx.path("convert-src-bf16.safetensors")
    dst = ctx.path("convert-dst-f32.safetensors")
    common.remove(src)
    # Built in a child, so this process stays small while it forks the runs.
    made = subprocess.run([sys.executable, "-c", MAKE_FILE, os.path.dirname(os.path.abspath(__file__)), src,
                           str(ctx.size_mib), str(ctx.tensors)], capture_output=True, text=True, check=True)
    largest = int(made.stdout.strip().splitlines()[-1])
    file_bytes = os.path.getsize(src)
    env = dict(os.environ, OMP_NUM_THREADS=str(ctx.threads))
    variants = {
        "fastensors convert --dtype f32 (durable)": [sys.executable, "-c", FST_CHILD, "convert", src, dst,
                                                      "--dtype", "f32", "--no-progress"],
        "fastensors convert --dtype f32 --no-fsync": [sys.executable, "-c", FST_CHILD, "convert", src, dst,
                                                      "--dtype", "f32", "--no-progress", "--no-fsync"],
        "safetensors load_file + .float() + save_file": [sys.executable, "-c", REF_CHILD, src, dst,
                                                          str(ctx.threads)],
    }
    names = list(variants)
    runs: Dict[str, List[dict]] = {n: [] for n in names}
    ctx.log(f"file: {file_bytes / MiB:.0f} MiB BF16 -> F32, {ctx.tensors} tensors, fresh process each")
    load = [common.loadavg()]
    for r in range(-1, ctx.file_runs):
        shift = 0 if r < 0 else r % len(names)
        for name in names[shift:] + names[:shift]:
            common.remove(dst)
            os.sync()  # no run pays for the previous one's writeback
            common.warm_file(src)
            rec = run_child(variants[name], env)
            if r >= 0:
                runs[name].append(rec)
        if r >= 0:
            ctx.log("  round %d: %s" % (r + 1, ", ".join(
                f"{n} {runs[n][-1]['seconds']:.2f}s/{runs[n][-1]['peak_rss_mib']:.0f}MiB" for n in names)))
    load.append(common.loadavg())
    common.remove(dst)
    common.remove(src)
    summary = {}
    for name in names:
        secs = [x["seconds"] for x in runs[name]]
        rss = [x["peak_rss_mib"] for x in runs[name]]
        summary[name] = {"seconds": common.summarize(secs), "peak_rss_mib": common.median(rss)}
    return {"file_mib": file_bytes / MiB, "largest_tensor_mib": largest / MiB, "summary": summary,
            "loadavg": load, "runs": runs}


def print_file(rec: dict) -> None:
    ref = rec["summary"]["safetensors load_file + .float() + save_file"]["seconds"]["median"]
    print(f"\n### File: {rec['file_mib']:.0f} MiB BF16 -> F32 (largest tensor {rec['largest_tensor_mib']:.0f} MiB)\n")
    print(common.markdown_table(
        ["variant", "median s", "GB/s (file in)", "peak RSS MiB", "speedup vs reference"],
        [[name, round(v["seconds"]["median"], 2), round(rec["file_mib"] * MiB / v["seconds"]["median"] / 1e9, 2),
          round(v["peak_rss_mib"]), f"{ref / v['seconds']['median']:.2f}x"] for name, v in rec["summary"].items()]))


# -- driver -------------------------------------------------------------------------------


class Context(common.Context):
    def __init__(self, args):
        super().__init__(args)
        self.elements = 1 << args.log2_elements
        self.file_runs = args.file_runs
        self.threads = args.threads


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmarks", nargs="*", choices=[[], *BENCHMARKS], default=[])
    p.add_argument("--log2-elements", type=int, default=27)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--repeat", type=int, default=1,
                   help="repeat the whole array benchmark and report per-cell medians (for loaded machines)")
    p.add_argument("--file-runs", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--tensors", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the file benchmark writes")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    chosen = args.benchmarks or list(BENCHMARKS)
    ctx = Context(args)
    record = {"machine": common.machine_info(ctx.dir), "args": vars(args)}
    if "arrays" in chosen:
        repeats = [bench_arrays(ctx) for _ in range(args.repeat)]
        record["arrays_repeats"] = repeats
        record["arrays"] = combine(repeats)
        print_arrays(record["arrays"])
    if "file" in chosen:
        record["file"] = bench_file(ctx)
        print_file(record["file"])
    print(f"\nload average (1/5/15 min) at the end: {common.loadavg()}")
    path = common.write_json(f"bench_convert-{time.strftime('%Y%m%d-%H%M%S')}.json", record)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
