"""The quantization subcommands of the ``fastensors`` CLI: quantize,
dequantize."""

from __future__ import annotations

import sys
import time


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize the linear layers of a model (safetensors, gguf or parquet output)",
                       description="Quantize the 2-D weights of the linear layers of SRC (a model directory, an "
                       "index or a .safetensors file) into the directory DST; embeddings, norms, biases and lm_head "
                       "stay dense. config.json and the other files are carried over; the output is committed as "
                       "one set. See docs/model_quantization.md.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--scheme", help="int8, int4, int2, fp8_e4m3, nf4 (safetensors/parquet); q8_0, q4_0, q4_1, "
                   "q5_0, q5_1 (gguf/parquet)")
    p.add_argument("--profile", choices=("cloud", "local", "edge"),
                   help="cloud: int8 per channel; local: int4 group 128; edge: int4 group 32, or with --min-cosine "
                   "the most aggressive scheme that meets it")
    p.add_argument("--group-size", type=int)
    sym = p.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="symmetric", action="store_true", default=None)
    sym.add_argument("--asymmetric", dest="symmetric", action="store_false")
    p.add_argument("--format", default="safetensors", choices=("safetensors", "gguf", "parquet"),
                   help="gguf: a file llama.cpp loads (DST: a .gguf path, or a directory that gets model.gguf; "
                   "docs/gguf.md)")
    p.add_argument("--recipe", help="gguf: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, or a llama-quantize mix "
                   "(q4_k_m, ...) where available; default: --scheme, else q8_0")
    p.add_argument("--imatrix", metavar="FILE",
                   help="gguf: a llama.cpp importance matrix (llama-imatrix's GGUF or legacy .dat file); the "
                   "quantized tensors it names are quantized as llama-quantize --imatrix does")
    p.add_argument("--hf-names", action="store_true",
                   help="gguf: the older layout with Hugging Face tensor names, read back by fastensors only "
                   "(llama.cpp cannot load it); takes the quantize options above")
    p.add_argument("--ignore", metavar="REGEX", action="append", default=[],
                   help="keep tensors whose name matches dense (repeatable)")
    p.add_argument("--only", metavar="REGEX", help="quantize only the 2-D weights whose name matches")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--validate", action="store_true", help="measure cosine, SQNR, RMSE, max abs error per tensor")
    p.add_argument("--min-cosine", type=float, help="fail (writing nothing) when a tensor's cosine is below this")
    p.add_argument("--report", metavar="FILE", help="write the report: .json, .html or .png")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="keep tensors whose shape the scheme cannot take dense, with a warning")
    p.add_argument("--overwrite", action="store_true", help="replace the model in a non-empty DST")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-fsync", action="store_true",
                   help="skip fsync (the commit stays atomic but may not survive a power loss)")
    p.set_defaults(func=_quantize)

    p = sub.add_parser("dequantize", help="turn a quantized model back into a dense safetensors checkpoint",
                       description="Write the dense checkpoint of SRC (a quantize output: compressed-tensors or NF4 "
                       "safetensors, model.gguf or model.parquet) into the directory DST.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--dtype", help="dtype of the dequantized weights: bf16, f16, f32 (default: the source's)")
    p.add_argument("--max-shard-size", default="5GB")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-fsync", action="store_true")
    p.set_defaults(func=_dequantize)


def _quantize(args) -> int:
    import warnings

    from .._util.progress import Progress, format_bytes
    from ..quant.quantize_model import quantize_model

    if args.format == "gguf" and not args.hf_names:
        return _export_gguf(args)
    if args.recipe is not None:
        raise ValueError("--recipe applies to --format gguf (without --hf-names)")
    if args.imatrix is not None:
        raise ValueError("--imatrix applies to --format gguf (without --hf-names)")
    if args.scheme is None and args.profile is None:
        raise ValueError("give --scheme or --profile")
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, "quantize")
        bar.update_to(done)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rep = quantize_model(args.src, args.dst, scheme=args.scheme, group_size=args.group_size,
                                 symmetric=args.symmetric, profile=args.profile, format=args.format,
                                 ignore=args.ignore, only=args.only, max_shard_size=args.max_shard_size,
                                 validate=args.validate, min_cosine=args.min_cosine, report=args.report,
                                 skip_unsupported=args.skip_unsupported, overwrite=args.overwrite,
                                 progress=None if args.no_progress else progress,
                                 durable=False if args.no_fsync else None)
        finally:
            if bar is not None:
                bar.close()
    for w in caught:
        print(f"fastensors quantize: warning: {w.message}", file=sys.stderr)
    s = rep.summary()
    print(f"{rep.scheme}{'' if rep.group_size is None else f' group {rep.group_size}'}: quantized "
          f"{s['quantized']} tensors, kept {s['dense']} dense; {format_bytes(rep.bytes_in)} -> "
          f"{format_bytes(rep.bytes_out)} ({rep.compression_ratio:.2f}x) in {rep.seconds:.2f} s")
    if s["min_cosine"] is not None:
        print(f"min cosine {s['min_cosine']:.6f}, mean SQNR {s['mean_sqnr_db'] or float('nan'):.2f} dB, "
              f"worst: {', '.join(s['worst'])}")
    if rep.candidates:
        print("edge candidates (worst cosine): " + ", ".join(f"{k} {v:.6f}" for k, v in rep.candidates.items()))
    if args.report:
        print(f"report: {args.report}")
    return 0


