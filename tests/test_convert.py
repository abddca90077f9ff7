"""fastensors.convert against ml_dtypes / numpy ``astype``, bit for bit, at
every instruction-set level this CPU supports; plus the API and its errors.

The oracle is built once per session (ml_dtypes is the slow part) and each
level runs in its own interpreter with FASTENSORS_ISA set (convert_worker.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest

import fastensors
from conftest import run_python

HERE = os.path.dirname(os.path.abspath(__file__))

NARROW = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F16": np.dtype(np.float16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
}
INTS = ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]
RANDOM_F32 = 10_000_000

# F32 -> F8_E8M0 follows the rule of docs/dtypes.md (the nearest power of two,
# ties going up). ml_dtypes before 0.7 rounded the positive F32 subnormals
# strictly between 2^-127 and 1.5 * 2^-127 up to 2^-126 (code 1) instead; on
# those inputs, and only there, the expected codes come from the rule.
E8M0_DIVERGENT = (0x00400001, 0x005FFFFF)  # inclusive F32 bit range


def e8m0_rule(bits: np.ndarray) -> np.ndarray:
    """F8_E8M0 codes of F32 bit patterns by the written rule, computed on the
    values (frexp in float64, where every F32 is exact), not on the bits."""
    with np.errstate(invalid="ignore"):  # signaling NaNs
        x = np.asarray(bits, np.uint32).view(np.float32).astype(np.float64)
    out = np.full(x.shape, 0xFF, np.uint8)
    ok = np.isfinite(x) & (x > 0)
    m, e = np.frexp(x[ok])             # x = m * 2^e, 0.5 <= m < 1: between 2^(e-1) and 2^e
    k = (e - 1) + (m >= 0.75)          # the nearest power 2^k; the midpoint 1.5 * 2^(e-1) goes up
    code = np.maximum(k + 127, 0)      # below 2^-127 the nearest value is 2^-127 (code 0)
    out[ok] = np.where(code > 254, 0xFF, code).astype(np.uint8)  # past 2^127: NaN
    return out


def e8m0_divergent(bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(bits, np.uint32)
    return (bits >= E8M0_DIVERGENT[0]) & (bits <= E8M0_DIVERGENT[1])


def f32_oracle(bits: np.ndarray, dt: np.dtype) -> np.ndarray:
    """ml_dtypes / numpy's F32 -> ``dt`` result, as ``dt``; for F8_E8M0 the
    documented divergent inputs take the rule's codes, whatever ml_dtypes says."""
    want = np.asarray(bits).view(np.float32).astype(dt)
    if dt == NARROW["F8_E8M0"]:
        odd = e8m0_divergent(bits)
        want.view(np.uint8)[odd] = e8m0_rule(np.asarray(bits)[odd])
    return want


def uint(itemsize: int) -> np.dtype:
    return np.dtype(f"u{itemsize}")


def all_codes(dt: np.dtype) -> np.ndarray:
    """Every bit pattern of a 1- or 2-byte format, as that format."""
    return np.arange(1 << (8 * dt.itemsize), dtype=uint(dt.itemsize)).view(dt)


