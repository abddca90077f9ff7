"""Importance-matrix (imatrix) weighted GGML quantization against ggml itself:
quantized bytes equal to ggml_quantize_chunk's with the same imatrix (ggml's
quantize_row_*_impl with quant_weights, what llama-quantize --imatrix runs)
for every type with a weighted form; hostile arguments; llama.cpp's imatrix
files (GGUF and legacy .dat) read as llama-quantize derives the weights,
and malformed ones refused with a typed error."""

from __future__ import annotations

import os
import struct

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastensors
from fastensors import _core
from fastensors.errors import InvalidArgument
from fastensors.gguf import ImatrixError, read_imatrix

import ggml_oracle
from test_kquants import INPUTS

WEIGHTED = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q4_0", "q4_1", "q5_0", "q5_1")

GGML = ggml_oracle.load()
needs_ggml = pytest.mark.skipif(GGML is None, reason="llama-cpp-python (ggml) is not installed")


def _weights(kind: str, cols: int) -> np.ndarray:
    """Importance weights as llama-imatrix produces them (means of squared
    activations) and the edge cases: zero columns, a wide dynamic range,
    all ones, all zeros."""
    rng = np.random.default_rng(cols)
    if kind == "activations":
        w = rng.standard_normal(cols) ** 2 + rng.standard_normal(cols) ** 2
    elif kind == "some_zero":
        w = rng.random(cols) * 4
        w[::3] = 0
        w[:40] = 0  # a whole Q4_0 block and parts of K-quant sub-blocks
    elif kind == "dynamic":
        w = 10.0 ** rng.uniform(-12, 12, cols)
    elif kind == "ones":
        w = np.ones(cols)
    else:  # "zeros"
        w = np.zeros(cols)
    return w.astype(np.float32)


KINDS = ("activations", "some_zero", "dynamic", "ones", "zeros")


@needs_ggml
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scheme", WEIGHTED)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_weighted_bytes_equal_ggml(scheme, name, kind):
    x = INPUTS[name]
    w = _weights(kind, x.shape[1])
    ours = fastensors.quantize(x, scheme, imatrix=w).data
    np.testing.assert_array_equal(ours, GGML.quantize(scheme, x, imatrix=w))


@needs_ggml
@pytest.mark.parametrize("scheme", WEIGHTED)
def test_the_weights_change_the_bytes(scheme):
    # Not the unweighted quantizer under another name.
    x = INPUTS["normal"]
    w = _weights("activations", x.shape[1])
    assert not np.array_equal(fastensors.quantize(x, scheme, imatrix=w).data, fastensors.quantize(x, scheme).data)


@needs_ggml
@pytest.mark.parametrize("scheme", WEIGHTED)
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_half_inputs_weighted_as_ggml_does_their_f32_widening(scheme, dtype):
    x = INPUTS["t2"].astype(dtype)
    w = _weights("activations", x.shape[1])
    ours = fastensors.quantize(x, scheme, imatrix=w).data
    np.testing.assert_array_equal(ours, GGML.quantize(scheme, x.astype(np.float32), imatrix=w))


@needs_ggml
@pytest.mark.parametrize("scheme", WEIGHTED)
def test_many_threads_and_chunks_across_rows_give_ggml_bytes(scheme):
    # 2560 columns: chunks (32 super-blocks, or 64 blocks) start inside rows,
    # so each block must find its own columns of the imatrix and its row's
    # mean square.
    x = np.random.default_rng(7).standard_normal((96, 2560)).astype(np.float32)
    x[5] *= 40  # rows with different mean squares
    w = _weights("dynamic", 2560)
    np.testing.assert_array_equal(fastensors.quantize(x, scheme, imatrix=w).data, GGML.quantize(scheme, x, imatrix=w))


@needs_ggml
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(WEIGHTED), rows=st.integers(1, 3), data=st.data())
def test_arbitrary_rows_and_weights_equal_ggml(scheme, rows, data):
    x = data.draw(hnp.arrays(np.float32, (rows, 256), elements=st.floats(-1e6, 1e6, allow_nan=False, width=32)))
    w = data.draw(hnp.arrays(np.float32, (256,), elements=st.floats(0, 1e6, width=32)))
    np.testing.assert_array_equal(fastensors.quantize(x, scheme, imatrix=w).data, GGML.quantize(scheme, x, imatrix=w))


