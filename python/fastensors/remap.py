"""Renaming tensors: ``Remapper`` (regex rules applied in order),
``reindex`` (gapped layer numbers made contiguous) and key selection for
partial loading (``include``/``exclude`` patterns, a ``prefix`` to strip).

Every place that takes ``remap=`` accepts a ``Remapper``, a dict of exact
names (``{"old": "new"}``, others kept) or a function of one name. Two names
becoming one raises ``KeyCollision`` naming both."""

from __future__ import annotations

import re
import sys
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Pattern, Sequence, Tuple, Union

from ._util.patterns import compile_many
from .errors import InvalidArgument, KeyCollision, TensorNotFound

Rule = Tuple[str, str]
RemapLike = Union["Remapper", Mapping[str, str], Callable[[str], str], None]
Patterns = Union[str, Sequence[str], None]


class Remapper:
    """Rules ``(regex, replacement)`` applied in order to every key, each as
    ``re.sub`` (so ``\\1`` and ``\\g<name>`` refer to groups).
    ``debug=True`` prints a table of original -> remapped keys whenever a
    set of keys is mapped."""

    def __init__(self, rules: Iterable[Rule] = (), debug: bool = False):
        self.rules: List[Tuple[Pattern[str], str]] = []
        for rule in rules:
            try:
                pattern, repl = rule
                self.rules.append((re.compile(pattern), repl))
            except (TypeError, ValueError) as e:
                raise InvalidArgument(f"remap rule {rule!r} must be (regex, replacement): {e}") from None
            except re.error as e:
                raise InvalidArgument(f"remap rule {rule!r}: bad regular expression: {e}") from None
        self.debug = debug

    def __call__(self, key: str) -> str:
        for pattern, repl in self.rules:
            key = pattern.sub(repl, key)
        return key

    def then(self, other: RemapLike) -> "Remapper":
        """This remapper followed by ``other``."""
        return _Composed(self, as_function(other), self.debug or _debug_enabled(other))

    def map_keys(self, keys: Iterable[str]) -> Dict[str, str]:
        """``{original: remapped}`` for ``keys``, checked for collisions."""
        return map_keys(keys, self)

    def apply(self, tensors: Mapping[str, object]) -> Dict[str, object]:
        """A new dict with the keys remapped (values unchanged)."""
        return apply(tensors, self)

    def __repr__(self) -> str:
        return f"Remapper({[(p.pattern, r) for p, r in self.rules]!r}, debug={self.debug})"


class _Composed(Remapper):
    def __init__(self, first: Callable[[str], str], second: Callable[[str], str], debug: bool):
        super().__init__((), debug)
        self._first, self._second = first, second

    def __call__(self, key: str) -> str:
        return self._second(self._first(key))

    def __repr__(self) -> str:
        return f"{self._first!r}.then({self._second!r})"


def as_function(remap: RemapLike) -> Callable[[str], str]:
    if remap is None:
        return lambda k: k
    if isinstance(remap, Mapping):
        table = dict(remap)
        return lambda k: table.get(k, k)
    if callable(remap):
        return remap
    raise InvalidArgument(f"remap must be a Remapper, a dict or a function, not {type(remap).__name__}")


def _debug_enabled(remap: RemapLike) -> bool:
    return bool(getattr(remap, "debug", False))


def print_table(mapping: Mapping[str, str], file=None) -> None:
    """Print ``original -> remapped`` (unchanged keys marked ``=``)."""
    file = file or sys.stdout
    width = max([len("original")] + [len(k) for k in mapping])
    print(f"{'original':<{width}}    remapped", file=file)
    for old, new in mapping.items():
        print(f"{old:<{width}} -> {new}" if old != new else f"{old:<{width}}  = {new}", file=file)


def map_keys(keys: Iterable[str], remap: RemapLike) -> Dict[str, str]:
    """``{original: new}`` for every key; ``KeyCollision`` if two keys get
    the same new name. Prints the table when the remapper has ``debug``."""
    fn = as_function(remap)
    out: Dict[str, str] = {}
    owner: Dict[str, str] = {}
    for key in keys:
        new = fn(key)
        if not isinstance(new, str) or not new:
            raise InvalidArgument(f"remap turned {key!r} into {new!r}; tensor names must be non-empty strings")
        if new in owner:
            err = KeyCollision(f"{owner[new]!r} and {key!r} would both be named {new!r}")
            err.sources, err.target, err.tensor = (owner[new], key), new, new
            raise err
        owner[new] = key
        out[key] = new
    if _debug_enabled(remap):
        print_table(out)
    return out


