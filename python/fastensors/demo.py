"""``fastensors demo``: build a small model in memory, save it, reopen it,
verify every byte, and print what happened with timings. No downloads."""

from __future__ import annotations

import os
import tempfile
import time
from typing import Dict

import ml_dtypes
import numpy as np

from ._open import safe_open
from .numpy import save_file


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
    return 0