@pytest.mark.parametrize("scheme", WEIGHTED)
def test_weighted_error_is_lower_where_the_weights_are(scheme):
    # The point of the weights: the weighted squared error of the weighted
    # quantization is below the unweighted one's.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 1024)).astype(np.float32)
    w = (10.0 ** rng.uniform(-3, 3, 1024)).astype(np.float32)

    def werr(qt):
        return float((((fastensors.dequantize(qt) - x) ** 2) * w).sum())

    assert werr(fastensors.quantize(x, scheme, imatrix=w)) < werr(fastensors.quantize(x, scheme))


def test_hostile_arguments_are_typed_errors():
    x = INPUTS["normal"]
    w = _weights("ones", x.shape[1])
    with pytest.raises(InvalidArgument, match="one weight per column"):
        fastensors.quantize(x, "q4_k", imatrix=w[:-1])
    with pytest.raises(InvalidArgument, match="one weight per column"):
        fastensors.quantize(x, "q4_k", imatrix=w.reshape(2, -1))
    with pytest.raises(InvalidArgument, match="float32"):
        fastensors.quantize(x, "q4_k", imatrix=w.astype(np.float64))
    with pytest.raises(InvalidArgument, match="numpy float32 array"):
        fastensors.quantize(x, "q4_k", imatrix=list(w))
    for bad, what in ((-1.0, "-1"), (np.nan, "nan"), (np.inf, "inf")):
        v = w.copy()
        v[77] = bad
        with pytest.raises(InvalidArgument, match=rf"imatrix\[77\] is {what}"):
            fastensors.quantize(x, "q5_0", imatrix=v)
    for scheme in ("q8_0", "int4", "nf4", "fp8_e4m3"):
        with pytest.raises(InvalidArgument, match="no importance-matrix form"):
            fastensors.quantize(x, scheme, imatrix=w)
    bad = x.copy()
    bad[3, 200] = np.nan
    with pytest.raises(InvalidArgument, match="row 3, column 200"):
        fastensors.quantize(bad, "q3_k", imatrix=w)
    with pytest.raises(InvalidArgument, match="block size 256"):
        fastensors.quantize(np.ones((2, 128), np.float32), "q2_k", imatrix=np.ones(128, np.float32))
    # A strided view of the weights is taken as its values.
    wide = np.repeat(w, 2)[::2]
    np.testing.assert_array_equal(fastensors.quantize(x, "q4_k", imatrix=wide).data,
                                  fastensors.quantize(x, "q4_k", imatrix=w).data)


def test_core_entry_checks_sizes_and_types():
    x = INPUTS["normal"]
    out = np.empty((x.shape[0], _core.ggml_row_bytes(_core.GgmlType.q4_k, x.shape[1])), np.uint8)
    raw = x.view(np.uint32)
    with pytest.raises(InvalidArgument, match="imatrix: expected 512 weights"):
        _core.ggml_quantize(_core.GgmlType.q4_k, raw, "F32", out, np.ones(511, np.float32))
    with pytest.raises(InvalidArgument, match="q8_0 has no importance-matrix form"):
        _core.ggml_quantize(_core.GgmlType.q8_0, raw, "F32", np.empty((48, 16 * 34), np.uint8), np.ones(512, np.float32))
    assert [_core.ggml_has_weighted(getattr(_core.GgmlType, s)) for s in ("q8_0", *WEIGHTED)] == [False] + [True] * 9
    # Empty matrices are fine.
    _core.ggml_quantize(_core.GgmlType.q4_k, np.empty((0, 256), np.uint32), "F32", np.empty((0, 144), np.uint8),
                        np.ones(256, np.float32))