def f32_boundaries(dt: np.dtype) -> np.ndarray:
    """F32 bit patterns at every rounding decision of ``dt``: each finite
    value, each midpoint between neighbours (and the overflow threshold past
    the largest), one F32 ulp either side of all of them, both signs; plus
    zeros, infinities, NaNs with assorted payloads, and the F32 extremes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = all_codes(dt).astype(np.float64)
    v = np.unique(np.abs(v[np.isfinite(v)]))
    gap_top = v[-1] - v[-2]
    points = np.concatenate([v, (v[:-1] + v[1:]) / 2, [v[-1] + gap_top / 2, v[-1] + gap_top, v[-1] * 2]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bits = points.astype(np.float32).view(np.uint32)
    near = np.concatenate([bits - 1, bits, bits + 1])
    special = np.array(
        [0x00000000, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FA00000, 0x7FBFFFFF, 0x7FFFFFFF, 0x7F802000,
         0x7F801FFF, 0x00000001, 0x007FFFFF, 0x00800000, 0x00400000, 0x00400001, 0x7F7FFFFF, 0x7F000000],
        np.uint32,
    )
    out = np.concatenate([near, special])
    return np.unique(np.concatenate([out, out | np.uint32(0x80000000)]))


def f64_cases(rng) -> np.ndarray:
    special = np.array(
        [0, 0x7FF0000000000000, 0x7FF0000000000001, 0x7FF8000000000000, 0xFFF4000000000000,
         0x7FF0000020000000, 0x7FEFFFFFFFFFFFFF, 0x0000000000000001, 0x36A0000000000000, 0x3690000000000000,
         0x3690000000000001, 0x380FFFFFFFFFFFFF, 0x3810000000000000, 0x47EFFFFFE0000000, 0x47EFFFFFF0000000,
         0x3FF0000010000000, 0x3FF0000030000000, 0x3FF000000FFFFFFF],
        np.uint64,
    )
    # Values near F32's range, where rounding and overflow happen, plus any pattern.
    near = rng.integers(0x3600000000000000, 0x4800000000000000, 1 << 20, dtype=np.uint64)
    anything = rng.integers(0, 2**64 - 1, 1 << 18, dtype=np.uint64, endpoint=True)
    out = np.concatenate([special, near, anything])
    return np.concatenate([out, out | np.uint64(1 << 63)])


@pytest.fixture(scope="session")
def oracle(tmp_path_factory):
    """Inputs (raw bits) and ml_dtypes/numpy results (raw bits), on disk for
    the per-level interpreters."""
    folder = tmp_path_factory.mktemp("convert-oracle")
    rng = np.random.default_rng(20240601)
    cases = []

    def add(name, src_bits: np.ndarray, src_dtype: np.dtype, to_code: str, want: np.ndarray):
        np.save(folder / f"{name}-src.npy", src_bits)
        np.save(folder / f"{name}-want.npy", want.view(uint(want.dtype.itemsize)))
        cases.append({"name": name, "src": f"{name}-src.npy", "want": f"{name}-want.npy",
                      "src_dtype": str(src_dtype), "to": to_code})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow / invalid casts are the point
        random_f32 = rng.integers(0, 2**32, RANDOM_F32, dtype=np.uint32)
        for code, dt in NARROW.items():
            # Narrow -> F32: every input.
            codes = all_codes(dt)
            add(f"{code}-F32", codes.view(uint(dt.itemsize)), dt, "F32", codes.astype(np.float32))
            # F32 -> narrow: random patterns and every boundary.
            x = np.concatenate([f32_boundaries(dt), random_f32])
            add(f"F32-{code}", x, np.dtype(np.float32), code, f32_oracle(x, dt))
        for a, b in (("F16", "BF16"), ("BF16", "F16")):
            codes = all_codes(NARROW[a])
            add(f"{a}-{b}", codes.view(np.uint16), NARROW[a], b, codes.astype(NARROW[b]))
        d = f64_cases(rng)
        add("F64-F32", d, np.dtype(np.float64), "F32", d.view(np.float64).astype(np.float32))
        s = np.concatenate([f32_boundaries(NARROW["F16"]), random_f32[:1 << 20]])
        add("F32-F64", s, np.dtype(np.float32), "F64", s.view(np.float32).astype(np.float64))
        for name in INTS:
            dt = np.dtype(name)
            raw = rng.integers(0, 256, (1 << 18) * dt.itemsize, dtype=np.uint8)
            if dt.itemsize > 1:
                # Every power-of-two neighbourhood, where rounding to F32 happens.
                edges = np.array([(1 << k) + j for k in range(8 * dt.itemsize) for j in (-1, 0, 1)], np.uint64)
                raw = np.concatenate([raw, edges.astype(uint(dt.itemsize)).view(np.uint8)])
            bits = raw.view(uint(dt.itemsize))
            add(f"{name}-F32", bits, dt, "F32", bits.view(dt).astype(np.float32))
    with open(folder / "cases.json", "w") as f:
        json.dump(cases, f)
    return folder


@pytest.mark.parametrize("level", fastensors.supported_isas())
def test_every_level_matches_ml_dtypes(oracle, level):
    env = dict(os.environ, FASTENSORS_ISA=level)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "convert_worker.py"), str(oracle)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["isa"] == level
    assert report["failures"] == []
    assert report["checked"] > 7 * RANDOM_F32


def test_levels_are_ordered_and_scalar_is_last():
    levels = fastensors.supported_isas()
    assert levels[-1] == "scalar"
    assert fastensors.isa() in levels
    known = ["avx512bf16", "avx512", "avx2", "scalar"]
    assert levels == [x for x in known if x in levels]


# -- F32 -> F8_E8M0: the rule, ml_dtypes and torch ----------------------------------


def e8m0_probe() -> np.ndarray:
    """Every positive F32 subnormal, and around every power of two and every
    midpoint 1.5 * 2^k: the exact value and 64 ulps either side, both signs;
    plus zeros, infinities, NaNs and random patterns."""
    k = np.arange(-149, 129, dtype=np.float64)
    anchors = np.concatenate([2.0 ** k, 1.5 * 2.0 ** k])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = anchors.astype(np.float32).view(np.uint32).astype(np.int64)
    near = (a[:, None] + np.arange(-64, 65)[None, :]).reshape(-1)
    near = near[(near >= 0) & (near < 0x7F800000)].astype(np.uint32)
    subnormals = np.arange(1, 0x00800000, dtype=np.uint32)
    special = np.array([0, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0x7F7FFFFF, 0x7F400000, 0x7F3FFFFF],
                       np.uint32)
    rand = np.random.default_rng(7).integers(0, 2**32, 1 << 20, dtype=np.uint32)
    pos = np.concatenate([subnormals, near, special])
    return np.unique(np.concatenate([pos, pos | np.uint32(0x80000000), rand]))


def test_e8m0_rule_by_example():
    f = lambda *v: np.array(v, np.float32).view(np.uint32)  # noqa: E731
    assert e8m0_rule(f(1.0, 1.4999999, 1.5, 3.0, 0.75, 2.0**-126, 2.0**127)).tolist() == [
        127, 127, 128, 129, 127, 1, 254]
    assert e8m0_rule(f(0.0, -0.0, -1.0, np.inf, np.nan, 1.5 * 2.0**127, 3e38)).tolist() == [0xFF] * 7
    sub = np.array([0x00000001, 0x00400000, 0x00400001, 0x005FFFFF, 0x00600000, 0x007FFFFF], np.uint32)
    assert e8m0_rule(sub).tolist() == [0, 0, 0, 0, 1, 1]


def test_e8m0_ml_dtypes_differs_from_the_rule_only_where_documented():
    """Holds ml_dtypes, the oracle of every other F32 -> F8_E8M0 input, to the
    rule: any version may differ only on the documented subnormal window, and
    there only in the one known way (0.6 and earlier: code 1)."""
    x = e8m0_probe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = x.view(np.float32).astype(ml_dtypes.float8_e8m0fnu).view(np.uint8)
    rule = e8m0_rule(x)
    odd = e8m0_divergent(x)
    assert odd.sum() == E8M0_DIVERGENT[1] - E8M0_DIVERGENT[0] + 1
    bad = np.nonzero((got != rule) & ~odd)[0]
    assert bad.size == 0, f"ml_dtypes {ml_dtypes.__version__}: {bad.size} new differences, first {x[bad[0]]:#x}"
    window = np.unique(got[odd]).tolist()
    assert window in ([0], [1]), window  # 0: the rule (0.7 and later); 1: earlier versions


@pytest.mark.parametrize("level", fastensors.supported_isas())
def test_e8m0_matches_the_rule_at_every_level(level):
    from fastensors import _core

    x = e8m0_probe()
    out = np.empty(x.size, np.uint8)
    _core.convert(x, "F32", out, "F8_E8M0", isa=level)
    bad = np.nonzero(out != e8m0_rule(x))[0]
    assert bad.size == 0, f"{bad.size} mismatches at {level}, first input {x[bad[0]]:#x}"


def test_e8m0_torch_differs_from_the_rule_only_where_documented():
    """torch's .to(float8_e8m0fnu) uses |x| for negative numbers, gives code 0
    for +-0, and rounds the divergent subnormal window up (as ml_dtypes 0.6
    did); every other input gives the rule's code (docs/dtypes.md)."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch, "float8_e8m0fnu"):
        pytest.skip("this torch has no float8_e8m0fnu")
    x = e8m0_probe()
    t = torch.from_numpy(x.view(np.int32).copy()).view(torch.float32).to(torch.float8_e8m0fnu)
    got = t.view(torch.uint8).numpy()
    a = x & np.uint32(0x7FFFFFFF)
    want = e8m0_rule(a)                  # |x|
    want[a == 0] = 0                     # +-0 -> 2^-127
    want[e8m0_divergent(a)] = 1          # the window rounds up
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, f"torch {torch.__version__}: {bad.size} differences, first {x[bad[0]]:#x}"


