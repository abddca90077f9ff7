"""Reading the JSON files of a model directory (config.json, tokenizer.json,
modules.json, ...) with one error for all of them."""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from ..errors import InvalidArgument


def read_json(path: str, *, kind: Optional[type] = dict, missing_ok: bool = False) -> Any:
    """The parsed contents of ``path``.

    ``kind``: the type the top-level value must have (None: any). With
    ``missing_ok`` an absent file gives None.

    Raises InvalidArgument when the file cannot be read, is not JSON or holds
    another kind of value (FileNotFoundError when absent, unless missing_ok)."""
    if missing_ok and not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{path!r} is not readable JSON: {e}") from None
    if kind is not None and not isinstance(value, kind):
        raise InvalidArgument(f"{path!r} does not hold a JSON {'object' if kind is dict else kind.__name__}")
    return value