@needs_ggml
@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_every_kernel_level_gives_ggml_bytes(level):
    """This file's ggml comparisons again in a fresh process with
    FASTENSORS_ISA forcing each level the CPU runs (the weighted searches
    are scalar everywhere; the level must not change their bytes)."""
    import subprocess
    import sys

    if level not in fastensors.supported_isas():
        pytest.skip(f"this CPU cannot run {level} (usable: {', '.join(fastensors.supported_isas())})")
    env = dict(os.environ, FASTENSORS_ISA=level)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "equal_ggml or ggml_bytes and not every_kernel_level"], env=env, capture_output=True,
                       text=True, cwd=os.path.dirname(__file__))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


# ---- imatrix files ------------------------------------------------------------


def _write_legacy(path, entries, trailer=True, chunk_count=10, dataset=b"wiki.train.raw"):
    """llama-imatrix's legacy .dat layout: entries are (name, ncall, values)."""
    with open(path, "wb") as fh:
        fh.write(struct.pack("<i", len(entries)))
        for name, ncall, values in entries:
            raw = name.encode()
            fh.write(struct.pack("<i", len(raw)) + raw)
            fh.write(struct.pack("<ii", ncall, len(values)))
            fh.write(np.asarray(values, "<f4").tobytes())
        if trailer:
            fh.write(struct.pack("<i", chunk_count) + struct.pack("<i", len(dataset)) + dataset)