def apply(tensors: Mapping[str, object], remap: RemapLike) -> Dict[str, object]:
    """``tensors`` with remapped keys (in the same order)."""
    if remap is None:
        return dict(tensors)
    mapping = map_keys(tensors.keys(), remap)
    return {mapping[k]: v for k, v in tensors.items()}


def reindex(keys: Iterable[str], *, start: int = 0, sep: str = ".") -> Dict[str, str]:
    """``{original: new}`` where every all-digit path component is replaced
    by its rank among the numbers found under the same parent path, counted
    from ``start``: ``layers.0, layers.2, layers.4 -> layers.0, layers.1,
    layers.2``. Parents are compared on the original names, so the blocks of
    ``layers.2`` are numbered on their own."""
    keys = list(keys)
    seen: Dict[Tuple[str, ...], set] = {}
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, not {type(key).__name__}")
        parts = key.split(sep)
        for i, part in enumerate(parts):
            if part.isdigit():
                seen.setdefault(tuple(parts[:i]), set()).add(int(part))
    rank = {parent: {n: start + r for r, n in enumerate(sorted(nums))} for parent, nums in seen.items()}
    out = {}
    for key in keys:
        parts = key.split(sep)
        new = [str(rank[tuple(parts[:i])][int(p)]) if p.isdigit() else p for i, p in enumerate(parts)]
        out[key] = sep.join(new)
    return out


# -- key selection: partial loading -----------------------------------------------


class KeySelection:
    """Which stored tensors a reader shows, under which names.

    In order: ``include`` (keep names matching one of the regexes, searched
    anywhere in the name), ``exclude`` (drop names matching one), ``prefix``
    (keep names starting with it, and strip it), then ``remap``. Patterns
    apply to the stored names."""

    def __init__(self, stored: Iterable[str], *, remap: RemapLike = None, include: Patterns = None,
                 exclude: Patterns = None, prefix: Optional[str] = None):
        inc, exc = compile_many(include, "include pattern"), compile_many(exclude, "exclude pattern")
        kept: List[Tuple[str, str]] = []
        for name in stored:
            if inc and not any(p.search(name) for p in inc):
                continue
            if any(p.search(name) for p in exc):
                continue
            if prefix:
                if not name.startswith(prefix):
                    continue
                if name == prefix:
                    raise InvalidArgument(f"stripping prefix {prefix!r} from {name!r} leaves no name")
                kept.append((name, name[len(prefix):]))
            else:
                kept.append((name, name))
        stripped: Dict[str, str] = {}
        for name, short in kept:  # a stripped name can only collide with another stripped name
            if short in stripped:
                err = KeyCollision(f"{stripped[short]!r} and {name!r} would both be named {short!r}")
                err.sources, err.target, err.tensor = (stripped[short], name), short, short
                raise err
            stripped[short] = name
        renamed = map_keys([s for _, s in kept], remap) if remap is not None else {s: s for _, s in kept}
        self.to_stored: Dict[str, str] = {renamed[short]: name for name, short in kept}
        self.to_public: Dict[str, str] = {v: k for k, v in self.to_stored.items()}

    @staticmethod
    def wanted(remap=None, include=None, exclude=None, prefix=None) -> bool:
        return any(x is not None for x in (remap, include, exclude, prefix))

    def stored(self, name: str, where: str = "") -> str:
        try:
            return self.to_stored[name]
        except (KeyError, TypeError):
            err = TensorNotFound(f"no tensor named {name!r}{where} (after include/exclude/prefix/remap)")
            err.tensor = name
            raise err from None

    def __contains__(self, name: object) -> bool:
        return name in self.to_stored

    def keys(self) -> List[str]:
        return sorted(self.to_stored)


__all__ = ["Remapper", "reindex", "map_keys", "apply", "KeySelection", "print_table"]