# -- the API -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expect",
    [("BF16", ml_dtypes.bfloat16), ("bf16", ml_dtypes.bfloat16), ("bfloat16", ml_dtypes.bfloat16),
     ("f16", np.float16), ("fp16", np.float16), ("F16", np.float16), ("f32", np.float32), ("float32", np.float32),
     ("fp8_e4m3", ml_dtypes.float8_e4m3fn), ("F8_E4M3", ml_dtypes.float8_e4m3fn), ("e4m3", ml_dtypes.float8_e4m3fn),
     ("fp8_e5m2", ml_dtypes.float8_e5m2), ("fp8_e8m0", ml_dtypes.float8_e8m0fnu),
     ("fp8_e4m3fnuz", ml_dtypes.float8_e4m3fnuz), ("fp8_e5m2fnuz", ml_dtypes.float8_e5m2fnuz),
     (ml_dtypes.bfloat16, ml_dtypes.bfloat16), (np.dtype(np.float16), np.float16), (np.float64, np.float64),
     ("float8_e4m3fn", ml_dtypes.float8_e4m3fn), ("f64", np.float64)],
)
def test_dtype_spellings(name, expect):
    x = np.linspace(-3, 3, 7, dtype=np.float32)
    y = fastensors.convert(x, name)
    assert y.dtype == np.dtype(expect)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert y.view(uint(y.itemsize)).tobytes() == x.astype(expect).view(uint(y.itemsize)).tobytes()