def _write_gguf(path, entries, meta=True):
    """llama-imatrix's GGUF layout: entries are (name, sums (n_expert, ne0),
    counts (n_expert,))."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(os.fspath(path), arch="imatrix")
    if meta:
        w.add_array("imatrix.datasets", ["calibration.txt"])
        w.add_uint32("imatrix.chunk_count", 12)
        w.add_uint32("imatrix.chunk_size", 512)
    for name, sums, counts in entries:
        w.add_tensor(name + ".in_sum2", np.asarray(sums, np.float32))
        w.add_tensor(name + ".counts", np.asarray(counts, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_read_gguf_imatrix_divides_by_counts(tmp_path):
    rng = np.random.default_rng(0)
    sums = (rng.random((1, 256)) * 100).astype(np.float32)
    experts = (rng.random((3, 64)) * 100).astype(np.float32)
    p = tmp_path / "imatrix.gguf"
    _write_gguf(p, [("blk.0.attn_q.weight", sums, [37.0]),
                    ("blk.0.ffn_down_exps.weight", experts, [4.4, 0.0, 2.5])])
    got = read_imatrix(p)
    assert sorted(got) == ["blk.0.attn_q.weight", "blk.0.ffn_down_exps.weight"]
    np.testing.assert_array_equal(got["blk.0.attn_q.weight"], sums[0] / np.float32(37))
    e = got["blk.0.ffn_down_exps.weight"]
    assert e.dtype == np.float32 and e.shape == (192,)
    # counts are rounded half away from zero first (lround); an expert never
    # reached (count 0) gets weights 1
    np.testing.assert_array_equal(e[:64], experts[0] / np.float32(4))
    np.testing.assert_array_equal(e[64:128], np.ones(64, np.float32))
    np.testing.assert_array_equal(e[128:], experts[2] / np.float32(3))


def test_read_legacy_imatrix_divides_by_ncall(tmp_path):
    v = np.arange(1, 65, dtype=np.float32) * 0.37
    p = tmp_path / "imatrix.dat"
    _write_legacy(p, [("blk.0.attn_k.weight", 7, v), ("output.weight", 0, v), ("blk.1.attn_v.weight", -3, v)])
    got = read_imatrix(p)
    np.testing.assert_array_equal(got["blk.0.attn_k.weight"], v / np.float32(7))
    np.testing.assert_array_equal(got["output.weight"], v)
    np.testing.assert_array_equal(got["blk.1.attn_v.weight"], v)
    # The trailer is optional, and a repeated name replaces the earlier entry.
    _write_legacy(p, [("a", 2, v), ("a", 1, v[:32])], trailer=False)
    got = read_imatrix(p)
    np.testing.assert_array_equal(got["a"], v[:32])


def test_malformed_imatrix_files_are_typed_errors(tmp_path):
    v = np.ones(32, np.float32)
    p = tmp_path / "x"
    with pytest.raises(InvalidArgument, match="cannot read"):
        read_imatrix(tmp_path / "missing.dat")
    for blob in (b"", b"\0\0\0\0", struct.pack("<i", -5), b"abc"):
        p.write_bytes(blob)
        with pytest.raises(ImatrixError, match="not an imatrix file"):
            read_imatrix(p)
    p.write_bytes(struct.pack("<ii", 1, -4))
    with pytest.raises(ImatrixError, match="negative name length"):
        read_imatrix(p)
    p.write_bytes(struct.pack("<ii", 1, 1) + b"a" + struct.pack("<ii", 1, 0))
    with pytest.raises(ImatrixError, match="0 values"):
        read_imatrix(p)
    _write_legacy(p, [("a", 1, np.array([1.0, -2.0], np.float32))])
    with pytest.raises(ImatrixError, match="weight 1 of 'a' is -2.0"):
        read_imatrix(p)
    _write_legacy(p, [("a", 1, np.array([1.0, np.inf], np.float32))])
    with pytest.raises(ImatrixError, match="finite"):
        read_imatrix(p)
    g = tmp_path / "m.gguf"
    _write_gguf(g, [("t", v[None], [1.0])], meta=False)
    with pytest.raises(ImatrixError, match="missing imatrix metadata"):
        read_imatrix(g)
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(os.fspath(g), arch="imatrix")
    w.add_array("imatrix.datasets", ["d"])
    w.add_uint32("imatrix.chunk_count", 1)
    w.add_uint32("imatrix.chunk_size", 1)
    w.add_tensor("t.in_sum2", v)
    w.add_tensor("u.counts", np.ones(1, np.float32))
    w.add_tensor("h.in_sum2", v.astype(np.float16))
    w.add_tensor("h.counts", np.ones(1, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ImatrixError, match="must be F32|mismatched sums and counts"):
        read_imatrix(g)


@pytest.mark.parametrize("fmt", ["gguf", "dat"])
def test_truncated_and_garbled_files_never_crash(tmp_path, fmt):
    """Every prefix and many random corruptions of a valid file: either the
    weights or an ImatrixError, nothing else."""
    rng = np.random.default_rng(11)
    good = tmp_path / f"good.{fmt}"
    sums = (rng.random((2, 64)) * 10).astype(np.float32)
    if fmt == "gguf":
        _write_gguf(good, [("blk.0.attn_q.weight", sums, [3.0, 5.0]), ("output.weight", sums[:1], [2.0])])
    else:
        _write_legacy(good, [("blk.0.attn_q.weight", 3, sums[0]), ("output.weight", 2, sums[1])])
    blob = good.read_bytes()
    assert read_imatrix(good)
    p = tmp_path / f"bad.{fmt}"
    cuts = sorted(set(range(0, len(blob), max(1, len(blob) // 150))) | {len(blob) - 1})
    variants = [blob[:n] for n in cuts]
    for _ in range(200):
        b = bytearray(blob)
        for i in rng.integers(0, len(b), rng.integers(1, 8)):
            b[i] = int(rng.integers(0, 256))
        variants.append(bytes(b))
    ok = 0
    for v in variants:
        p.write_bytes(v)
        try:
            got = read_imatrix(p)
        except ImatrixError:
            continue
        ok += 1
        assert all(a.dtype == np.float32 and a.ndim == 1 for a in got.values())
    assert ok < len(variants)  # the corruptions were noticed


@needs_ggml
def test_file_weights_quantize_as_llama_quantize_would(tmp_path):
    # read_imatrix's weights fed to ggml and to us: the same bytes.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 512)).astype(np.float32)
    p = tmp_path / "imatrix.gguf"
    _write_gguf(p, [("blk.0.ffn_up.weight", (rng.standard_normal((1, 512)) ** 2 * 50).astype(np.float32), [50.0])])
    w = read_imatrix(p)["blk.0.ffn_up.weight"]
    for scheme in ("q4_k", "q6_k", "q4_0"):
        np.testing.assert_array_equal(fastensors.quantize(x, scheme, imatrix=w).data,
                                      GGML.quantize(scheme, x, imatrix=w))
