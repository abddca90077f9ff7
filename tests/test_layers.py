"""The package's architecture, read from its import statements: a module
imports only layers below its own (docs/architecture.md), there are no
import cycles, and the old import paths keep working."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import textwrap
from typing import Dict, List, Set, Tuple

import pytest

import fastensors

# The top-level name under fastensors -> its layer. Higher layers may import
# lower ones only; modules of one package may import each other.
LAYERS: Dict[str, int] = {
    "_core": 0,
    "errors": 1,
    "_util": 2,
    "remap": 3, "sources": 3,
    "format": 4,
    "checkpoint": 5,
    "surgery": 6, "hf": 6, "quant": 6, "gguf": 6, "distributed": 6,
    "numpy": 7, "torch": 7, "flax": 7, "tensorflow": 7, "paddle": 7, "mlx": 7,
    "cli": 8,
    "__init__": 9, "__main__": 9,
}


def module_files(root: str, package: str) -> Dict[str, str]:
    """Dotted module name -> file, for every .py below ``root``."""
    out = {}
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join([package, *rel])] = os.path.join(dirpath, f)
    return out


def imports_of(name: str, path: str, modules: Dict[str, str], package: str) -> Set[str]:
    """Modules of the package that ``name`` imports anywhere (function bodies too)."""
    is_pkg = os.path.basename(path) == "__init__.py"
    here = name if is_pkg else name.rsplit(".", 1)[0]
    found: Set[str] = set()
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule pkg.sub; other
            # names are attributes of pkg itself.
            subs = [f"{mod}.{a.name}" for a in node.names
                    if f"{mod}.{a.name}" in modules or f"{mod}.{a.name}" == f"{package}._core"]
            targets = subs + ([mod] if len(subs) < len(node.names) else [])
        for t in targets:
            if t == f"{package}._core":  # the compiled extension
                found.add(t)
            elif t == package or t.startswith(package + "."):
                while t not in modules and "." in t and t != package:
                    t = t.rsplit(".", 1)[0]  # an attribute of a module, or the extension
                if t in modules and t != name:
                    found.add(t)
    return found


def graph(root: str, package: str) -> Dict[str, Set[str]]:
    """Import edges. Importing ``a.b.c`` also runs the ``a.b`` package: an edge
    to each ancestor package of the target that is not the importer's own."""
    modules = module_files(root, package)
    edges: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        own = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}
        deps = set()
        for t in imports_of(name, path, modules, package):
            parts = t.split(".")
            for i in range(2, len(parts) + 1):
                anc = ".".join(parts[:i])
                if anc in modules and anc not in own and anc != name:
                    deps.add(anc)
            deps.add(t)
        edges[name] = deps - {name}
    return edges


def layer_of(name: str, package: str) -> Tuple[str, int]:
    top = name[len(package) + 1:].split(".")[0] if name != package else "__init__"
    if top not in LAYERS:
        raise AssertionError(f"{name}: {top!r} has no layer; add it to LAYERS (and to docs/architecture.md)")
    return top, LAYERS[top]


def violations(edges: Dict[str, Set[str]], package: str) -> List[str]:
    out = []
    for src, deps in sorted(edges.items()):
        top, level = layer_of(src, package)
        for dst in sorted(deps):
            dtop, dlevel = layer_of(dst, package)
            if dtop != top and dlevel >= level:
                out.append(f"{src} (layer {level}) imports {dst} (layer {dlevel})")
    return out


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle per strongly connected component of more than one module."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


ROOT = os.path.dirname(fastensors.__file__)


def test_every_module_imports_only_lower_layers():
    assert violations(graph(ROOT, "fastensors"), "fastensors") == []


def test_no_import_cycles():
    assert cycles(graph(ROOT, "fastensors")) == []


def test_the_checker_finds_upward_imports_and_cycles(tmp_path):
    # A made-up package with both faults: the checks above can fail.
    pkg = tmp_path / "demo_pkg"
    (pkg / "format").mkdir(parents=True)
    (pkg / "checkpoint").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "format" / "__init__.py").write_text("")
    (pkg / "format" / "reader.py").write_text("def f():\n    from ..checkpoint import reader\n")
    (pkg / "checkpoint" / "__init__.py").write_text("from . import reader\n")
    (pkg / "checkpoint" / "reader.py").write_text("from ..format.reader import f\n")
    edges = graph(str(pkg), "demo_pkg")
    assert violations(edges, "demo_pkg") == [
        "demo_pkg.format.reader (layer 4) imports demo_pkg.checkpoint (layer 5)",
        "demo_pkg.format.reader (layer 4) imports demo_pkg.checkpoint.reader (layer 5)",
    ]
    assert cycles(edges) == [["demo_pkg.checkpoint", "demo_pkg.checkpoint.reader", "demo_pkg.format.reader"]]


def test_subpackages_match_the_documented_layout():
    packages = sorted(d for d in os.listdir(ROOT)
                      if os.path.isfile(os.path.join(ROOT, d, "__init__.py")))
    assert packages == ["_util", "checkpoint", "cli", "distributed", "format", "gguf", "hf", "quant", "sources",
                        "surgery"]
    for name in packages:
        # Read, not imported: some subpackages need an optional framework (torch).
        with open(os.path.join(ROOT, name, "__init__.py"), encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        assert doc and doc.strip(), f"fastensors.{name} has no docstring saying what it is for"


OLD_PATHS = [
    ("fastensors.layout", "convert"), ("fastensors.metadata", "embed_config"),
    ("fastensors.sharding", "save_sharded"), ("fastensors.sharding", "reshard"),
    ("fastensors.checkpoint", "open_checkpoint"), ("fastensors.checkpoint", "read_index"),
    ("fastensors.checkpoint", "locate"), ("fastensors.quant", "QuantizedTensor"), ("fastensors.quant", "kernel_isa"),
    ("fastensors.hf", "save_pretrained"), ("fastensors.cli", "main"), ("fastensors.remap", "rename_file"),
    ("fastensors.remap", "KeySelection"),
]


@pytest.mark.parametrize("module,name", OLD_PATHS)
def test_old_import_paths_keep_working(module, name):
    # In a fresh interpreter: the aliases must work as a first import.
    code = f"from {module} import {name}; import {module} as m; assert getattr(m, {name!r}) is {name}"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_old_module_aliases_are_the_new_modules():
    code = textwrap.dedent("""
        import fastensors.sharding, fastensors.checkpoint.sharding, fastensors.layout, fastensors.surgery.layout
        import fastensors.metadata, fastensors.surgery.metadata
        assert fastensors.sharding is fastensors.checkpoint.sharding
        assert fastensors.layout is fastensors.surgery.layout
        assert fastensors.metadata is fastensors.surgery.metadata
        assert fastensors.sharding.__spec__.name == "fastensors.checkpoint.sharding"
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_convert_bin_alias_needs_torch_only_when_imported():
    pytest.importorskip("torch")
    r = subprocess.run([sys.executable, "-c", "import fastensors, sys; assert 'torch' not in sys.modules;"
                        " import fastensors.convert_bin as c; assert c.__name__ == 'fastensors.hf.convert_bin'"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
