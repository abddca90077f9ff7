"""The ``fastensors`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from . import __version__
from ._cli_checkpoint import register as _register_checkpoint_commands


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
    args = parser.parse_args(argv)

    if args.cmake_dir:
        print(_cmake_dir())
        return 0
    if args.command == "demo":
        from .demo import run

        return run()
    if getattr(args, "func", None) is not None:  # shard, merge, convert-bin
        return _run_checkpoint_command(args)
    parser.print_help(sys.stderr)
    return 2


def _run_checkpoint_command(args) -> int:
    from ._errors import SafetensorError

    try:
        return args.func(args)
    except (SafetensorError, OSError, ValueError) as e:
        print(f"fastensors {args.command}: error: {e}", file=sys.stderr)
        return 1