def _export_gguf(args) -> int:
    """quantize --format gguf: llama.cpp's layout through fastensors.gguf."""
    import os

    from .._util.progress import Progress, format_bytes
    from ..gguf import export_gguf
    from ..quant.quantize_model import GGUF_FILE, GGUF_PROFILES

    ignored = [f"--{n.replace('_', '-')}" for n in ("group_size", "symmetric", "only", "min_cosine", "report")
               if getattr(args, n) not in (None, False)] + (["--ignore"] if args.ignore else [])
    if ignored or args.validate or args.skip_unsupported:
        raise ValueError(f"{', '.join(ignored + (['--validate'] if args.validate else []))} do not apply to the "
                         "llama.cpp GGUF export (see --recipe, or --hf-names for the older layout)")
    if args.recipe and args.scheme and args.recipe != args.scheme:
        raise ValueError("give --recipe or --scheme, not both")
    recipe = args.recipe or args.scheme or (GGUF_PROFILES[args.profile] if args.profile else "q8_0")
    dst = args.dst
    if not dst.endswith(".gguf"):
        os.makedirs(dst, exist_ok=True)
        dst = os.path.join(dst, GGUF_FILE)
    if os.path.exists(dst) and not args.overwrite:
        raise ValueError(f"{dst!r} exists; pass --overwrite to replace it")
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = Progress(total, "gguf")
        bar.update_to(done)

    try:
        rep = export_gguf(args.src, dst, recipe=recipe, imatrix=args.imatrix,
                          progress=None if args.no_progress else progress)
    finally:
        if bar is not None:
            bar.close()
    counts = ", ".join(f"{n} {t}" for t, n in sorted(rep.types().items()))
    weighted = f", {rep.weighted} with the importance matrix" if args.imatrix else ""
    print(f"{rep.hf_class} -> {rep.architecture} GGUF ({recipe}): {len(rep.tensors)} tensors ({counts}{weighted}), "
          f"{rep.n_tokens} tokens ({rep.tokenizer}/{rep.pre_tokenizer}); {format_bytes(rep.bytes_in)} -> "
          f"{format_bytes(rep.bytes_out)} in {rep.seconds:.2f} s")
    print(rep.path)
    return 0


def _gguf_export_in(src: str):
    """The GGUF file at (or in) ``src`` if the llama.cpp exporter wrote it."""
    import os

    from ..gguf import is_export

    path = src
    if os.path.isdir(src):
        found = [f for f in sorted(os.listdir(src)) if f.endswith(".gguf")]
        if len(found) != 1:
            return None
        path = os.path.join(src, found[0])
    return path if path.endswith(".gguf") and os.path.isfile(path) and is_export(path) else None


def _dequantize(args) -> int:
    from ..quant.dequantize_model import dequantize_model

    t0 = time.perf_counter()
    exported = _gguf_export_in(args.src)
    if exported is not None:  # llama.cpp names inside: the exporter's reader restores the checkpoint's
        from ..gguf import dequantize_gguf

        files = dequantize_gguf(exported, args.dst, dtype=args.dtype, max_shard_size=args.max_shard_size,
                                overwrite=args.overwrite, durable=False if args.no_fsync else None)
    else:
        files = dequantize_model(args.src, args.dst, dtype=args.dtype, max_shard_size=args.max_shard_size,
                                 overwrite=args.overwrite, durable=False if args.no_fsync else None)
    for f in files:
        print(f)
    print(f"wrote {len(files)} file(s) to {args.dst} in {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    return 0
