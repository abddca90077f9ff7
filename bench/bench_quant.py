"""Quantization kernels against their references, in the same process.

fastensors.quantize / dequantize vs gguf.quants.quantize / dequantize (GGML
types) and a PyTorch eager int8 per-channel quantizer, on a 4096x4096 F32
matrix. Reports medians of --runs interleaved rounds, input GB/s and the
fraction of a memcpy of the input (numpy copy into a preallocated buffer).

    python bench/bench_quant.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

import fastensors


def timed(fn, runs):
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
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
    print(f"# {n}x{n} F32 ({nbytes / 1e6:.0f} MB), cores={os.cpu_count()}, load={os.getloadavg()[0]:.2f}")
    dst = np.empty_like(x)
    t_copy, _ = timed(lambda: np.copyto(dst, x), args.runs)
    print(f"memcpy bound: {t_copy * 1e3:.1f} ms ({nbytes / t_copy / 1e9:.1f} GB/s)")
    print("| scheme | fastensors ms | peer ms | speedup | input GB/s | % of memcpy |")
    print("|---|---|---|---|---|---|")

    def row(name, ours, peer):
        gbs = nbytes / ours / 1e9
        pct = t_copy / ours * 100
        peer_s = f"{peer * 1e3:.0f}" if peer else "-"
        sp = f"{peer / ours:.1f}x" if peer else "-"
        print(f"| {name} | {ours * 1e3:.1f} | {peer_s} | {sp} | {gbs:.2f} | {pct:.0f}% |", flush=True)

    try:
        import gguf.quants as gq
        from gguf import GGMLQuantizationType as T
    except ImportError:
        gq = None
    for s in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1"):
        ours, _ = timed(lambda: fastensors.quantize(x, s), args.runs)
        peer = timed(lambda: gq.quantize(x, getattr(T, s.upper())), args.ref_runs)[0] if gq else None
        row(f"{s} quantize", ours, peer)
        qt = fastensors.quantize(x, s)
        ours, _ = timed(lambda: qt.dequantize(), args.runs)
        peer = timed(lambda: gq.dequantize(qt.data, getattr(T, s.upper())), args.ref_runs)[0] if gq else None
        row(f"{s} dequantize", ours, peer)

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
    row("int8 (per channel)", timed(lambda: fastensors.quantize(x, "int8"), args.runs)[0], peer_int8)
    for s, kw in (("int4", {}), ("int2", {}), ("nf4", {}), ("fp8_e4m3", {"granularity": "channel"}),
                  ("fp8_e4m3", {"granularity": "block"})):
        label = s + (f" ({kw['granularity']})" if kw else "")
        row(label, timed(lambda: fastensors.quantize(x, s, **kw), args.runs)[0], None)
    qd = fastensors.quantize(x, "q8_0").dequantize()
    row("quality()", timed(lambda: fastensors.quality(x, qd), args.runs)[0], None)
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
