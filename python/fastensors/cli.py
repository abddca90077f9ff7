"""The ``fastensors`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from . import __version__
from ._cli_checkpoint import register as _register_checkpoint_commands
from ._cli_metadata import register as _register_metadata_commands
from ._cli_inspect import register as _register_inspect_command
from ._cli_quantize import register as _register_quantize_commands


def _cmake_dir() -> str:
    # The wheel installs the C++ package under the fastensors package:
    # <pkg>/lib/cmake/fastensors/fastensorsConfig.cmake, so the package
    # directory is the prefix CMake searches.
    return os.path.dirname(os.path.abspath(__file__))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="fastensors", description="A fast, strict engine for safetensors files.")
    parser.add_argument("--version", action="version", version=f"fastensors {__version__}")
    parser.add_argument("--cmake-dir", action="store_true",
                        help="print the prefix to put in CMAKE_PREFIX_PATH for find_package(fastensors)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="save, reopen and verify a small built-in model, with timings")
    _register_checkpoint_commands(sub)
    _register_metadata_commands(sub)
    _register_inspect_command(sub)
    _register_quantize_commands(sub)
    _add_convert_parser(sub)
    args = parser.parse_args(argv)

    if args.cmake_dir:
        print(_cmake_dir())
        return 0
    if args.command == "demo":
        from .demo import run

        return run()
    if getattr(args, "func", None) is not None:  # shard, merge, convert-bin
        return _run_checkpoint_command(args)
    if args.command == "convert":
        return _run_convert(args)
    parser.print_help(sys.stderr)
    return 2


def _run_checkpoint_command(args) -> int:
    from ._errors import SafetensorError

    try:
        return args.func(args)
    except (SafetensorError, OSError, ValueError) as e:
        print(f"fastensors {args.command}: error: {e}", file=sys.stderr)
        return 1


# -- fastensors convert ------------------------------------------------------------


def _add_convert_parser(sub) -> None:
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


def _run_convert(args) -> int:
    import time

    from . import SafetensorError, convert_file
    from ._progress import format_bytes

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
