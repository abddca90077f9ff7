"""``fastensors demo``: build a small model in memory, save it, reopen it,
verify every byte, and print what happened with timings. No downloads."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Dict

import ml_dtypes
import numpy as np

from ..format.reader import safe_open
from ..numpy import save_file


def register(sub) -> None:
    p = sub.add_parser("demo", help="save, reopen and verify a small built-in model, with timings")
    p.set_defaults(func=lambda _args: run())


def sample_model(hidden: int = 256, layers: int = 4, vocab: int = 4096, seed: int = 0) -> Dict[str, np.ndarray]:
    """A small Llama-shaped state dict in BF16, with an F32 norm and an I64 buffer."""
    rng = np.random.default_rng(seed)
    bf16 = ml_dtypes.bfloat16

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(bf16)

    sd: Dict[str, np.ndarray] = {"model.embed_tokens.weight": w(vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{name}.weight"] = w(hidden, hidden)
        sd[p + "mlp.gate_proj.weight"] = w(4 * hidden, hidden)
        sd[p + "mlp.up_proj.weight"] = w(4 * hidden, hidden)
        sd[p + "mlp.down_proj.weight"] = w(hidden, 4 * hidden)
        sd[p + "input_layernorm.weight"] = np.ones(hidden, np.float32)
        sd[p + "post_attention_layernorm.weight"] = np.ones(hidden, np.float32)
    sd["model.norm.weight"] = np.ones(hidden, np.float32)
    sd["lm_head.weight"] = w(vocab, hidden)
    sd["model.rotary_emb.positions"] = np.arange(2048, dtype=np.int64)
    return sd


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def run(out=print) -> int:
    model = sample_model()
    total = sum(a.nbytes for a in model.values())
    with tempfile.TemporaryDirectory(prefix="fastensors-demo-") as tmp:
        path = os.path.join(tmp, "model.safetensors")
        t0 = time.perf_counter()
        save_file(model, path, metadata={"format": "pt", "source": "fastensors demo"})
        t_save = time.perf_counter() - t0

        t0 = time.perf_counter()
        with safe_open(path, framework="np") as f:
            loaded = f.get_tensors()
            meta = f.metadata()
            infos = {k: f.tensor_info(k) for k in f.keys()}
        t_open = time.perf_counter() - t0

        t0 = time.perf_counter()
        bad = [k for k, a in model.items() if loaded[k].dtype != a.dtype or loaded[k].shape != a.shape
               or loaded[k].tobytes() != a.tobytes()]
        t_verify = time.perf_counter() - t0
        size = os.path.getsize(path)
        quant = _quantize(path, tmp, model)

    out(f"fastensors demo: {len(model)} tensors, {_fmt_bytes(total)} of weights")
    out("")
    out(f"  {'tensor':<44} {'dtype':<5} {'shape':<14} {'bytes':>10}")
    for name in list(infos)[:6]:
        i = infos[name]
        out(f"  {name:<44} {i.dtype:<5} {str(list(i.shape)):<14} {_fmt_bytes(i.nbytes):>10}")
    if len(infos) > 6:
        out(f"  ... and {len(infos) - 6} more")
    out("")
    out(f"  {'step':<28} {'time':>10}")
    out(f"  {'save (atomic, fsynced)':<28} {t_save * 1e3:>8.1f} ms")
    out(f"  {'open + map every tensor':<28} {t_open * 1e3:>8.1f} ms")
    out(f"  {'verify every byte':<28} {t_verify * 1e3:>8.1f} ms")
    out("")
    out(f"  file size {_fmt_bytes(size)}, metadata {meta}")
    if bad:
        out(f"FAILED: {len(bad)} tensors differ after the round trip: {bad[:5]}")
        return 1
    out(f"OK: all {len(model)} tensors round-tripped byte for byte")
    out("")
    report, t_quant, t_dequant, mismatched = quant
    worst = min(report.quantized, key=lambda t: t.cosine)
    out(f"quantize_model -> int4 (group 128, compressed-tensors layout), {len(report.quantized)} linear weights "
        f"quantized, {len(report.dense)} tensors kept dense, in {t_quant * 1e3:.1f} ms")
    out(f"  {_fmt_bytes(report.bytes_in)} -> {_fmt_bytes(report.bytes_out)} "
        f"({report.compression_ratio:.2f}x smaller); worst cosine {worst.cosine:.4f} ({worst.name}), "
        f"worst SQNR {min(t.sqnr_db for t in report.quantized):.1f} dB")
    out(f"  dequantize_model back to BF16 in {t_dequant * 1e3:.1f} ms")
    if mismatched:
        out(f"FAILED: the dequantized model differs from the kernels' dequantization: {mismatched[:5]}")
        return 1
    out("OK: the dequantized model equals fastensors.dequantize of every quantized weight")
    return 0


def _quantize(path: str, tmp: str, model: Dict[str, np.ndarray]):
    """Quantize the saved model as a model directory, dequantize it back and
    check the result against the kernels."""
    import json

    from ..quant.dequantize_model import dequantize_model
    from ..quant.kernels import quantize
    from ..quant.quantize_model import quantize_model

    src = os.path.join(tmp, "model")
    os.makedirs(src)
    os.replace(path, os.path.join(src, "model.safetensors"))
    with open(os.path.join(src, "config.json"), "w") as fh:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
                   "num_hidden_layers": 4, "torch_dtype": "bfloat16"}, fh)
    t0 = time.perf_counter()
    report = quantize_model(src, os.path.join(tmp, "int4"), scheme="int4", group_size=128, validate=True)
    t_quant = time.perf_counter() - t0
    t0 = time.perf_counter()
    dequantize_model(os.path.join(tmp, "int4"), os.path.join(tmp, "bf16"), dtype="bf16")
    t_dequant = time.perf_counter() - t0
    mismatched = []
    with safe_open(os.path.join(tmp, "bf16", "model.safetensors"), framework="np") as f:
        for t in report.quantized:
            want = quantize(model[t.name], "int4", group_size=128).dequantize("BF16")
            if f.get_tensor(t.name).tobytes() != want.tobytes():
                mismatched.append(t.name)
    return report, t_quant, t_dequant, mismatched
