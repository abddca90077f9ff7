"""Foundation benchmark: reading and writing whole safetensors files,
fastensors against the reference ``safetensors`` package in the same run.

    python bench/bench_io.py                      # everything, 1 GiB, 64 tensors
    python bench/bench_io.py --size-mib 64        # a quick run
    python bench/bench_io.py save durable         # only some benchmarks
    python bench/bench_io.py --help

Benchmarks (names for the positional argument):

  save     torch save_file, fastensors durable=False vs safetensors
  durable  fastensors durable save_file vs the disk's limit (one os.write of
           the same bytes + fsync) and vs safetensors save_file + fsync
  read-np  safe_open(framework="np") + get_tensor for all + reading every
           byte, fastensors vs safetensors (F16 file: the reference numpy
           path cannot build bfloat16 arrays)
  load-pt  torch load_file, load only and load + reading every byte
  rss      peak RSS growth while saving, each in a fresh subprocess

Method: variants of one benchmark are interleaved round by round (the order
rotates every round); before every timed write every target is removed and
os.sync() flushes dirty pages, so no run pays for the previous one's
writeback; one untimed warm-up round comes first; medians of --runs rounds
are reported. Read benchmarks run on files that are fully in the page cache
(checked with mincore before every run). Throughput is file bytes / median
seconds in decimal GB/s. Results go to stdout as markdown and to
bench/results/bench_io-<time>.json."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import MiB  # noqa: E402

BENCHMARKS = ("save", "durable", "read-np", "load-pt", "rss")


# -- the interleaved runner ----------------------------------------------------

class Variant:
    """One contender: ``run()`` is timed; ``prepare()`` and ``cleanup()`` are not."""

    def __init__(self, name: str, run: Callable[[], object], *, prepare: Optional[Callable[[], None]] = None,
                 cleanup: Optional[Callable[[], None]] = None):
        self.name = name
        self.run = run
        self.prepare = prepare
        self.cleanup = cleanup


def interleave(variants: List[Variant], runs: int, warmup: bool, log: Callable[[str], None]) -> Dict[str, dict]:
    """Time each variant ``runs`` times, round by round, rotating the order."""
    times: Dict[str, List[float]] = {v.name: [] for v in variants}
    probes: Dict[str, List[dict]] = {v.name: [] for v in variants}
    rounds = ([-1] if warmup else []) + list(range(runs))
    for r in rounds:
        shift = 0 if r < 0 else r % len(variants)
        order = variants[shift:] + variants[:shift]
        for v in order:
            probe = v.prepare() if v.prepare else None
            common.collect()
            cpu0 = os.times()
            t = common.time_call(v.run)
            cpu1 = os.times()
            if v.cleanup:
                v.cleanup()
            if r >= 0:
                times[v.name].append(t)
                probe = dict(probe or {})
                probe["cpu_s"] = round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 4)
                probes[v.name].append(probe)
        if r >= 0:
            log("  round %d: %s" % (r + 1, ", ".join(f"{v.name} {times[v.name][-1]:.3f}s" for v in variants)))
    return {name: {**common.summarize(ts), "probes": probes[name]} for name, ts in times.items()}


def write_prepare(targets: List[str], sync: bool) -> Callable[[], dict]:
    """Before a timed write: remove every target, then flush dirty pages."""

    def prepare() -> dict:
        for t in targets:
            common.remove(t)
        if sync:
            os.sync()
        return {"dirty_mib_before": round(common.dirty_mib(), 1)}

    return prepare


def read_prepare(path: str) -> Callable[[], dict]:
    """Before a timed read: check the file is in the page cache (re-warm if not)."""

    def prepare() -> dict:
        frac = common.cached_fraction(path)
        if frac < 0.999:
            frac = common.warm_file(path)
        return {"cached_fraction": frac}

    return prepare


# -- result rows ---------------------------------------------------------------

def row(bench: str, ours_name: str, peer_name: Optional[str], res: Dict[str, dict], nbytes: int,
        goal: str, met: Optional[bool]) -> dict:
    ours = res[ours_name]["median"]
    peer = res[peer_name]["median"] if peer_name else None
    return {
        "benchmark": bench,
        "fastensors": ours_name,
        "peer": peer_name,
        "fastensors_s": ours,
        "peer_s": peer,
        "speedup": (peer / ours) if peer else None,
        "fastensors_gbps": common.gbps(nbytes, ours),
        "peer_gbps": common.gbps(nbytes, peer) if peer else None,
        "fastensors_spread_s": [res[ours_name]["min"], res[ours_name]["max"]],
        "peer_spread_s": [res[peer_name]["min"], res[peer_name]["max"]] if peer else None,
        "goal": goal,
        "met": met,
        "bytes": nbytes,
    }


# -- benchmarks ----------------------------------------------------------------

def bench_save(ctx) -> Tuple[List[dict], dict]:
    import fastensors.torch as fe_torch
    import safetensors.torch as st_torch

    sd = ctx.bf16()
    ours_p, ref_p = ctx.path("save-fastensors.safetensors"), ctx.path("save-safetensors.safetensors")
    prep = write_prepare([ours_p, ref_p], ctx.sync)
    variants = [
        Variant("fastensors save_file(durable=False)", lambda: fe_torch.save_file(sd, ours_p, durable=False), prepare=prep),
        Variant("safetensors save_file", lambda: st_torch.save_file(sd, ref_p), prepare=prep),
    ]
    ctx.log("save: torch save_file, not durable (page cache only)")
    res = interleave(variants, ctx.runs, ctx.warmup, ctx.log)
    # Untimed check that both wrote the same file, or the comparison is void.
    fe_torch.save_file(sd, ours_p, durable=False)
    st_torch.save_file(sd, ref_p)
    nbytes = os.path.getsize(ours_p)
    same = nbytes == os.path.getsize(ref_p) and files_equal(ours_p, ref_p)
    if not same:
        ctx.log("  WARNING: fastensors and safetensors wrote different bytes")
    for p in (ours_p, ref_p):
        common.remove(p)
    r = row("save_file (not durable)", variants[0].name, variants[1].name, res, nbytes,
            "no slower (speedup >= 1.00)", None)
    r["met"] = r["speedup"] >= 1.0
    return [r], {"results": res, "identical_files": same}


def bench_durable(ctx) -> Tuple[List[dict], dict]:
    import fastensors.torch as fe_torch
    import safetensors.torch as st_torch

    sd = ctx.bf16()
    ours_p, raw_p, ref_p = (ctx.path(f"durable-{n}.safetensors") for n in ("fastensors", "raw", "safetensors"))
    # The same number of bytes as the file, in one buffer.
    fe_torch.save_file(sd, ours_p, durable=False)
    nbytes = os.path.getsize(ours_p)
    common.remove(ours_p)
    buf = np.empty(nbytes, np.uint8)
    off = 0
    for t in sd.values():
        b = common_bytes(t)
        n = min(b.size, nbytes - off)
        buf[off:off + n] = b[:n]
        off += n
    buf[off:] = 0x5A

    def raw_write():
        fd = os.open(raw_p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(buf)
            done = 0
            while done < nbytes:  # Linux caps one write(2) near 2 GiB
                done += os.write(fd, view[done:])
            os.fsync(fd)
        finally:
            os.close(fd)

    def ref_fsync():
        st_torch.save_file(sd, ref_p)
        fd = os.open(ref_p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    prep = write_prepare([ours_p, raw_p, ref_p], ctx.sync)
    variants = [
        Variant("fastensors save_file (durable)", lambda: fe_torch.save_file(sd, ours_p), prepare=prep),
        Variant("os.write + fsync (disk limit)", raw_write, prepare=prep),
        Variant("safetensors save_file + fsync", ref_fsync, prepare=prep),
    ]
    ctx.log("durable: fsynced saves vs one os.write + fsync of the same bytes")
    res = interleave(variants, ctx.runs, ctx.warmup, ctx.log)
    for p in (ours_p, raw_p, ref_p):
        common.remove(p)
    r1 = row("save_file durable vs disk limit", variants[0].name, variants[1].name, res, nbytes,
             "within 15% of the disk limit (speedup >= 0.87)", None)
    r1["met"] = res[variants[0].name]["median"] <= 1.15 * res[variants[1].name]["median"]
    r2 = row("save_file durable vs reference + fsync", variants[0].name, variants[2].name, res, nbytes,
             "— (reported)", None)
    return [r1, r2], {"results": res}


def files_equal(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(16 * MiB), fb.read(16 * MiB)
            if x != y:
                return False
            if not x:
                return True


def common_bytes(t) -> np.ndarray:
    import torch

    return t.reshape(-1).view(torch.uint8).numpy()


def bench_read_np(ctx) -> Tuple[List[dict], dict]:
    import fastensors
    import safetensors
    import safetensors.torch as st_torch

    path = ctx.path("read-np-f16.safetensors")
    # safetensors.safe_open(framework="np") raises "data type 'bfloat16' not
    # understood" on BF16 files, so this benchmark uses an F16 file of the same size.
    common.remove(path)
    st_torch.save_file(ctx.f16(), path)
    ctx.drop_f16()
    nbytes = os.path.getsize(path)
    common.warm_file(path)
    held: Dict[str, object] = {}

    def read(lib, touch: bool) -> Callable[[], None]:
        def run():
            if lib == "fastensors":
                f = fastensors.safe_open(path, "np")
            else:
                f = safetensors.safe_open(path, framework="np")
            with f:
                out = {}
                for k in f.keys():
                    a = f.get_tensor(k)
                    if touch:
                        common.touch_bytes(a)
                    out[k] = a
            held["out"] = out  # freed after the timer stops

        return run

    def cleanup():
        held.clear()

    prep = read_prepare(path)
    mk = lambda lib, touch, label: Variant(label, read(lib, touch), prepare=prep, cleanup=cleanup)  # noqa: E731
    variants = [
        mk("fastensors", True, "fastensors safe_open np + read all"),
        mk("safetensors", True, "safetensors safe_open np + read all"),
        mk("fastensors", False, "fastensors safe_open np (get only)"),
        mk("safetensors", False, "safetensors safe_open np (get only)"),
    ]
    ctx.log("read-np: open + get_tensor every tensor (+ read every byte), F16 file warm in page cache")
    res = interleave(variants, ctx.runs, ctx.warmup, ctx.log)
    common.remove(path)
    r1 = row("numpy: open + get_tensor all + read every byte (F16)", variants[0].name, variants[1].name, res,
             nbytes, ">= 1.5x faster", None)
    r1["met"] = r1["speedup"] >= 1.5
    r2 = row("numpy: open + get_tensor all, no touching (F16)", variants[2].name, variants[3].name, res, nbytes,
             "— (reported)", None)
    return [r1, r2], {"results": res}


def bench_load_pt(ctx) -> Tuple[List[dict], dict]:
    import fastensors.torch as fe_torch
    import safetensors.torch as st_torch

    path = ctx.path("load-pt-bf16.safetensors")
    common.remove(path)
    st_torch.save_file(ctx.bf16(), path)
    nbytes = os.path.getsize(path)
    common.warm_file(path)
    held: Dict[str, object] = {}

    def load(fn, touch: bool) -> Callable[[], None]:
        def run():
            sd = fn(path)
            if touch:
                for t in sd.values():
                    common.touch_torch(t)
            held["sd"] = sd

        return run

    def cleanup():
        held.clear()

    prep = read_prepare(path)
    variants = [
        Variant("fastensors load_file", load(fe_torch.load_file, False), prepare=prep, cleanup=cleanup),
        Variant("safetensors load_file", load(st_torch.load_file, False), prepare=prep, cleanup=cleanup),
        Variant("fastensors load_file + read all", load(fe_torch.load_file, True), prepare=prep, cleanup=cleanup),
        Variant("safetensors load_file + read all", load(st_torch.load_file, True), prepare=prep, cleanup=cleanup),
    ]
    ctx.log("load-pt: torch load_file, BF16 file warm in page cache")
    res = interleave(variants, ctx.runs, ctx.warmup, ctx.log)
    common.remove(path)
    r1 = row("torch load_file (load only)", variants[0].name, variants[1].name, res, nbytes, "no slower", None)
    r1["met"] = r1["speedup"] >= 1.0
    r2 = row("torch load_file + read every byte", variants[2].name, variants[3].name, res, nbytes, "no slower", None)
    r2["met"] = r2["speedup"] >= 1.0
    return [r1, r2], {"results": res}


RSS_VARIANTS = (("fastensors", False), ("fastensors", True), ("safetensors", False))


def bench_rss(ctx) -> Tuple[List[dict], dict]:
    """Each save in a fresh interpreter: build the state dict, reset the peak,
    save, report VmHWM - VmRSS(before save)."""
    out = []
    path = ctx.path("rss.safetensors")
    ctx.log("rss: peak RSS growth while saving, fresh subprocess per variant")
    for lib, durable in RSS_VARIANTS:
        common.remove(path)
        os.sync()
        cmd = [sys.executable, os.path.abspath(__file__), "_rss-worker", "--lib", lib,
               "--durable", "1" if durable else "0", "--size-mib", str(ctx.size_mib),
               "--tensors", str(ctx.tensors), "--path", path]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ctx.child_env)
        if proc.returncode != 0:
            raise RuntimeError(f"rss worker failed: {proc.stderr}")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        ctx.log(f"  {lib} durable={durable}: growth {rec['growth_mib']:.1f} MiB")
        out.append(rec)
    common.remove(path)
    return out, {"results": out}


def rss_worker(args) -> None:
    sd = common.make_state_dict(args.size_mib, args.tensors, "bfloat16")
    if args.lib == "fastensors":
        import fastensors.torch as m

        save = (lambda: m.save_file(sd, args.path, durable=bool(args.durable)))
        label = f"fastensors save_file(durable={bool(args.durable)})"
    else:
        import safetensors.torch as m

        save = (lambda: m.save_file(sd, args.path))
        label = "safetensors save_file"
    common.collect()
    reset = common.reset_peak_rss()
    rss0 = common.proc_status_kib("VmRSS")
    hwm0 = common.proc_status_kib("VmHWM")
    t = common.time_call(save)
    hwm1 = common.proc_status_kib("VmHWM")
    print(json.dumps({
        "variant": label, "lib": args.lib, "durable": bool(args.durable),
        "tensor_mib": common.state_dict_nbytes(sd) / MiB,
        "rss_before_mib": rss0 / 1024, "peak_before_mib": hwm0 / 1024, "peak_after_mib": hwm1 / 1024,
        "growth_mib": (hwm1 - rss0) / 1024, "peak_reset": reset, "seconds": t,
    }))


# -- driver --------------------------------------------------------------------

class Context(common.Context):
    def __init__(self, args):
        super().__init__(args)
        self._bf16 = None
        self._f16 = None
        self.child_env = dict(os.environ)

    def bf16(self):
        if self._bf16 is None:
            self._bf16 = common.make_state_dict(self.size_mib, self.tensors, "bfloat16", seed=0)
        return self._bf16

    def f16(self):
        if self._f16 is None:
            self._f16 = common.make_state_dict(self.size_mib, self.tensors, "float16", seed=1)
        return self._f16

    def drop_f16(self):
        self._f16 = None
        common.collect()


def fmt_table(rows: List[dict]) -> str:
    headers = ["benchmark", "fastensors", "s median (min)", "peer", "peer s median (min)",
               "speedup median (min)", "fastensors GB/s", "peer GB/s", "goal (on medians)", "met"]
    body = []
    for r in rows:
        peer = r["peer_s"] is not None
        body.append([
            r["benchmark"], r["fastensors"], f"{r['fastensors_s']:.3f} ({r['fastensors_spread_s'][0]:.3f})",
            r["peer"] or "—",
            f"{r['peer_s']:.3f} ({r['peer_spread_s'][0]:.3f})" if peer else "—",
            f"{r['speedup']:.2f}x ({r['peer_spread_s'][0] / r['fastensors_spread_s'][0]:.2f}x)" if peer else "—",
            f"{r['fastensors_gbps']:.2f}", f"{r['peer_gbps']:.2f}" if peer else "—",
            r["goal"], {True: "yes", False: "**no**", None: "—"}[r["met"]],
        ])
    return common.markdown_table(headers, body)


def fmt_rss(recs: List[dict]) -> str:
    headers = ["save", "tensors MiB", "RSS before save MiB", "peak RSS MiB", "growth MiB", "goal", "met"]
    body = []
    for r in recs:
        ours = r["lib"] == "fastensors"
        body.append([
            r["variant"], f"{r['tensor_mib']:.0f}", f"{r['rss_before_mib']:.0f}", f"{r['peak_after_mib']:.0f}",
            f"{r['growth_mib']:.1f}", "<= 64 MiB" if ours else "— (reported)",
            ("yes" if r["growth_mib"] <= 64 else "**no**") if ours else "—",
        ])
    return common.markdown_table(headers, body)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmarks", nargs="*", metavar="BENCH",
                   help=f"any of {', '.join(BENCHMARKS)}, all (default: all)")
    p.add_argument("--size-mib", type=int, default=1024, help="state dict size in MiB (default 1024)")
    p.add_argument("--tensors", type=int, default=64, help="number of tensors (default 64)")
    p.add_argument("--runs", type=int, default=5, help="timed rounds per benchmark; medians reported (default 5)")
    p.add_argument("--dir", default=os.path.join(common.RESULTS_DIR, "work"),
                   help="where files are written (default bench/results/work)")
    p.add_argument("--no-sync", action="store_true", help="skip os.sync() before each timed write")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up round")
    p.add_argument("--json", default=None, help="result file name under bench/results/")
    # internal, for the rss subprocess
    p.add_argument("--lib", default="fastensors", help=argparse.SUPPRESS)
    p.add_argument("--durable", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.benchmarks == ["_rss-worker"]:
        rss_worker(args)
        return 0
    args.benchmarks = args.benchmarks or ["all"]
    unknown = [b for b in args.benchmarks if b not in (*BENCHMARKS, "all")]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}, all")
    selected = BENCHMARKS if "all" in args.benchmarks else tuple(b for b in BENCHMARKS if b in args.benchmarks)

    # The durable benchmark must measure the default (durable) save.
    if "FASTENSORS_DURABLE" in os.environ:
        print(f"note: unsetting FASTENSORS_DURABLE={os.environ['FASTENSORS_DURABLE']!r} for this run", file=sys.stderr)
        del os.environ["FASTENSORS_DURABLE"]

    ctx = Context(args)
    info = common.machine_info(ctx.dir)
    load_before = common.loadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    ctx.log(f"fastensors {info['fastensors']} vs safetensors {info['safetensors']}; torch {info['torch']}; "
            f"{args.size_mib} MiB in {args.tensors} tensors; {args.runs} runs; dir {ctx.dir}; "
            f"load average {load_before}")

    rows: List[dict] = []
    rss: List[dict] = []
    details: Dict[str, object] = {}
    runners = {"save": bench_save, "durable": bench_durable, "read-np": bench_read_np, "load-pt": bench_load_pt}
    for name in selected:
        if name == "rss":
            rss, details[name] = bench_rss(ctx)
        else:
            got, details[name] = runners[name](ctx)
            rows.extend(got)
    load_after = common.loadavg()

    print(f"## fastensors {info['fastensors']} vs safetensors {info['safetensors']} — "
          f"{args.size_mib} MiB, {args.tensors} tensors, median of {args.runs} runs\n")
    if rows:
        print(fmt_table(rows))
        print()
    if rss:
        print(fmt_rss(rss))
        print()
    print(f"Load average before: {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after: {', '.join(f'{x:.2f}' for x in load_after)} ({info['nproc']} CPUs).")
    if any(b in selected for b in ("save", "durable")):
        print("Writes: every target removed and os.sync() run before each timed write "
              + ("(no dirty pages at start)." if ctx.sync else "(--no-sync: dirty pages may remain)."))
    if any(b in selected for b in ("read-np", "load-pt")):
        fracs = [pr.get("cached_fraction", 1.0) for b in ("read-np", "load-pt") if b in details
                 for v in details[b]["results"].values() for pr in v["probes"]]
        print(f"Reads: files warm in the page cache for every run (min cached fraction {min(fracs):.3f}).")

    payload = {
        "started": started, "args": vars(args), "machine": info, "loadavg_before": load_before,
        "loadavg_after": load_after, "rows": rows, "rss": rss, "details": details,
    }
    name = args.json or f"bench_io-{time.strftime('%Y%m%d-%H%M%S')}-{args.size_mib}MiB.json"
    print(f"\nJSON: {common.write_json(name, payload)}")
    ctx.remove_dir_if_empty()
    return 0


if __name__ == "__main__":
    sys.exit(main())
