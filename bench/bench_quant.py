"""Quantization kernels against their references, in the same process.

fastensors.quantize / dequantize vs gguf.quants.quantize / dequantize (GGML
types) and a PyTorch eager int8 per-channel quantizer, on a 4096x4096 F32
matrix. Reports medians of --runs rounds (wall time, and fastensors' CPU time
over all threads), input GB/s and the fraction of a memcpy of the input
(numpy copy into a preallocated buffer). FASTENSORS_ISA picks the kernels.

    python bench/bench_quant.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import ml_dtypes
import numpy as np

import fastensors


CPU = {}  # "last": median CPU seconds (all threads) of the last timed() call


def timed(fn, runs):
    """Median and minimum wall time; the median CPU time (process-wide, all
    threads) goes to CPU["last"], which tells work apart from waiting on a
    loaded machine."""
    fn()  # warm-up
    out, cpu = [], []
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    CPU["last"] = statistics.median(cpu)
    return statistics.median(out), min(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--ref-runs", type=int, default=3, help="rounds for the slow numpy references")
    args = ap.parse_args()
    n = args.size
    x = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    nbytes = x.nbytes
    print(f"# {n}x{n} F32 ({nbytes / 1e6:.0f} MB), cores={os.cpu_count()}, load={os.getloadavg()[0]:.2f}, "
          f"kernels={fastensors.quant.kernel_isa()}")
    dst = np.empty_like(x)
    t_copy, _ = timed(lambda: np.copyto(dst, x), args.runs)
    print(f"memcpy bound: {t_copy * 1e3:.1f} ms ({nbytes / t_copy / 1e9:.1f} GB/s)")
    print("| scheme | fastensors ms | peer ms | speedup | fastensors CPU ms | input GB/s | % of memcpy |")
    print("|---|---|---|---|---|---|---|")

    def row(name, ours, peer, ours_cpu):
        gbs = nbytes / ours / 1e9
        pct = t_copy / ours * 100
        peer_s = f"{peer * 1e3:.0f}" if peer else "-"
        sp = f"{peer / ours:.1f}x" if peer else "-"
        print(f"| {name} | {ours * 1e3:.1f} | {peer_s} | {sp} | {ours_cpu * 1e3:.1f} | {gbs:.2f} | {pct:.0f}% |",
              flush=True)

    def ours_timed(fn):
        t, _ = timed(fn, args.runs)
        return t, CPU["last"]

    # An output to reuse; fastensors allocates its outputs 64-byte aligned.
    reused = fastensors.quantize(x, "q8_0").dequantize()
    try:
        import gguf.quants as gq
        from gguf import GGMLQuantizationType as T
    except ImportError:
        gq = None
    for s in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1"):
        ours, cpu = ours_timed(lambda: fastensors.quantize(x, s))
        peer = timed(lambda: gq.quantize(x, getattr(T, s.upper())), args.ref_runs)[0] if gq else None
        row(f"{s} quantize", ours, peer, cpu)
        qt = fastensors.quantize(x, s)
        ours, cpu = ours_timed(lambda: qt.dequantize())
        peer = timed(lambda: gq.dequantize(qt.data, getattr(T, s.upper())), args.ref_runs)[0] if gq else None
        row(f"{s} dequantize", ours, peer, cpu)
        # Into a reused output: no fresh 67 MB to allocate and first-touch.
        ours, cpu = ours_timed(lambda: qt.dequantize(out=reused))
        row(f"{s} dequantize (out=)", ours, peer, cpu)

    try:
        import torch

        xt = torch.from_numpy(x)

        def torch_int8():
            scale = xt.abs().amax(dim=1, keepdim=True) / 127.5
            return torch.clamp(torch.round(xt / scale), -128, 127).to(torch.int8)

        torch_int8()
        peer_int8 = timed(torch_int8, args.runs)[0]
        print(f"# torch {torch.__version__}, threads={torch.get_num_threads()}")
    except ImportError:
        peer_int8 = None
    t, cpu = ours_timed(lambda: fastensors.quantize(x, "int8"))
    row("int8 (per channel)", t, peer_int8, cpu)
    for s, kw in (("int4", {}), ("int2", {}), ("nf4", {}), ("fp8_e4m3", {"granularity": "channel"}),
                  ("fp8_e4m3", {"granularity": "block"})):
        label = s + (f" ({kw['granularity']})" if kw else "")
        t, cpu = ours_timed(lambda: fastensors.quantize(x, s, **kw))
        row(label, t, None, cpu)
    for s, kw in (("nf4", {}), ("fp8_e4m3", {"granularity": "channel"}), ("int4", {})):
        qt = fastensors.quantize(x, s, **kw)
        t, cpu = ours_timed(lambda: qt.dequantize(out=reused))
        row(f"{s} dequantize (out=)", t, None, cpu)
    xb = x.astype(ml_dtypes.bfloat16)
    for s in ("q8_0", "int8", "int4", "nf4"):
        t, cpu = ours_timed(lambda: fastensors.quantize(xb, s))
        row(f"{s} from BF16", t, None, cpu)
    qd = fastensors.quantize(x, "q8_0").dequantize()
    t, cpu = ours_timed(lambda: fastensors.quality(x, qd))
    row("quality()", t, None, cpu)
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
