"""Whole-model quantization: fastensors.quantize_model against a
straightforward PyTorch pipeline, BF16 Llama-shaped model -> int4 group 128
(symmetric, compressed-tensors pack-quantized layout).

The peer: safetensors' ``load_file``, per-tensor torch quantization with
compressed-tensors' formulas (scale = max(|min|, |max|) / 7.5 in the input
dtype, q = round(clamp(w / scale, -8, 7))), its ``pack_to_int32``, and
safetensors' ``save_file``. Each pipeline runs in its own subprocess, which
reports its wall time, its peak RSS (``VmHWM``: unlike ``ru_maxrss`` it is
not inherited across exec from the launching process) and its RSS after
imports.
fastensors runs with durable=False (like for like: save_file does not
fsync) and durable=True. The model is generated once (--size-mib, default
1024) and kept in the page cache by a warm-up read before each run.

    python bench/bench_model_quant.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
HIDDEN, INTER, VOCAB = 2048, 5632, 32000


def generate(path: str, size_mib: int) -> None:
    import ml_dtypes
    import numpy as np

    from fastensors.numpy import save_file

    per_layer = (4 * HIDDEN * HIDDEN + 3 * HIDDEN * INTER + 2 * HIDDEN) * 2
    fixed = (2 * VOCAB * HIDDEN + HIDDEN) * 2
    layers = max(1, round((size_mib * (1 << 20) - fixed) / per_layer))
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(ml_dtypes.bfloat16)

    sd = {"model.embed_tokens.weight": w(VOCAB, HIDDEN), "lm_head.weight": w(VOCAB, HIDDEN),
          "model.norm.weight": np.ones(HIDDEN, ml_dtypes.bfloat16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in ("q", "k", "v", "o"):
            sd[p + f"self_attn.{n}_proj.weight"] = w(HIDDEN, HIDDEN)
        sd[p + "mlp.gate_proj.weight"] = w(INTER, HIDDEN)
        sd[p + "mlp.up_proj.weight"] = w(INTER, HIDDEN)
        sd[p + "mlp.down_proj.weight"] = w(HIDDEN, INTER)
        sd[p + "input_layernorm.weight"] = np.ones(HIDDEN, ml_dtypes.bfloat16)
        sd[p + "post_attention_layernorm.weight"] = np.ones(HIDDEN, ml_dtypes.bfloat16)
    os.makedirs(path, exist_ok=True)
    save_file(sd, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": HIDDEN,
           "intermediate_size": INTER, "num_hidden_layers": layers, "vocab_size": VOCAB,
           "num_attention_heads": 16, "num_key_value_heads": 16, "torch_dtype": "bfloat16",
           "tie_word_embeddings": False}
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(cfg, fh)


def _selected(name: str, shape) -> bool:
    return (name.endswith(".weight") and len(shape) == 2 and "embed" not in name and "norm" not in name
            and "lm_head" not in name)


def run_torch(src: str, dst: str) -> None:
    import torch
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from safetensors.torch import load_file, save_file

    sd = load_file(os.path.join(src, "model.safetensors"))
    out = {}
    for name, w in sd.items():
        if not _selected(name, w.shape):
            out[name] = w
            continue
        rows, cols = w.shape
        g = w.reshape(rows, cols // 128, 128)
        lo = torch.clamp(g.amin(dim=-1), max=0)
        hi = torch.clamp(g.amax(dim=-1), min=0)
        scale = torch.maximum(lo.abs(), hi) / 7.5
        scale = torch.where(scale == 0, torch.finfo(w.dtype).eps, scale)
        q = torch.round(torch.clamp(g / scale.unsqueeze(-1), -8, 7)).to(torch.int8).reshape(rows, cols)
        module = name[: -len(".weight")]
        out[module + ".weight_packed"] = pack_to_int32(q, 4)
        out[module + ".weight_scale"] = scale
        out[module + ".weight_shape"] = torch.tensor([rows, cols])
    os.makedirs(dst, exist_ok=True)
    save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


def run_ours(src: str, dst: str, durable: bool) -> None:
    import fastensors

    fastensors.quantize_model(src, dst, scheme="int4", group_size=128, durable=durable)


def _hwm_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, src: str, dst: str) -> None:
    if kind == "torch":
        import torch  # noqa: F401  (imports count in the baseline, not in the run)
        import safetensors.torch  # noqa: F401
        from compressed_tensors.compressors.pack_quantized import helpers  # noqa: F401
    else:
        import fastensors  # noqa: F401
    base = _hwm_mib()
    t0 = time.perf_counter()
    if kind == "torch":
        run_torch(src, dst)
    else:
        run_ours(src, dst, durable=(kind == "fastensors-durable"))
    wall = time.perf_counter() - t0
    print(json.dumps({"kind": kind, "wall_s": wall, "peak_rss_mib": _hwm_mib(), "rss_after_imports_mib": base}))


def measure(kind: str, src: str, work: str) -> dict:
    import shutil

    dst = os.path.join(work, f"out-{kind}")
    shutil.rmtree(dst, ignore_errors=True)
    with open(os.path.join(src, "model.safetensors"), "rb") as fh:  # page cache warm for every run
        while fh.read(64 << 20):
            pass
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", kind, src, dst],
                         capture_output=True, text=True, check=True)
    shutil.rmtree(dst, ignore_errors=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    work = args.dir or tempfile.mkdtemp(prefix="fastensors-bench-mq-")
    src = os.path.join(work, "model")
    if not os.path.isfile(os.path.join(src, "model.safetensors")):  # in a child: keeps this process small
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {HERE!r}); import bench_model_quant as b; "
                        f"b.generate({src!r}, {args.size_mib})"], check=True)
    size = os.path.getsize(os.path.join(src, "model.safetensors"))
    print(f"model: {size / (1 << 20):.0f} MiB BF16, {os.cpu_count()} CPUs")
    kinds = ["torch", "fastensors", "fastensors-durable"]
    results = {k: [] for k in kinds}
    for _ in range(args.runs):
        for k in kinds:
            results[k].append(measure(k, src, work))
    med = {}
    for k in kinds:
        walls = sorted(r["wall_s"] for r in results[k])
        peaks = sorted(r["peak_rss_mib"] for r in results[k])
        med[k] = {"wall_s": walls[len(walls) // 2], "peak_rss_mib": peaks[len(peaks) // 2],
                  "rss_after_imports_mib": results[k][0]["rss_after_imports_mib"]}
    t = med["torch"]
    print("| pipeline | wall s (median) | peak RSS MiB | RSS after imports MiB | speed-up | RSS ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in kinds:
        m = med[k]
        print(f"| {k} | {m['wall_s']:.2f} | {m['peak_rss_mib']:.0f} | {m['rss_after_imports_mib']:.0f} | "
              f"{t['wall_s'] / m['wall_s']:.1f}x | {m['peak_rss_mib'] / t['peak_rss_mib']:.2f} |")


if __name__ == "__main__":
    main()
