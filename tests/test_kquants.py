"""The GGML K-quants (Q2_K..Q6_K) against ggml itself: quantized bytes equal
to ggml_quantize_chunk's (ggml's reference quantizers, what llama-quantize
runs without an importance matrix), dequantized floats bit-equal to ggml's
to_float and to the gguf package's numpy dequantizers. ggml comes from
llama-cpp-python (tests/ggml_oracle.py)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastensors
from fastensors import _core
from fastensors.errors import InvalidArgument

import ggml_oracle

KQUANTS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k")
LEGACY = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")
BLOCK_BYTES = {"q2_k": 84, "q3_k": 110, "q4_k": 144, "q5_k": 176, "q6_k": 210}

GGML = ggml_oracle.load()
needs_ggml = pytest.mark.skipif(GGML is None, reason="llama-cpp-python (ggml) is not installed")


def _inputs():
    """Named float32 matrices that reach every branch of the searches: all
    zeros, one sign only, constant sub-blocks, tiny and huge scales, heavy
    tails, integers (exact ties), lone outliers, denormals."""
    rng = np.random.default_rng(1234)
    out = {
        "normal": rng.standard_normal((48, 512)),
        "small": rng.standard_normal((8, 256)) * 1e-4,
        "large": rng.standard_normal((8, 256)) * 1e4,
        "positive": np.abs(rng.standard_normal((8, 768))),
        "negative": -np.abs(rng.standard_normal((8, 256))),
        "zeros": np.zeros((4, 256)),
        "t2": rng.standard_t(2, (16, 1024)),
        "integers": np.round(rng.standard_normal((8, 256)) * 4),
        "uniform": rng.uniform(-1, 1, (8, 512)),
        "denormal": rng.standard_normal((4, 256)) * 1e-39,
        "below_eps": rng.standard_normal((4, 256)) * 1e-16,
    }
    constant = np.ones((4, 256))
    constant[1] *= -2.5
    constant[2, :16] = 0
    out["constant"] = constant
    outlier = rng.standard_normal((8, 256)) * 0.01
    outlier[:, ::37] = 50.0
    out["outliers"] = outlier
    sparse = np.zeros((8, 512))
    sparse[:, ::5] = rng.standard_normal((8, 103))
    out["sparse"] = sparse
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


INPUTS = _inputs()


@needs_ggml
@pytest.mark.parametrize("scheme", KQUANTS + LEGACY)
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_quantized_bytes_equal_ggml(scheme, name):
    x = INPUTS[name]
    ours = fastensors.quantize(x, scheme).data
    assert ours.shape == (x.shape[0], GGML.row_size(scheme, x.shape[1]))
    np.testing.assert_array_equal(ours, GGML.quantize(scheme, x))


@needs_ggml
@pytest.mark.parametrize("scheme", KQUANTS)
@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_half_inputs_quantize_as_ggml_does_their_f32_widening(scheme, dtype):
    x = INPUTS["normal"].astype(dtype)
    ours = fastensors.quantize(x, scheme).data
    np.testing.assert_array_equal(ours, GGML.quantize(scheme, x.astype(np.float32)))


@needs_ggml
@pytest.mark.parametrize("scheme", KQUANTS)
def test_many_threads_give_ggml_bytes(scheme):
    # Large enough to run on every OpenMP thread, rows split across chunks.
    x = np.random.default_rng(7).standard_normal((96, 2560)).astype(np.float32)
    np.testing.assert_array_equal(fastensors.quantize(x, scheme).data, GGML.quantize(scheme, x))


@needs_ggml
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(KQUANTS), rows=st.integers(1, 3), data=st.data())
def test_arbitrary_finite_rows_equal_ggml(scheme, rows, data):
    x = data.draw(hnp.arrays(np.float32, (rows, 256),
                             elements=st.floats(-1e6, 1e6, allow_nan=False, width=32)))
    np.testing.assert_array_equal(fastensors.quantize(x, scheme).data, GGML.quantize(scheme, x))


def _random_blocks(scheme: str, nblocks: int, seed: int) -> np.ndarray:
    """Arbitrary block bytes whose F16 scales are finite."""
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 256, (nblocks, BLOCK_BYTES[scheme]), dtype=np.uint8)
    offsets = {"q2_k": (80, 82), "q3_k": (108,), "q4_k": (0, 2), "q5_k": (0, 2), "q6_k": (208,)}[scheme]
    for off in offsets:
        b[:, off:off + 2] = rng.uniform(-2, 2, nblocks).astype(np.float16).view(np.uint8).reshape(nblocks, 2)
    return b


@needs_ggml
@pytest.mark.parametrize("scheme", KQUANTS)
def test_dequantized_floats_equal_ggml_to_float(scheme):
    x = INPUTS["t2"]
    qt = fastensors.quantize(x, scheme)
    ours = fastensors.dequantize(qt)
    np.testing.assert_array_equal(ours.view(np.uint32), GGML.dequantize(scheme, qt.data, *x.shape).view(np.uint32))
    # Every bit pattern of the levels and scales, not only what quantize writes.
    blocks = _random_blocks(scheme, 64, seed=len(scheme))
    qt = fastensors.QuantizedTensor(scheme, (8, 2048), np.dtype(np.float32), blocks.reshape(8, -1), None, None, 256)
    ours = fastensors.dequantize(qt)
    np.testing.assert_array_equal(ours.view(np.uint32), GGML.dequantize(scheme, blocks, 8, 2048).view(np.uint32))


@pytest.mark.parametrize("scheme", KQUANTS)
def test_dequantized_floats_equal_the_gguf_package(scheme):
    gguf = pytest.importorskip("gguf")
    qtype = gguf.GGMLQuantizationType[scheme.upper()]
    for blocks in (fastensors.quantize(INPUTS["normal"], scheme).data.reshape(-1, BLOCK_BYTES[scheme]),
                   _random_blocks(scheme, 64, seed=3)):
        n = blocks.shape[0]
        qt = fastensors.QuantizedTensor(scheme, (n, 256), np.dtype(np.float32), blocks.reshape(n, -1), None, None, 256)
        ours = fastensors.dequantize(qt)
        theirs = gguf.quants.dequantize(blocks, qtype).reshape(n, 256).astype(np.float32)
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("scheme", KQUANTS)
def test_sizes_error_and_quality(scheme):
    x = INPUTS["normal"]
    qt = fastensors.quantize(x, scheme)
    assert qt.group_size == 256
    assert qt.data.nbytes == x.shape[0] * x.shape[1] // 256 * BLOCK_BYTES[scheme]
    assert _core.ggml_row_bytes(getattr(_core.GgmlType, scheme), 512) == 2 * BLOCK_BYTES[scheme]
    err = fastensors.quality(x, fastensors.dequantize(qt))
    # More bits, less error: Q2_K's SQNR is about 10 dB, each level adds ~6.
    floor = {"q2_k": 8, "q3_k": 14, "q4_k": 20, "q5_k": 26, "q6_k": 32}[scheme]
    assert err["sqnr_db"] > floor
    # An all-zero matrix comes back as zeros.
    z = fastensors.dequantize(fastensors.quantize(INPUTS["zeros"], scheme))
    assert not z.any()
    # 1-D input is one row; the original shape is kept.
    v = fastensors.quantize(x[0], scheme)
    assert fastensors.dequantize(v).shape == (512,)


@pytest.mark.parametrize("scheme", KQUANTS)
def test_bad_input_is_a_typed_error(scheme):
    with pytest.raises(InvalidArgument, match="block size 256"):
        fastensors.quantize(np.ones((4, 128), np.float32), scheme)
    with pytest.raises(InvalidArgument, match="block size 256"):
        _core.ggml_row_bytes(getattr(_core.GgmlType, scheme), 300)
    bad = np.ones((2, 512), np.float32)
    bad[1, 300] = np.nan
    with pytest.raises(InvalidArgument, match="row 1, column 300"):
        fastensors.quantize(bad, scheme)
    bad[1, 300] = -np.inf
    with pytest.raises(InvalidArgument, match="-inf"):
        fastensors.quantize(bad, scheme)
    with pytest.raises(InvalidArgument, match="group_size"):
        fastensors.quantize(np.ones((2, 256), np.float32), scheme, group_size=32)
    qt = fastensors.quantize(np.ones((2, 256), np.float32), scheme)
    with pytest.raises(InvalidArgument, match="bytes"):
        fastensors.QuantizedTensor(scheme, (2, 256), np.dtype(np.float32), qt.data[:1], None, None, 256)
    with pytest.raises(InvalidArgument, match="dequantize"):
        qt.values()


@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_every_kernel_level_gives_ggml_bytes(level):
    """This file again in a fresh process with FASTENSORS_ISA forcing each
    level the CPU runs: the AVX2 and AVX-512 searches (8 and 16 super-blocks
    at once) must give the scalar search's, and so ggml's, bytes."""
    import os
    import subprocess
    import sys

    if level not in fastensors.supported_isas():
        pytest.skip(f"this CPU cannot run {level} (usable: {', '.join(fastensors.supported_isas())})")
    env = dict(os.environ, FASTENSORS_ISA=level)
    active = subprocess.run([sys.executable, "-c", "import fastensors.quant as q; print(q.kernel_isa())"], env=env,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert active == level
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "not every_kernel_level"], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(__file__))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout
