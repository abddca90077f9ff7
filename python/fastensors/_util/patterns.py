"""Compiling user-given regular expressions, with errors that name the
option they came from."""

from __future__ import annotations

import re
from typing import List, Optional, Pattern, Sequence, Union

from ..errors import InvalidArgument

Regex = Union[str, Pattern[str], None]
Patterns = Union[str, Pattern[str], Sequence[Union[str, Pattern[str]]], None]


def compile_one(pattern: Regex, what: str = "") -> Optional[Pattern[str]]:
    """``pattern`` compiled (None and compiled patterns pass through).

    Raises ``InvalidArgument`` naming the option ``what`` for a bad pattern."""
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise InvalidArgument(f"{what + ': ' if what else ''}expected a regular expression string, "
                              f"not {type(pattern).__name__}")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise InvalidArgument(f"{what + ': ' if what else ''}invalid regular expression {pattern!r}: {e}") from None


def compile_many(patterns: Patterns, what: str = "") -> List[Pattern[str]]:
    """One pattern or a sequence of them, compiled; None is no pattern."""
    if patterns is None:
        return []
    if isinstance(patterns, (str, re.Pattern)):
        patterns = [patterns]
    return [compile_one(p, what) for p in patterns]