def test_torch_dtype_names():
    torch = pytest.importorskip("torch")
    x = np.ones(4, np.float32)
    assert fastensors.convert(x, torch.bfloat16).dtype == np.dtype(ml_dtypes.bfloat16)
    assert fastensors.convert(x, torch.float8_e4m3fn).dtype == np.dtype(ml_dtypes.float8_e4m3fn)


def test_out_is_written_and_returned():
    x = np.arange(1000, dtype=np.float32).reshape(10, 100) / 7
    out = np.full((10, 100), 99, ml_dtypes.bfloat16)
    got = fastensors.convert(x, "bf16", out=out)
    assert got is out
    assert out.view(np.uint16).tobytes() == x.astype(ml_dtypes.bfloat16).view(np.uint16).tobytes()


@pytest.mark.parametrize("view", ["transpose", "reverse", "step", "column", "scalar", "empty"])
def test_non_contiguous_input(view):
    base = np.random.default_rng(1).standard_normal((40, 60)).astype(np.float32)
    x = {
        "transpose": base.T,
        "reverse": base[::-1, ::-1],
        "step": base[::3, 1::2],
        "column": base[:, 5],
        "scalar": base[3, 4],
        "empty": base[:, 60:],
    }[view]
    x = np.asarray(x)
    want = x.astype(ml_dtypes.bfloat16)
    got = fastensors.convert(x, "bf16")
    assert got.shape == x.shape and got.flags.c_contiguous
    assert got.view(np.uint16).tobytes() == want.view(np.uint16).tobytes()


