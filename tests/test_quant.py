"""Quantization kernels against the formats' own reference implementations:
gguf (GGML blocks), compressed-tensors (int8/int4/int2, fp8), an
independent numpy NF4 (bitsandbytes), numpy float64 metrics."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import fastensors
from fastensors import quality, quantize

GGML = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1")


def _ggml_cases():
    rng = np.random.default_rng(1)
    cases = {
        "random": rng.standard_normal((16, 256)).astype(np.float32),
        "zeros": np.zeros((3, 64), np.float32),
        "constant": np.full((2, 96), 0.37, np.float32),
        "negconst": np.full((2, 32), -5.5, np.float32),
        "tiny": (rng.standard_normal((4, 64)) * 1e-30).astype(np.float32),
        "huge": (rng.standard_normal((4, 64)) * 1e30).astype(np.float32),
        "mixed": np.where(rng.random((8, 128)) < 0.5, -1, 1).astype(np.float32) * rng.random((8, 128)).astype(np.float32) * 3,
        "single_block": rng.standard_normal(32).astype(np.float32),
        "subnormal": (rng.standard_normal((2, 64)) * 1e-39).astype(np.float32),
        "ints": rng.integers(-8, 8, (4, 64)).astype(np.float32),
    }
    z = cases["random"].copy()
    z[3] = 0.0  # one zero row among random ones
    cases["zero_row"] = z
    return cases


@pytest.mark.parametrize("scheme", GGML)
@pytest.mark.parametrize("case", sorted(_ggml_cases()))
def test_ggml_bytes_match_gguf(scheme, case):
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType as T

    x = _ggml_cases()[case]
    qtype = getattr(T, scheme.upper())
    with np.errstate(all="ignore"):
        ref = gq.quantize(x, qtype)
    qt = quantize(x, scheme)
    assert qt.data.dtype == np.uint8
    assert qt.data.reshape(ref.shape).tobytes() == ref.tobytes()
    with np.errstate(all="ignore"):
        ref_deq = gq.dequantize(ref, qtype)
    ours = qt.dequantize()
    assert ours.shape == x.shape
    assert ours.view(np.uint32).tobytes() == ref_deq.astype(np.float32).view(np.uint32).tobytes()


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_ggml_half_inputs_match_gguf(dtype):
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType as T

    x = np.random.default_rng(2).standard_normal((8, 128)).astype(dtype)
    for scheme in GGML:
        ref = gq.quantize(x.astype(np.float32), getattr(T, scheme.upper()))
        assert quantize(x, scheme).data.tobytes() == ref.tobytes()


def test_ggml_shape_errors():
    with pytest.raises(fastensors.InvalidArgument, match="multiple of the block size 32"):
        quantize(np.zeros((2, 33), np.float32), "q4_0")
    with pytest.raises(ValueError):
        quantize(np.zeros((2, 33), np.float32), "q8_0")


def test_ggml_values_are_the_codes():
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    qt = quantize(x, "q5_1")
    d = qt.data[:, :2].copy().view(np.float16).astype(np.float32)  # first block's scale per row
    m = qt.data[:, 2:4].copy().view(np.float16).astype(np.float32)
    v = qt.values()
    assert v.min() >= 0 and v.max() <= 31
    np.testing.assert_array_equal(qt.dequantize()[:, :32], d * v[:, :32].astype(np.float32) + m)


@pytest.mark.parametrize("scheme", ["q8_0", "int4", "nf4", "fp8_e4m3"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_rejected_with_position(scheme, bad):
    x = np.ones((4, 128), np.float32)
    x[2, 70] = bad
    with pytest.raises(fastensors.InvalidArgument, match="row 2, column 70"):
        quantize(x, scheme)


# ---- compressed-tensors -----------------------------------------------------

def _ct_reference(x_np, bits, group_size, symmetric, strategy):
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    if x_np.dtype == ml_dtypes.bfloat16:
        x = torch.from_numpy(x_np.view(np.int16)).view(torch.bfloat16)
    else:
        x = torch.from_numpy(x_np)
    kw = dict(num_bits=bits, symmetric=symmetric, strategy=strategy)
    if strategy == "group":
        kw["group_size"] = group_size
    args = QuantizationArgs(**kw)
    rows, cols = x.shape
    if strategy == "group":
        g = x.reshape(rows, cols // group_size, group_size)
        lo, hi = g.amin(-1), g.amax(-1)
    else:
        lo, hi = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
    scale, zp = calculate_qparams(lo, hi, args)
    q = ct_quantize(x, scale, zp, args, dtype=torch.int8)
    return q, scale, zp


def _t2np(t):
    import torch

    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


INT_CASES = [("int8", 8, None, True), ("int4", 4, 128, True), ("int4", 4, 32, False),
             ("int2", 2, 64, False), ("int2", 2, 64, True), ("int8", 8, None, False)]


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16, np.float16])
@pytest.mark.parametrize("scheme,bits,gs,sym", INT_CASES)
def test_int_matches_compressed_tensors(dtype, scheme, bits, gs, sym):
    rng = np.random.default_rng(bits + (7 if sym else 0))
    x = rng.standard_normal((12, 256)).astype(np.float32)
    x[1] = 0.0  # all-zero row: eps scale (and a NaN zero point in the reference)
    x[2] = np.abs(x[2])  # positive only
    x[3] = -np.abs(x[3]) * 1e-3
    x = x.astype(dtype)
    strategy = "channel" if scheme == "int8" else "group"
    q_ref, s_ref, zp_ref = _ct_reference(x, bits, gs, sym, strategy)
    kwargs = {"symmetric": sym}
    if gs is not None:
        kwargs["group_size"] = gs
    qt = quantize(x, scheme, **kwargs)
    np.testing.assert_array_equal(qt.values(), q_ref.numpy())
    s_ours = qt.scales
    assert s_ours.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(s_ours.view(np.uint8), _t2np(s_ref).reshape(s_ours.shape).view(np.uint8))
    if sym:
        assert qt.zero_points is None
    else:
        np.testing.assert_array_equal(qt.zero_points, zp_ref.numpy().reshape(qt.zero_points.shape))
    if bits < 8:
        from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

        np.testing.assert_array_equal(qt.data, pack_to_int32(q_ref, bits).numpy())


def test_int_dequantize_formula():
    x = np.random.default_rng(5).standard_normal((4, 128)).astype(np.float32)
    qt = quantize(x, "int4", group_size=32, symmetric=False)
    codes = qt.values().reshape(4, 4, 32).astype(np.float32)
    expect = (codes - qt.zero_points[..., None]) * qt.scales[..., None]
    np.testing.assert_array_equal(qt.dequantize(), expect.reshape(4, 128))
    assert quality(x, qt.dequantize())["cosine"] > 0.98


def test_int_shape_errors():
    with pytest.raises(fastensors.InvalidArgument, match="group size"):
        quantize(np.zeros((2, 100), np.float32), "int4")
    with pytest.raises(fastensors.InvalidArgument, match="2 dimensions"):
        quantize(np.zeros(128, np.float32), "int8")
    with pytest.raises(fastensors.InvalidArgument):
        quantize(np.zeros((2, 8), np.int32), "int8")


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
@pytest.mark.parametrize("granularity", ["tensor", "channel", "block"])
def test_fp8_matches_compressed_tensors(dtype, granularity):
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    rng = np.random.default_rng(9)
    x = (rng.standard_normal((200, 300)) * 50).astype(np.float32)
    x[:128, :128] = 0.0  # an all-zero tile
    x[5] = 0.0
    x = x.astype(dtype)
    xt = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16) if dtype == ml_dtypes.bfloat16 else torch.from_numpy(x)
    kw = dict(num_bits=8, type="float", symmetric=True, strategy=granularity)
    if granularity == "block":
        kw["block_structure"] = [128, 128]
    args = QuantizationArgs(**kw)
    if granularity == "tensor":
        lo, hi = xt.amin(), xt.amax()
    elif granularity == "channel":
        lo, hi = xt.amin(-1, keepdim=True), xt.amax(-1, keepdim=True)
    else:
        pad = torch.zeros((256, 384), dtype=xt.dtype)
        pad[:200, :300] = xt
        tiles = pad.reshape(2, 128, 3, 128).transpose(1, 2)
        lo, hi = tiles.amin((-1, -2)), tiles.amax((-1, -2))
    scale, _ = calculate_qparams(lo, hi, args)
    q_ref = ct_quantize(xt, scale, None, args, dtype=torch.float8_e4m3fn)
    qt = quantize(x, "fp8_e4m3", granularity=granularity)
    np.testing.assert_array_equal(qt.data, q_ref.view(torch.uint8).numpy())
    np.testing.assert_array_equal(qt.scales.reshape(-1).view(np.uint8), _t2np(scale).reshape(-1).view(np.uint8))
    assert qt.values().dtype == ml_dtypes.float8_e4m3fn


def test_fp8_cast_is_ml_dtypes():
    # Values that land on every kind of E4M3 rounding (ties, subnormals, the max).
    x = np.concatenate([np.linspace(-448, 448, 4001, dtype=np.float32),
                        np.linspace(-0.02, 0.02, 4001, dtype=np.float32), [448.0, -448.0]]).astype(np.float32)
    qt = quantize(x.reshape(1, -1), "fp8_e4m3", granularity="tensor")
    assert qt.scales[0] == np.float32(448.0) / np.float32(448.0)
    np.testing.assert_array_equal(qt.data.reshape(-1), x.astype(ml_dtypes.float8_e4m3fn).view(np.uint8))


# ---- NF4 --------------------------------------------------------------------

NF4_CODE = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                     0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                     0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def _nf4_numpy(x):
    flat = x.astype(np.float32).reshape(-1)
    n = flat.size
    pad = np.zeros(-(-n // 64) * 64, np.float32)
    pad[:n] = flat
    blocks = pad.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1)
    with np.errstate(divide="ignore"):
        inv = np.where(absmax == 0, np.float32(0), np.float32(1) / absmax).astype(np.float32)
    norm = blocks * inv[:, None]
    # nearest code; an exact midpoint goes to the lower code
    dist = np.abs(norm[..., None].astype(np.float64) - NF4_CODE.astype(np.float64))
    idx = np.argmin(dist, axis=-1).astype(np.uint8).reshape(-1)[:n]
    if n % 2:
        idx = np.append(idx, 0)
    packed = (idx[0::2] << 4) | idx[1::2]
    return packed.astype(np.uint8), absmax


@pytest.mark.parametrize("shape", [(8, 256), (3, 50), (1,), (0, 64)])
def test_nf4_matches_numpy_reference(shape):
    x = np.random.default_rng(11).standard_normal(shape).astype(np.float32)
    if x.size > 64:
        x.reshape(-1)[:64] = 0.0  # all-zero block
    qt = quantize(x, "nf4")
    packed, absmax = _nf4_numpy(x)
    np.testing.assert_array_equal(qt.data, packed)
    np.testing.assert_array_equal(qt.scales, absmax)
    deq = qt.dequantize()
    codes = qt.values().reshape(-1)
    np.testing.assert_array_equal(deq.reshape(-1), NF4_CODE[codes] * np.repeat(absmax, 64)[: x.size])
    assert not np.isnan(deq).any()


def test_nf4_code_table():
    np.testing.assert_array_equal(np.array(fastensors._core.nf4_code_values(), np.float32), NF4_CODE)


# ---- general ----------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["q8_0", "int8", "int4", "int2", "nf4", "fp8_e4m3"])
def test_empty_and_ratio(scheme):
    x = np.zeros((0, 128), np.float32)
    qt = quantize(x, scheme)
    assert qt.dequantize().shape == (0, 128)
    y = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    qt = quantize(y, scheme)
    assert qt.compression_ratio() > 1.9
    assert qt.dequantize(dtype="BF16").dtype == ml_dtypes.bfloat16
    assert fastensors.dequantize(qt).shape == y.shape


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "int8", "int4", "int2", "nf4",
                                    "fp8_e4m3"])
def test_dequantize_into_out(scheme):
    y = np.random.default_rng(1).standard_normal((16, 256)).astype(np.float32)
    qt = quantize(y, scheme)
    expected = qt.dequantize()
    # 64-byte aligned (streaming stores) and misaligned (ordinary stores) outputs
    raw = np.full(y.size + 32, np.nan, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    for off in (skip, skip + 1):
        out = raw[off:off + y.size].reshape(y.shape)
        assert fastensors.dequantize(qt, out=out) is out
        assert np.array_equal(out, expected)
    assert ((-expected.ctypes.data) % 64) == 0  # fresh outputs are allocated aligned


@pytest.mark.parametrize("dtype", ["BF16", "F16", "F64", np.float16])
def test_dequantize_to_other_dtypes_is_a_rounding_of_f32(dtype):
    # Other output dtypes go through the converter: the same bits as numpy / ml_dtypes casting the F32 result.
    qt = quantize(np.random.default_rng(2).standard_normal((8, 256)).astype(np.float32), "int4")
    got = qt.dequantize(dtype)
    want = qt.dequantize().astype(got.dtype)
    assert got.dtype == fastensors.quant.kernels._out_dtype(dtype) and got.tobytes() == want.tobytes()


def test_dequantize_out_errors():
    qt = quantize(np.ones((4, 64), np.float32), "q8_0")
    for bad, msg in ((np.empty((4, 64), np.float64), "float32"), (np.empty((64, 4), np.float32), "shape"),
                     (np.empty((4, 128), np.float32)[:, ::2], "C-contiguous"), ([0.0] * 256, "numpy array")):
        with pytest.raises(fastensors.InvalidArgument, match=msg):
            qt.dequantize(out=bad)
    with pytest.raises(fastensors.InvalidArgument, match="dtype"):
        qt.dequantize("BF16", out=np.empty((4, 64), np.float32))


def test_unknown_scheme():
    with pytest.raises(fastensors.InvalidArgument, match="unknown scheme"):
        quantize(np.zeros((2, 32), np.float32), "q7_0")


@pytest.mark.parametrize("rdt,cdt", [(np.float32, np.float32), (np.float64, ml_dtypes.bfloat16),
                                      (np.float16, np.float32)])
def test_quality_against_float64(rdt, cdt):
    rng = np.random.default_rng(4)
    a = rng.standard_normal(100_003).astype(rdt)
    b = (a.astype(np.float64) + rng.standard_normal(a.size) * 0.01).astype(cdt)
    q = quality(a, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    e = a64 - b64
    assert q["cosine"] == pytest.approx(a64 @ b64 / np.linalg.norm(a64) / np.linalg.norm(b64), rel=1e-12)
    assert q["sqnr_db"] == pytest.approx(10 * np.log10((a64 @ a64) / (e @ e)), rel=1e-10)
    assert q["rmse"] == pytest.approx(np.sqrt(np.mean(e * e)), rel=1e-10)
    assert q["max_abs_err"] == np.abs(e).max()


def test_quality_identical_and_errors():
    a = np.arange(10, dtype=np.float32)
    q = quality(a, a)
    assert q["cosine"] == pytest.approx(1.0) and q["sqnr_db"] == np.inf and q["max_abs_err"] == 0
    with pytest.raises(fastensors.InvalidArgument):
        quality(a, a[:5])
    with pytest.raises(fastensors.InvalidArgument):
        quality(a.astype(np.int32), a)


def _isa_in_subprocess(level):
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTENSORS_ISA=level)
    out = subprocess.run([sys.executable, "-c", "import fastensors.quant as q; print(q.kernel_isa())"], env=env,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip(), env


@pytest.mark.parametrize("level", ["scalar", "avx2", "avx512"])
def test_reference_comparisons_at_each_kernel_level(level):
    """The gguf / compressed-tensors comparisons of this file, rerun in a fresh
    process with FASTENSORS_ISA forcing each level the CPU supports."""
    import os
    import subprocess
    import sys

    if level not in fastensors.supported_isas():
        # Forcing a level the CPU cannot run is an error (UnsupportedIsa), not a fallback.
        pytest.skip(f"this CPU cannot run {level} (usable: {', '.join(fastensors.supported_isas())})")
    active, env = _isa_in_subprocess(level)
    if active != level:
        pytest.skip(f"this CPU runs {active} when {level} is requested")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "not at_each_kernel_level"], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(__file__))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout


def test_unknown_isa_value_is_an_error():
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTENSORS_ISA="sse9")
    r = subprocess.run([sys.executable, "-c", "import fastensors.quant as q; q.kernel_isa()"], env=env,
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "FASTENSORS_ISA" in r.stderr
