"""GGUF export and K-quants: fastensors against llama.cpp's own tools, in
the same run.

    python bench/bench_gguf.py                               # both parts, defaults below
    python bench/bench_gguf.py --part kquants --size 4096 --rounds 3
    python bench/bench_gguf.py --part export --layers 8 --hidden 2048

Part "kquants": one float32 matrix (--size x --size) quantized to each type
(q2_k..q6_k, q8_0, q4_0) by

  ours          fastensors.quantize (all threads)
  ggml-1        ggml's reference quantizer: ggml_quantize_chunk over the
                whole matrix in one call (libggml-base.so from llama-cpp-python,
                through ctypes, as tests/ggml_oracle.py), one thread
  ggml-N        the same function over row ranges split across N threads
                (a ThreadPool; ctypes releases the GIL), for a fair
                multi-thread figure

Every result's bytes are checked identical with ggml-1's. MB/s counts the
float32 input; the ratios are ours / peer (medians of --rounds).

Part "export": a synthetic Llama-shaped model (random float16 weights,
SentencePiece tokenizer, config vocab_size padded by both tools) written to
a scratch directory, then

  fastensors    export_gguf(recipe="q4_k_m") in a fresh process
  llama.cpp     convert_hf_to_gguf.py --outtype f16, then llama_model_quantize
                to Q4_K_M (all threads), each step a fresh process

Wall time includes each process's interpreter start and imports (these are
the commands a user runs); peak RSS is each process's VmHWM, read by the
process itself at exit, the pipeline's the larger of its two steps. The tensors of the
two Q4_K_M files are compared byte for byte. The source files are read
into the page cache before each step, or with --cold evicted from it
(posix_fadvise DONTNEED); the cached fraction is recorded. --llama-cpp-src (default
$FASTENSORS_LLAMA_CPP_SRC) names the llama.cpp source tree holding the
converter. Results go to stdout as markdown and to
bench/results/bench_gguf-<time>.json."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.pool import ThreadPool

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import common  # noqa: E402

TYPES = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0", "q4_0")
MB = 1e6


# -- part 1: quantization kernels -------------------------------------------------------

def _median_time(fn, rounds: int) -> float:
    fn()  # warm-up (page faults of the output, thread start-up)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ggml_threaded(g, scheme: str, x: np.ndarray, pool: ThreadPool, n: int) -> np.ndarray:
    """ggml_quantize_chunk over ``n`` row ranges in parallel: the same bytes
    as one call (rows are independent)."""
    rows, cols = x.shape
    out = np.zeros((rows, g.row_size(scheme, cols)), np.uint8)
    step = -(-rows // n)
    lib, code = g._lib, __import__("ggml_oracle").GGML_TYPE[scheme]

    def part(r0):
        nrows = min(step, rows - r0)
        # start is an element index; ggml offsets dst by start / cols rows
        lib.ggml_quantize_chunk(code, x.ctypes.data, out.ctypes.data, r0 * cols, nrows, cols, None)

    pool.map(part, range(0, rows, step))
    return out


def bench_kquants(args) -> list:
    import fastensors
    import ggml_oracle

    g = ggml_oracle.load()
    if g is None:
        raise SystemExit("part kquants needs llama-cpp-python (its libggml-base) as the reference")
    n = args.threads or os.cpu_count()
    x = np.random.default_rng(0).standard_normal((args.size, args.size), dtype=np.float32)
    mb = x.nbytes / MB
    rows = []
    with ThreadPool(n) as pool:
        for scheme in TYPES:
            ref = g.quantize(scheme, x)
            ours = np.asarray(fastensors.quantize(x, scheme).data).reshape(ref.shape)
            threaded = ggml_threaded(g, scheme, x, pool, n)
            identical = bool(np.array_equal(ours, ref) and np.array_equal(threaded, ref))
            t_ours = _median_time(lambda: fastensors.quantize(x, scheme), args.rounds)
            t_g1 = _median_time(lambda: g.quantize(scheme, x), args.rounds)
            t_gn = _median_time(lambda: ggml_threaded(g, scheme, x, pool, n), args.rounds)
            row = {"type": scheme, "identical": identical, "ours_s": t_ours, "ggml1_s": t_g1, "ggmlN_s": t_gn,
                   "ours_MBps": mb / t_ours, "ggml1_MBps": mb / t_g1, "ggmlN_MBps": mb / t_gn,
                   "vs_ggml1": t_g1 / t_ours, "vs_ggmlN": t_gn / t_ours}
            common_log(f"{scheme}: ours {row['ours_MBps']:.0f} MB/s, ggml-1 {row['ggml1_MBps']:.0f}, "
                       f"ggml-{n} {row['ggmlN_MBps']:.0f}, identical {identical}")
            rows.append(row)
    return rows


# -- part 2: whole-model export ---------------------------------------------------------

def _sentencepiece(path: str) -> int:
    import sentencepiece as spm

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(3000)]
    lines = [" ".join(rng.choice(words) for _ in range(16)) for _ in range(20000)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf, vocab_size=2000,
                                   model_type="bpe", byte_fallback=True, minloglevel=2)
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())
    return 2000


def build_model(d: str, args) -> int:
    """A Llama-shaped model directory with random float16 weights: its bytes."""
    from fastensors.numpy import save_file

    os.makedirs(d, exist_ok=True)
    _sentencepiece(os.path.join(d, "tokenizer.model"))
    h, ff, v, heads, kv = args.hidden, args.intermediate, args.vocab, args.hidden // 64, max(1, args.hidden // 256)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
           "intermediate_size": ff, "num_hidden_layers": args.layers, "num_attention_heads": heads,
           "num_key_value_heads": kv, "vocab_size": v, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
           "torch_dtype": "float16", "hidden_act": "silu"}
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    # one shard per few layers, so no process needs the whole model at once to build it
    total, shard, sd = 0, 0, {"model.embed_tokens.weight": w(v, h), "lm_head.weight": w(v, h),
                              "model.norm.weight": np.ones(h, np.float16)}
    names = {}
    for i in range(args.layers):
        p = f"model.layers.{i}."
        sd.update({p + "self_attn.q_proj.weight": w(h, h), p + "self_attn.k_proj.weight": w(kv * 64, h),
                   p + "self_attn.v_proj.weight": w(kv * 64, h), p + "self_attn.o_proj.weight": w(h, h),
                   p + "mlp.gate_proj.weight": w(ff, h), p + "mlp.up_proj.weight": w(ff, h),
                   p + "mlp.down_proj.weight": w(h, ff), p + "input_layernorm.weight": np.ones(h, np.float16),
                   p + "post_attention_layernorm.weight": np.ones(h, np.float16)})
        if i % 4 == 3 or i == args.layers - 1:
            shard += 1
            fname = f"model-{shard:05d}.safetensors"
            save_file(sd, os.path.join(d, fname))
            total += sum(a.nbytes for a in sd.values())
            names.update({k: fname for k in sd})
            sd = {}
    # the shard names in the index (both tools read sharded checkpoints this way)
    renamed = {}
    for i in range(1, shard + 1):
        old, new = f"model-{i:05d}.safetensors", f"model-{i:05d}-of-{shard:05d}.safetensors"
        os.rename(os.path.join(d, old), os.path.join(d, new))
        renamed[old] = new
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": {k: renamed[f] for k, f in names.items()}}, fh)
    return total


# Runs a script (or -c code) in this fresh interpreter and writes its own
# VmHWM at exit. ru_maxrss from wait4 would not do: Linux carries the
# parent's resident set into a forked child's maximum.
RUNNER = r"""
import atexit, json, os, runpy, sys
out = sys.argv[1]
def report():
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        json.dump({"peak_rss_kib": hwm}, f)
atexit.register(report)
if sys.argv[2] == "-c":
    code, sys.argv = sys.argv[3], ["-c", *sys.argv[4:]]
    exec(compile(code, "<bench>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = sys.argv[2:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as python SCRIPT does
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _run(cmd, env=None) -> dict:
    """Wall seconds and peak RSS (MiB) of one process: ``cmd`` is a script
    path or "-c", code, then its arguments."""
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", RUNNER, tmp.name, *cmd], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"{cmd[:2]} failed (exit {proc.returncode}):\n"
                             f"{proc.stderr.decode(errors='replace')[-3000:]}")
        with open(tmp.name) as fh:
            peak = json.load(fh)["peak_rss_kib"]
    return {"seconds": seconds, "peak_rss_mib": peak / 1024}


OURS = "import sys; from fastensors.gguf import export_gguf; export_gguf(sys.argv[1], sys.argv[2], recipe='q4_k_m')"
QUANTIZE = r"""
import sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
p.nthread = int(sys.argv[3])
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))
"""


def _tensor_bytes(path: str) -> dict:
    import gguf

    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, bytes(r.data[t.data_offset:t.data_offset + t.n_bytes])) for t in r.tensors}


def _drop(path: str) -> float:
    """Evict ``path`` from the page cache; returns the fraction still cached."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return common.cached_fraction(path)


def bench_export(args) -> dict:
    src = args.llama_cpp_src
    if not src or not os.path.isfile(os.path.join(src, "convert_hf_to_gguf.py")):
        raise SystemExit("part export needs --llama-cpp-src (or FASTENSORS_LLAMA_CPP_SRC): a llama.cpp source tree")
    work = tempfile.mkdtemp(prefix="bench_gguf-", dir=args.dir)
    try:
        model = os.path.join(work, "hf")
        t0 = time.perf_counter()
        nbytes = build_model(model, args)
        common_log(f"model: {nbytes / 1e9:.2f} GB of float16 in {time.perf_counter() - t0:.0f} s")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        n = args.threads or os.cpu_count()
        runs = {"ours": [], "convert": [], "quantize": []}
        for r in range(args.export_rounds):
            ours, f16, q = (os.path.join(work, f) for f in ("ours.gguf", "f16.gguf", "theirs.gguf"))
            for f in (ours, f16, q):
                if os.path.exists(f):
                    os.unlink(f)
            # alternate which goes first, so neither always meets the other's dirty pages
            order = ["ours", "theirs"] if r % 2 == 0 else ["theirs", "ours"]
            for who in order:
                # the same page-cache state for both: all cached, or (--cold) none
                shards = [os.path.join(model, f) for f in os.listdir(model) if f.endswith(".safetensors")]
                cached = min(_drop(f) if args.cold else common.warm_file(f) for f in shards)
                runs.setdefault("cached", []).append({"who": who, "fraction": cached})
                if who == "ours":
                    runs["ours"].append(_run(["-c", OURS, model, ours], env))
                else:
                    runs["convert"].append(_run([os.path.join(src, "convert_hf_to_gguf.py"), model,
                                                 "--outtype", "f16", "--outfile", f16], env))
                    runs["quantize"].append(_run(["-c", QUANTIZE, f16, q, str(n)], env))
                common_log(f"round {r}: {who} done")
        a, b = _tensor_bytes(ours), _tensor_bytes(q)
        identical = sorted(a) == sorted(b) and all(a[k] == b[k] for k in a)
        steps = {k: v for k, v in runs.items() if k != "cached"}
        med = {k: statistics.median(x["seconds"] for x in v) for k, v in steps.items()}
        rss = {k: max(x["peak_rss_mib"] for x in v) for k, v in steps.items()}
        pipeline_s = med["convert"] + med["quantize"]
        pipeline_rss = max(rss["convert"], rss["quantize"])
        return {"model_bytes": nbytes, "layers": args.layers, "hidden": args.hidden, "intermediate": args.intermediate,
                "vocab": args.vocab, "runs": runs, "median_s": med, "peak_rss_mib": rss,
                "pipeline_s": pipeline_s, "pipeline_rss_mib": pipeline_rss,
                "speedup": pipeline_s / med["ours"], "rss_ratio": rss["ours"] / pipeline_rss,
                "size_ours": os.path.getsize(ours), "size_f16": os.path.getsize(f16), "size_theirs": os.path.getsize(q),
                "identical_tensors": identical, "types": sorted({t for t, _ in a.values()})}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def common_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("all", "kquants", "export"), default="all")
    ap.add_argument("--size", type=int, default=4096, help="kquants: the matrix is SIZE x SIZE float32")
    ap.add_argument("--rounds", type=int, default=3, help="kquants: timed rounds per type (median)")
    ap.add_argument("--threads", type=int, default=0, help="threads for ggml-N and llama_model_quantize (0: all)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--cold", action="store_true", help="export: evict the source from the page cache before "
                    "each step (default: read it into the cache)")
    ap.add_argument("--export-rounds", type=int, default=1, help="export: rounds of both tools (median)")
    ap.add_argument("--llama-cpp-src", default=os.environ.get("FASTENSORS_LLAMA_CPP_SRC"))
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="scratch directory for the export part")
    args = ap.parse_args()
    if args.size % 256:
        ap.error("--size must be a multiple of 256 (the K-quant block)")
    if args.hidden % 256 or args.intermediate % 256:
        ap.error("--hidden and --intermediate must be multiples of 256")

    out = {"machine": common.machine_info(args.dir), "args": vars(args), "loadavg_start": common.loadavg()}
    n = args.threads or os.cpu_count()
    if args.part in ("all", "kquants"):
        rows = out["kquants"] = bench_kquants(args)
        print(f"\nK-quants: {args.size}x{args.size} float32 ({args.size * args.size * 4 / MB:.0f} MB), "
              f"median of {args.rounds}, {n} threads\n")
        print(common.markdown_table(
            ["type", "ours MB/s", "ggml-1 MB/s", f"ggml-{n} MB/s", "ours/ggml-1", f"ours/ggml-{n}", "identical"],
            [[r["type"], round(r["ours_MBps"]), round(r["ggml1_MBps"]), round(r["ggmlN_MBps"]),
              f"{r['vs_ggml1']:.1f}x", f"{r['vs_ggmlN']:.1f}x", "yes" if r["identical"] else "NO"] for r in rows]))
    if args.part in ("all", "export"):
        e = out["export"] = bench_export(args)
        print(f"\nExport to Q4_K_M ({'cold' if args.cold else 'warm'} page cache): Llama {e['layers']} layers, hidden {e['hidden']}, intermediate "
              f"{e['intermediate']}, vocab {e['vocab']}: {e['model_bytes'] / 1e9:.2f} GB float16\n")
        m, r = e["median_s"], e["peak_rss_mib"]
        print(common.markdown_table(
            ["step", "wall s", "peak RSS MiB", "output MB"],
            [["fastensors export_gguf q4_k_m", f"{m['ours']:.1f}", round(r["ours"]), round(e["size_ours"] / MB)],
             ["convert_hf_to_gguf.py --outtype f16", f"{m['convert']:.1f}", round(r["convert"]),
              round(e["size_f16"] / MB)],
             ["llama_model_quantize Q4_K_M", f"{m['quantize']:.1f}", round(r["quantize"]),
              round(e["size_theirs"] / MB)],
             ["llama.cpp pipeline (sum / max)", f"{e['pipeline_s']:.1f}", round(e["pipeline_rss_mib"]), "—"]]))
        print(f"\nend to end: {e['speedup']:.1f}x faster, peak RSS {e['rss_ratio']:.2f}x; "
              f"tensor bytes identical: {'yes' if e['identical_tensors'] else 'NO'} ({', '.join(e['types'])})")
    out["loadavg_end"] = common.loadavg()
    print(f"\nload average: start {out['loadavg_start']}, end {out['loadavg_end']}")
    print("results:", common.write_json(time.strftime("bench_gguf-%Y%m%d-%H%M%S.json"), out))


if __name__ == "__main__":
    main()