def test_large_strided_input_uses_threads_and_matches():
    base = np.random.default_rng(2).integers(0, 2**16, (2048, 4096), dtype=np.uint16).view(ml_dtypes.bfloat16)
    x = base[:, ::2]
    got = fastensors.convert(x, np.float32)
    assert np.array_equal(got.view(np.uint32), x.astype(np.float32).view(np.uint32))


def test_byte_swapped_and_read_only_input():
    x = np.arange(10, dtype=">f4") / 3
    got = fastensors.convert(x, "f16")
    assert np.array_equal(got, x.astype(np.float16))
    ro = np.frombuffer(np.arange(8, dtype=np.float32).tobytes(), np.float32)
    assert not ro.flags.writeable
    assert np.array_equal(fastensors.convert(ro, "f64"), ro.astype(np.float64))


def test_same_dtype_is_a_copy():
    x = np.arange(10, dtype=np.float32)
    y = fastensors.convert(x, "F32")
    assert y is not x and np.array_equal(x, y)
    y[0] = 5
    assert x[0] == 0


def test_overlapping_out_is_safe():
    buf = np.arange(64, dtype=np.float16)
    want = buf.astype(ml_dtypes.bfloat16)
    fastensors.convert(buf, "bf16", out=buf.view(ml_dtypes.bfloat16))  # in place, same width
    assert buf.view(np.uint16).tobytes() == want.view(np.uint16).tobytes()


def test_lists_and_scalars():
    assert fastensors.convert([1.0, 2.5], "f32").dtype == np.float32  # list -> float64 -> F32
    assert fastensors.convert(np.float32(1.5), "bf16").shape == ()


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src, dst",
    [(np.float32, "i32"), (np.float64, "bf16"), (ml_dtypes.bfloat16, "fp8_e4m3"), (np.int32, "f16"),
     (np.complex64, "f32"), (ml_dtypes.float8_e4m3fn, "f16")],
)
def test_unsupported_pairs(src, dst):
    x = np.zeros(3, src)
    with pytest.raises(fastensors.UnsupportedConversion) as info:
        fastensors.convert(x, dst)
    assert isinstance(info.value, TypeError) and isinstance(info.value, fastensors.SafetensorError)
    assert "cannot convert" in str(info.value)


def test_unsupported_source_dtype():
    with pytest.raises(fastensors.UnsupportedConversion, match="complex128"):
        fastensors.convert(np.zeros(2, np.complex128), "f32")
    with pytest.raises(fastensors.UnsupportedConversion):
        fastensors.convert(np.zeros(2, ml_dtypes.float4_e2m1fn), "f32")


@pytest.mark.parametrize("bad", ["bf17", "float128", object, "torch.foo"])
def test_unknown_target_dtype(bad):
    with pytest.raises(fastensors.UnknownDtypeName) as info:
        fastensors.convert(np.zeros(2, np.float32), bad)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "out, match",
    [(np.zeros(4, np.float32), "dtype"), (np.zeros(5, ml_dtypes.bfloat16), "shape"),
     (np.zeros((2, 2), ml_dtypes.bfloat16), "shape"), (np.zeros(8, ml_dtypes.bfloat16)[::2], "C-contiguous"),
     ([0, 0, 0, 0], "numpy.ndarray"), (np.zeros(4, ">f2"), "dtype")],
)
def test_bad_out(out, match):
    with pytest.raises(fastensors.InvalidOutput, match=match) as info:
        fastensors.convert(np.zeros(4, np.float32), "bf16", out=out)
    assert isinstance(info.value, ValueError) and isinstance(info.value, fastensors.SafetensorError)


