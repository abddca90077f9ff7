"""``python -m fastensors``: the CLI, plus ``--cmake-dir`` for C++ consumers."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
