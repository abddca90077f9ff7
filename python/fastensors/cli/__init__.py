"""The ``fastensors`` command line: one module per command group, each with
a ``register(subparsers)`` that sets the handler; this module only dispatches."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from .._core import __version__
from ..errors import SafetensorError
from . import checkpoint, convert, demo, inspect, metadata, quantize

_GROUPS = (demo, checkpoint, metadata, inspect, quantize, convert)


def _cmake_dir() -> str:
    # The wheel installs the C++ package under the fastensors package:
    # <pkg>/lib/cmake/fastensors/fastensorsConfig.cmake, so the package
    # directory is the prefix CMake searches.
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: Optional[List[str]] = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit
    status: 0 on success, 1 for an error in the input, 2 for a usage error."""
    parser = argparse.ArgumentParser(prog="fastensors", description="A fast, strict engine for safetensors files.")
    parser.add_argument("--version", action="version", version=f"fastensors {__version__}")
    parser.add_argument("--cmake-dir", action="store_true",
                        help="print the prefix to put in CMAKE_PREFIX_PATH for find_package(fastensors)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in _GROUPS:
        group.register(sub)
    args = parser.parse_args(argv)

    if args.cmake_dir:
        print(_cmake_dir())
        return 0
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except (SafetensorError, OSError, ValueError) as e:
        print(f"fastensors {args.command}: error: {e}", file=sys.stderr)
        return 1
