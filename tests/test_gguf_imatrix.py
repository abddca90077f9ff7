"""GGUF export with an importance matrix: every block-quantized tensor the
imatrix names equals ggml's weighted quantization (ggml_quantize_chunk with
its weights) of the same tensor, the others ggml's unweighted one, with
llama-quantize's rules for entries that do not fit; the CLI's --imatrix."""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf", reason="GGUF export tests need the gguf package")

from fastensors import gguf as fg  # noqa: E402
from fastensors.errors import InvalidArgument  # noqa: E402

import ggml_oracle  # noqa: E402
from test_gguf_export import llama_dir  # noqa: E402,F401  (the tiny Llama model fixture)
from test_imatrix import _write_gguf, _write_legacy  # noqa: E402

GGML = ggml_oracle.load()
pytestmark = pytest.mark.skipif(GGML is None, reason="llama-cpp-python (ggml) is not installed")


def _tensors(path):
    r = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name.lower(), np.asarray(t.data)) for t in r.tensors}, r.fields


def _imatrix_for(ref, skip):
    """Weights for every 2-D tensor but `skip`, as llama-imatrix would write
    them (positive, wide range)."""
    rng = np.random.default_rng(2)
    return {n: (10.0 ** rng.uniform(-2, 2, a.shape[-1])).astype(np.float32)
            for n, (t, a) in ref.items() if a.ndim == 2 and n != skip}


@pytest.mark.parametrize("recipe", ["q4_k_m", "q5_0"])
def test_export_with_imatrix_equals_ggml_weighted(llama_dir, tmp_path, recipe):  # noqa: F811
    if recipe not in fg.recipe_names():
        pytest.skip(f"this build has no {recipe}")
    ref, _ = _tensors(fg.export_gguf(llama_dir, str(tmp_path / "f32.gguf"), recipe="f32").path)
    skip = "blk.1.ffn_up.weight"
    weights = _imatrix_for(ref, skip)
    rep = fg.export_gguf(llama_dir, str(tmp_path / "w.gguf"), recipe=recipe, imatrix=weights)
    got, fields = _tensors(rep.path)
    checked = weighted = 0
    for name, (t, data) in got.items():
        if t in ("f32", "f16"):
            continue
        x = np.ascontiguousarray(ref[name][1], dtype=np.float32)
        x = x.reshape(-1, x.shape[-1])
        w = weights.get(name) if t != "q8_0" else None
        want = GGML.quantize(t, x, imatrix=w)
        np.testing.assert_array_equal(np.asarray(data).reshape(want.shape), want, err_msg=f"{name} ({t})")
        checked += 1
        weighted += w is not None
    assert checked >= 10 and weighted == rep.weighted and weighted >= checked - 2
    assert fields["quantize.imatrix.entries_count"].parts[-1][0] == len(weights)
    assert "quantize.imatrix.file" not in fields  # a mapping has no file
    # Without the imatrix the weighted tensors differ.
    plain, _ = _tensors(fg.export_gguf(llama_dir, str(tmp_path / "p.gguf"), recipe=recipe).path)
    assert not np.array_equal(plain["blk.0.attn_q.weight"][1], got["blk.0.attn_q.weight"][1])
    assert np.array_equal(plain[skip][1], got[skip][1])


def test_export_from_imatrix_files_and_cli(llama_dir, tmp_path, capsys):  # noqa: F811
    from fastensors.cli import main

    ref, _ = _tensors(fg.export_gguf(llama_dir, str(tmp_path / "f32.gguf"), recipe="f32").path)
    weights = _imatrix_for(ref, None)
    # in_sum2 / counts that give back these weights exactly (counts of 1)
    g = tmp_path / "imatrix.gguf"
    _write_gguf(g, [(n, w[None], [1.0]) for n, w in weights.items()])
    d = tmp_path / "imatrix.dat"
    _write_legacy(d, [(n, 1, w) for n, w in weights.items()], dataset=b"calib.txt")
    a = fg.export_gguf(llama_dir, str(tmp_path / "a.gguf"), recipe="q4_k_s", imatrix=weights)
    b = fg.export_gguf(llama_dir, str(tmp_path / "b.gguf"), recipe="q4_k_s", imatrix=str(g))
    ta, _ = _tensors(a.path)
    tb, fb = _tensors(b.path)
    assert all(np.array_equal(ta[n][1], tb[n][1]) for n in ta)
    assert bytes(fb["quantize.imatrix.file"].parts[-1]).decode() == str(g)
    assert bytes(fb["quantize.imatrix.dataset"].parts[-1]).decode() == "calibration.txt"
    assert int(fb["quantize.imatrix.chunks_count"].parts[-1][0]) == 12
    out = tmp_path / "c.gguf"
    assert main(["quantize", str(llama_dir), str(out), "--format", "gguf", "--recipe", "q4_k_s", "--imatrix", str(d),
                 "--no-progress"]) == 0
    assert "with the importance matrix" in capsys.readouterr().out
    tc, fc = _tensors(str(out))
    assert all(np.array_equal(ta[n][1], tc[n][1]) for n in ta)
    assert bytes(fc["quantize.imatrix.dataset"].parts[-1]).decode() == "calib.txt"
    assert main(["quantize", str(llama_dir), str(tmp_path / "s"), "--scheme", "int4", "--imatrix", str(d),
                 "--no-progress"]) == 1
    assert "--imatrix applies to --format gguf" in capsys.readouterr().err


def test_entries_that_do_not_fit(llama_dir, tmp_path):  # noqa: F811
    # llama-quantize: a wrong-sized entry is an error, but for the token
    # embeddings, which are then quantized without it.
    with pytest.raises(InvalidArgument, match="imatrix size 3 is different from tensor size 256 for blk.0.attn_k"):
        fg.export_gguf(llama_dir, str(tmp_path / "x.gguf"), recipe="q4_0",
                       imatrix={"blk.0.attn_k.weight": np.ones(3, np.float32)})
    assert not (tmp_path / "x.gguf").exists()
    rep = fg.export_gguf(llama_dir, str(tmp_path / "y.gguf"), recipe="q4_0",
                         imatrix={"token_embd.weight": np.ones(3, np.float32)})
    assert rep.weighted == 0
    with pytest.raises(InvalidArgument, match="finite and >= 0"):
        fg.export_gguf(llama_dir, str(tmp_path / "z.gguf"), recipe="q4_0",
                       imatrix={"blk.0.attn_k.weight": -np.ones(256, np.float32)})
    with pytest.raises(InvalidArgument, match="file path or a mapping"):
        fg.export_gguf(llama_dir, str(tmp_path / "z.gguf"), recipe="q4_0", imatrix=42)
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x00\x00\x00\xff")
    with pytest.raises(fg.ImatrixError):
        fg.export_gguf(llama_dir, str(tmp_path / "z.gguf"), recipe="q4_0", imatrix=str(bad))
