"""The shipped type stub of ``fastensors._core`` is current, and the package
is marked typed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fastensors
import fastensors._core

PACKAGE_DIR = os.path.dirname(fastensors.__file__)


def test_py_typed_shipped():
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "py.typed"))


def test_stub_shipped_next_to_module():
    core_dir = os.path.dirname(fastensors._core.__file__)
    assert os.path.isfile(os.path.join(core_dir, "_core.pyi"))


def test_stub_matches_stubgen(tmp_path):
    pytest.importorskip("nanobind")
    pytest.importorskip("nanobind.stubgen")
    shipped_path = os.path.join(os.path.dirname(fastensors._core.__file__), "_core.pyi")
    proc = subprocess.run(
        [sys.executable, "-m", "nanobind.stubgen", "-m", "fastensors._core", "-O", str(tmp_path), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    generated = (tmp_path / "_core.pyi").read_text()
    with open(shipped_path) as fh:
        shipped = fh.read()
    assert generated == shipped


def test_stub_declares_what_the_package_uses():
    with open(os.path.join(PACKAGE_DIR, "_core.pyi")) as fh:
        stub = fh.read()
    for name in ("class File", "def parse_buffer", "def write_file", "def serialize", "def read_into",
                 "def view", "def default_durable", "def error_codes", "MAX_HEADER_SIZE"):
        assert name in stub, name
