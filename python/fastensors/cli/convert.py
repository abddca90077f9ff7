"""``fastensors convert``: float tensors of a file or sharded checkpoint to another dtype."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert the float tensors of a file (or sharded checkpoint directory) to another dtype",
        description="Convert float tensors to DTYPE, bit-exact with ml_dtypes (docs/dtypes.md). Integer, "
        "BOOL and complex tensors are copied unchanged; metadata is kept; output is written atomically, "
        "tensor by tensor, so memory stays small whatever the model size. SRC may be a directory with a "
        "*.safetensors.index.json: every shard is converted into the directory DST, the index's "
        "total_size is rewritten and the other files are copied.",
    )
    p.add_argument("src", metavar="SRC", help="a .safetensors file or a sharded checkpoint directory")
    p.add_argument("dst", metavar="DST", help="the output file (or directory, for a directory SRC)")
    p.add_argument("--dtype", required=True,
                   help="target dtype: bf16, f16, f32, f64, fp8_e4m3, fp8_e5m2, ... or a code like BF16")
    p.add_argument("--only", metavar="REGEX", help="convert only tensors whose name matches REGEX")
    p.add_argument("--keep", metavar="REGEX", help="leave tensors whose name matches REGEX unchanged")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-fsync", action="store_true",
                   help="skip the fsyncs (the rename stays atomic; FASTENSORS_DURABLE=0 does the same)")
    p.set_defaults(func=_run_convert)


def _run_convert(args) -> int:
    import time

    from ..checkpoint import convert_file
    from ..errors import SafetensorError
    from .._util.progress import format_bytes

    start = time.perf_counter()
    try:
        report = convert_file(
            args.src, args.dst, args.dtype, only=args.only, keep=args.keep,
            progress=not args.no_progress,
            durable=False if args.no_fsync else None,
        )
    except (SafetensorError, OSError) as e:
        print(f"fastensors convert: error: {e}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    print(
        f"converted {len(report.converted)} tensors to {report.dtype}, kept {len(report.kept)} unchanged; "
        f"{format_bytes(report.bytes_in)} -> {format_bytes(report.bytes_out)} of tensor data "
        f"in {len(report.files)} file(s), {seconds:.2f} s"
    )
    if report.copied_files:
        print(f"copied {len(report.copied_files)} other file(s): {', '.join(report.copied_files)}")
    if report.skipped:
        print(f"not copied (directories): {', '.join(report.skipped)}")
    return 0
