"""Old import paths kept working after the package was split into
subpackages: ``import fastensors.sharding`` gives ``fastensors.checkpoint.sharding``
itself (the same module object, so patching either patches both), imported
only when first asked for."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        # Already executed under its own name; the import system has just
        # set the alias's spec on it, so put the module's own back.
        module.__spec__ = self.spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def __init__(self, aliases):
        self.aliases = dict(aliases)

    def find_spec(self, fullname, path=None, target=None):
        new = self.aliases.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install(aliases) -> None:
    """Make each old dotted name (a key) import as the module named by its value."""
    for finder in sys.meta_path:
        if isinstance(finder, _AliasFinder):
            finder.aliases.update(aliases)
            return
    sys.meta_path.insert(0, _AliasFinder(aliases))
