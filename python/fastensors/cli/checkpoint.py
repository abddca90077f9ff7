"""The checkpoint subcommands of the ``fastensors`` CLI: shard, merge,
convert-bin."""

from __future__ import annotations

import argparse
import os
import sys
import time


def register(sub) -> None:
    p = sub.add_parser("shard", help="rewrite a checkpoint as shards with an index (Hugging Face layout)",
                       description="Rewrite SRC (a .safetensors file, a model directory or an index JSON) as"
                       " shards of at most --max-shard-size in the directory DST, with"
                       " model.safetensors.index.json. Other files of a model directory (config.json,"
                       " tokenizer files, ...) are copied along. Tensor bytes stream from the source mapping.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--max-shard-size", default="5GB", help="decimal units: 5GB, 500MB, or bytes (default 5GB)")
    _durability(p)
    p.set_defaults(func=_shard)

    p = sub.add_parser("merge", help="write every tensor of a checkpoint into one .safetensors file",
                       description="Write every tensor of SRC (a sharded checkpoint's directory or index, or a"
                       " file) into the single file DST_FILE.")
    p.add_argument("src")
    p.add_argument("dst_file")
    _durability(p)
    p.set_defaults(func=_merge)

    p = sub.add_parser("convert-bin", help="convert PyTorch .bin weights to safetensors without running pickle code",
                       description="Convert SRC (pytorch_model.bin, a pytorch_model.bin.index.json or a model"
                       " directory) to safetensors in DST (a directory, or a .safetensors path for a single .bin)."
                       " Files are read with torch's weights-only unpickler; a file that would run code is refused.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--no-verify", action="store_true", help="skip reading every tensor back after writing")
    _durability(p)
    p.set_defaults(func=_convert_bin)


def _durability(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-fsync", action="store_true",
                   help="skip fsync (the commit stays atomic but may not survive a power loss)")


def _durable(args) -> "bool | None":
    return False if args.no_fsync else None


def _report(what: str, t0: float) -> None:
    print(f"{what} in {time.perf_counter() - t0:.2f}s", file=sys.stderr)


def _shard(args) -> int:
    from ..checkpoint.sharding import reshard

    t0 = time.perf_counter()
    plan = reshard(args.src, args.dst, max_shard_size=args.max_shard_size, durable=_durable(args))
    for fname, names in plan.filename_to_tensors.items():
        print(f"{fname}\t{len(names)} tensors")
    if plan.index_file:
        print(plan.index_file)
    _report(f"wrote {len(plan.filename_to_tensors)} file(s), {plan.total_size} bytes of tensors, to {args.dst}", t0)
    return 0


def _merge(args) -> int:
    from ..checkpoint.sharding import merge

    t0 = time.perf_counter()
    out = merge(args.src, args.dst_file, durable=_durable(args))
    _report(f"wrote {out} ({os.path.getsize(out)} bytes)", t0)
    return 0


def _convert_bin(args) -> int:
    from ..torch import convert_pytorch_to_safetensors

    t0 = time.perf_counter()
    written = convert_pytorch_to_safetensors(args.src, args.dst, durable=_durable(args), verify=not args.no_verify)
    for path in written:
        print(path)
    _report(f"converted {len(written)} file(s)", t0)
    return 0