def test_read_only_out():
    out = np.zeros(4, ml_dtypes.bfloat16)
    out.flags.writeable = False
    with pytest.raises(fastensors.InvalidOutput, match="read-only"):
        fastensors.convert(np.zeros(4, np.float32), "bf16", out=out)


@pytest.mark.parametrize("level", fastensors.supported_isas())
def test_forced_level_is_used(level):
    proc = run_python("import fastensors; print(fastensors.isa())", env={"FASTENSORS_ISA": level.upper()})
    assert proc.stdout.strip() == level


def test_forced_unknown_level_is_a_clear_error_at_first_use():
    # Import and plain reading keep working; the first conversion raises.
    code = """
import numpy as np, fastensors
assert fastensors.numpy.load(fastensors.numpy.save({"a": np.ones(2, np.float32)}))["a"].sum() == 2
for call in (fastensors.isa, lambda: fastensors.convert(np.ones(2, np.float32), "bf16")):
    try:
        call()
    except fastensors.UnsupportedIsa as e:
        assert isinstance(e, RuntimeError)
        print(e)
    else:
        raise SystemExit("no error")
"""
    proc = run_python("import fastensors.numpy\n" + code, env={"FASTENSORS_ISA": "bogus"})
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "FASTENSORS_ISA='bogus'" in lines[0] and "scalar" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("code", list(NARROW))
def test_every_f32_input_against_ml_dtypes(code):
    # All 2^32 F32 bit patterns at the active level. (The C++ test of the same
    # name checks every other level against the scalar kernels on all 2^32.)
    dt = NARROW[code]
    chunk = 1 << 26
    base = np.arange(chunk, dtype=np.uint32)
    out = np.empty(chunk, dt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range((1 << 32) // chunk):
            x = (base + np.uint32(k * chunk)).view(np.float32)
            fastensors.convert(x, code, out=out)
            want = f32_oracle(x.view(np.uint32), dt).view(uint(dt.itemsize))
            bad = np.nonzero(out.view(uint(dt.itemsize)) != want)[0]
            assert bad.size == 0, f"{bad.size} mismatches, first input {x.view(np.uint32)[bad[0]]:#x}"


def test_stub_declares_the_conversion_bindings():
    # The generated _core.pyi must parse (a keyword as a parameter name would
    # not) and declare every conversion binding.
    import ast

    path = os.path.join(os.path.dirname(fastensors.__file__), "_core.pyi")
    if not os.path.exists(path):
        pytest.skip("no generated stub next to the installed package")
    with open(path) as fh:
        tree = ast.parse(fh.read())
    declared = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"isa", "supported_isas", "can_convert", "convert", "convert_file"} <= declared


def test_fork_after_threaded_conversion_does_not_hang():
    # GNU OpenMP hangs a child that starts a parallel region after its parent
    # ran one; fastensors converts on one thread in such a child instead.
    code = """
import os, numpy as np, fastensors
x = np.ones(1 << 23, np.float32)   # 48 MiB read + written: threaded
fastensors.convert(x, "bf16")
pid = os.fork()
if pid == 0:
    y = fastensors.convert(x, "bf16")
    os._exit(0 if y.view(np.uint16)[-1] == 0x3F80 else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert fastensors.convert(x, "f16")[-1] == 1.0   # the parent keeps its threads
print("ok")
"""
    proc = run_python(code, timeout=60)
    assert proc.stdout.strip() == "ok"


def test_binding_level_override_matches():
    from fastensors import _core

    x = np.random.default_rng(5).integers(0, 2**32, 5000, dtype=np.uint32)
    outs = []
    for level in fastensors.supported_isas():
        out = np.empty(x.size, np.uint8)
        _core.convert(x, "F32", out, "F8_E5M2", isa=level)
        outs.append(out.tobytes())
    assert len(set(outs)) == 1
    with pytest.raises(fastensors.UnsupportedIsa):
        _core.convert(x, "F32", np.empty(x.size, np.uint8), "F8_E5M2", isa="sse9")
