"""Runs one family of hostile-argument cases against the public API and
prints a JSON report; run by tests/test_hostile_api.py in a subprocess, so
that a segfault or abort is seen as the process dying rather than taking
pytest with it.

    python hostile_worker.py FAMILY:EXAMPLES[,FAMILY:EXAMPLES...]

Before each case its description goes to stderr (flushed), so the last line
there names the case that killed the process. Every case must either
succeed with a correct result (checked against an oracle where one exists)
or raise one of the exceptions the family allows: a fastensors
SafetensorError, or the standard exceptions that are that API's contract
(TypeError for non-str metadata and names, IndexError for out-of-range
indices, ...). Anything else is a failure, reported with the case."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import traceback

import ml_dtypes
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import fastensors
import fastensors.numpy as fnp
from fastensors.quant import SCHEMES

SE = fastensors.SafetensorError
CASES = [0]
SUCCEEDED = [0]  # cases that returned (and then had their result checked)
FAILURES: list = []


# -- running and recording cases ------------------------------------------------------------

def describe(v, depth: int = 0) -> str:
    """A short, deterministic description of an argument (arrays summarised)."""
    if isinstance(v, np.ndarray):
        flags = ("C" if v.flags.c_contiguous else "strided") + ("" if v.flags.writeable else ",ro")
        return f"ndarray({v.dtype.str if v.dtype.byteorder in '<>' else v.dtype}, {v.shape}, {flags})"
    if depth < 3 and isinstance(v, (list, tuple)):
        inner = ", ".join(describe(x, depth + 1) for x in v[:8]) + (", ..." if len(v) > 8 else "")
        return ("[%s]" if isinstance(v, list) else "(%s)") % inner
    if depth < 3 and isinstance(v, dict):
        return "{" + ", ".join(f"{describe(k, depth + 1)}: {describe(x, depth + 1)}" for k, x in
                               list(v.items())[:8]) + "}"
    r = repr(v)
    return r if len(r) <= 120 else r[:117] + "..."


def attempt(label: str, fn, allowed=(SE,), check=None):
    """Run one case; returns its result, or None when it raised."""
    CASES[0] += 1
    sys.stderr.write(f"CASE {label}\n")
    sys.stderr.flush()
    try:
        result = fn()
    except allowed:
        return None
    except Exception as exc:  # anything else is a failure of the contract
        FAILURES.append({"case": label, "error": f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:600],
                         "traceback": traceback.format_exc()[-1500:]})
        return None
    SUCCEEDED[0] += 1
    if check is not None:
        try:
            check(result)
        except Exception as exc:
            FAILURES.append({"case": label, "error": f"wrong result: {type(exc).__name__}: {exc}"[:600],
                             "traceback": traceback.format_exc()[-1500:]})
    return result


def expect(label: str, fn, exc_type, match: str = ""):
    """A deterministic case that must raise ``exc_type`` (message containing ``match``)."""
    CASES[0] += 1
    sys.stderr.write(f"CASE {label}\n")
    sys.stderr.flush()
    try:
        fn()
    except exc_type as exc:
        if match not in str(exc):
            FAILURES.append({"case": label, "error": f"message {str(exc)!r} lacks {match!r}"})
        return
    except Exception as exc:
        FAILURES.append({"case": label, "error": f"raised {type(exc).__name__}: {exc}, expected {exc_type.__name__}"})
        return
    FAILURES.append({"case": label, "error": f"did not raise {exc_type.__name__}"})


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    assert a.tobytes() == b.tobytes(), "different values"


FAMILIES = {}


def family(fn):
    FAMILIES[fn.__name__] = fn
    return fn


def prop(examples: int, *strategies):
    """A hypothesis property that records instead of raising (so every
    example runs): derandomized, no database, no shrinking."""
    def deco(fn):
        return settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                        phases=[Phase.explicit, Phase.generate],
                        suppress_health_check=list(HealthCheck))(given(*strategies)(fn))
    return deco


# -- quantization: reference sizes, independent of fastensors.quant ---------------------------

GGML_BYTES = {"q8_0": 34, "q4_0": 18, "q4_1": 20, "q5_0": 22, "q5_1": 24}
INT_BITS = {"int8": 8, "int4": 4, "int2": 2}
FLOATS = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
SMALL_DIMS = [0, 1, 2, 3, 31, 32, 33, 64, 96, 128, 130, 256]
HUGE_DIMS = [-1, -32, 2**31, 2**40, 2**62, 2**63, 2**64 + 32]
BAD_VALUES = [None, 1.5, "32", True, b"x", [32], object()]


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def reference_parts(scheme, shape, group_size, granularity):
    """{part: (allowed dtypes, count) or None} for a consistent tensor, or
    None when the arguments cannot describe one."""
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        return None
    if not all(is_int(d) and d >= 0 for d in shape):
        return None
    if math.prod(max(d, 1) for d in shape) >= 2**63:
        return None
    cols = shape[-1] if shape else 1
    rows = math.prod(shape) // cols if cols else math.prod(shape[:-1])
    n = rows * cols
    if granularity is not None and scheme != "fp8_e4m3":
        return None
    if scheme in GGML_BYTES:
        if not (group_size is None or (is_int(group_size) and group_size == 32)) or cols % 32:
            return None
        return {"data": ((np.uint8,), rows * cols // 32 * GGML_BYTES[scheme]), "scales": None, "zero_points": None}
    if scheme in INT_BITS:
        if not is_int(group_size) or group_size <= 0 or cols % group_size:
            return None
        bits, groups = INT_BITS[scheme], rows * (cols // group_size)
        data = ((np.int8,), n) if bits == 8 else ((np.int32,), rows * ((cols * bits + 31) // 32))
        return {"data": data, "scales": (FLOATS, groups), "zero_points": ((np.int8,), groups), "zp_optional": True}
    if scheme == "nf4":
        if not (group_size is None or (is_int(group_size) and group_size == 64)):
            return None
        return {"data": ((np.uint8,), (n + 1) // 2), "scales": ((np.float32,), -(-n // 64)), "zero_points": None}
    if granularity not in ("tensor", "channel", "block") or group_size is not None:
        return None
    count = {"tensor": 1, "channel": rows, "block": -(-rows // 128) * -(-cols // 128)}[granularity]
    return {"data": ((np.uint8, ml_dtypes.float8_e4m3fn), n), "scales": (FLOATS, count), "zero_points": None}


def part_fits(spec, value, optional=False) -> bool:
    if spec is None or (optional and value is None):
        return value is None
    dtypes, count = spec
    return (isinstance(value, np.ndarray) and value.dtype in [np.dtype(d) for d in dtypes]
            and value.size == count and value.flags.c_contiguous)


def make_part(draw, spec, fallback_dtype):
    """A hostile or honest array for one part of a quantized tensor."""
    dtypes, count = spec if spec is not None else ((fallback_dtype,), 8)
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if count > 1 << 22:  # cannot build the honest one: a small array instead
        count = draw(st.sampled_from([0, 1, 18, 1000]))
    kind = draw(st.sampled_from(["exact"] * 6 + ["short", "long", "empty", "half", "wrong-dtype", "strided",
                                                 "byteswapped", "2d", "readonly", "none", "list", "scalar"]))
    n = {"short": max(count - 1, 0), "long": count + 1, "empty": 0, "half": count // 2}.get(kind, count)
    if kind == "none":
        return None
    if kind == "list":
        return [0] * min(n, 64)
    if kind == "scalar":
        return np.zeros((), dtype)
    rng = np.random.default_rng(n)
    a = rng.integers(0, 256, size=n * dtype.itemsize, dtype=np.uint8).view(dtype)
    if dtype in FLOATS:  # finite scales, so outputs can be compared
        a = (rng.random(n, dtype=np.float32) + 0.5).astype(dtype)
    if kind == "wrong-dtype":
        a = a.astype(draw(st.sampled_from([np.float64, np.int16, np.uint8, np.int32, np.float32])))
    elif kind == "strided":
        b = np.zeros(2 * n, dtype)
        b[::2] = a
        a = b[::2]
    elif kind == "byteswapped" and dtype.itemsize > 1:
        a = a.astype(dtype.newbyteorder(">")) if dtype.kind in "iuf" else a
    elif kind == "2d" and n % 2 == 0 and n:
        a = a.reshape(2, n // 2)
    elif kind == "readonly":
        a.flags.writeable = False
    return a


@st.composite
def quantized_args(draw):
    scheme = draw(st.sampled_from(list(SCHEMES) * 3 + ["q3_k", "", "INT4", 4, None]))
    ndim = draw(st.integers(0, 3))
    dims = st.one_of(st.sampled_from(SMALL_DIMS), st.sampled_from(SMALL_DIMS + HUGE_DIMS + [1.5, "4"]))
    shape = tuple(draw(st.lists(dims, min_size=ndim, max_size=ndim)))
    default_group = {"int8": shape[-1] if shape and is_int(shape[-1]) else 1, "int4": 32, "int2": 32,
                     "nf4": 64}.get(scheme if isinstance(scheme, str) else "", 32)
    if scheme == "fp8_e4m3":
        default_group = None
    group_size = draw(st.one_of(st.just(default_group), st.just(default_group),
                                st.sampled_from([32, 64, 16, 0, -32, 3, 2**40, 2**70] + BAD_VALUES)))
    granularity = None
    if scheme == "fp8_e4m3":
        granularity = draw(st.sampled_from(["tensor", "channel", "block", "row", None, 1]))
    elif draw(st.integers(0, 9)) == 0:
        granularity = "tensor"
    dtype = draw(st.sampled_from([np.float32, np.float16, ml_dtypes.bfloat16] * 3
                                 + [np.float64, np.int8, "F32", "bogus", None, object]))
    ref = reference_parts(scheme, shape, group_size, granularity)
    if ref is None:  # inconsistent anyway: parts sized for a nearby valid tensor, or random
        ref = reference_parts(scheme if scheme in SCHEMES else "int8", (4, 32), 32 if scheme != "nf4" else 64,
                              "tensor" if scheme == "fp8_e4m3" else None) or {}
    data = make_part(draw, ref.get("data"), np.uint8)
    scales = None if ref.get("scales") is None and draw(st.integers(0, 3)) else make_part(
        draw, ref.get("scales"), np.float32)
    zero_points = None
    if ref.get("zero_points") is not None and draw(st.booleans()):
        zero_points = make_part(draw, ref["zero_points"], np.int8)
    elif draw(st.integers(0, 9)) == 0:
        zero_points = np.zeros(4, np.int8)
    return scheme, shape, dtype, data, scales, zero_points, group_size, granularity


def check_dequantized(qt, shape):
    def check(res):
        assert isinstance(res, np.ndarray) and res.dtype == np.float32 and res.shape == tuple(shape), \
            (type(res), getattr(res, "dtype", None), getattr(res, "shape", None))
    return check


@family
def quantized_tensor(examples: int) -> None:
    """QuantizedTensor(...) with lying parts, then dequantize / values."""
    @prop(examples, quantized_args(), st.sampled_from(["fresh", "out", "F16", "BF16", "F64", "bogus"]))
    def run(args, how):
        scheme, shape, dtype, data, scales, zero_points, group_size, granularity = args
        label = "QuantizedTensor" + describe(args)
        qt = attempt(label, lambda: fastensors.QuantizedTensor(*args))
        ref = reference_parts(scheme, shape, group_size, granularity)
        try:
            ok_dtype = np.dtype(dtype) in FLOATS
        except TypeError:
            ok_dtype = False
        consistent = (ref is not None and ok_dtype and part_fits(ref["data"], data)
                      and part_fits(ref["scales"], scales)
                      and part_fits(ref["zero_points"], zero_points, optional=ref.get("zp_optional", False)))
        if (qt is not None) != consistent:
            FAILURES.append({"case": label, "error": "accepted an inconsistent tensor" if qt is not None
                             else "rejected a consistent tensor"})
        if qt is None:
            return
        fresh = attempt("dequantize " + label, lambda: fastensors.dequantize(qt), check=check_dequantized(qt, shape))
        if how == "out" and fresh is not None:
            out = np.full(qt.shape, np.nan, np.float32)

            def into_out(r):
                assert r is out, "did not return out"
                same(r, fresh)

            attempt("dequantize(out=) " + label, lambda: fastensors.dequantize(qt, out=out), check=into_out)
        elif how != "fresh":
            attempt(f"dequantize({how}) " + label, lambda: qt.dequantize(how))
        def values_shape(v):
            assert v.shape == tuple(shape), v.shape

        attempt("values " + label, lambda: qt.values(), check=values_shape)

    run()


@family
def quantized_mutated(examples: int) -> None:
    """Valid tensors from quantize() with one attribute replaced afterwards."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((8, 256)).astype(np.float32)  # 256: a K-quant super-block
    made = {s: fastensors.quantize(base, s, **({"group_size": 32} if s in ("int4", "int2") else {}))
            for s in SCHEMES}
    made["int4-asym"] = fastensors.quantize(base, "int4", group_size=32, symmetric=False)
    hostile = {
        "data": lambda qt: [qt.data[:1], qt.data.reshape(-1)[::2], qt.data.astype(np.float32), None, [1, 2],
                            np.concatenate([qt.data.reshape(-1), qt.data.reshape(-1)])],
        "scales": lambda qt: [None if qt.scales is not None else np.ones(4, np.float32),
                              np.ones(1, np.float32), np.ones(10**6, np.float16), np.ones(3, np.float64), "s"],
        "zero_points": lambda qt: [np.zeros(1, np.int8), np.zeros(10**6, np.int8), np.zeros(16, np.int32), 7],
        "shape": lambda qt: [(4096, 4096), (8, 256), (16, 128), (8, 64), (), (8,), (-8, 128), (2**40, 128),
                             (8, 2**62), ("8", 128), None],
        "group_size": lambda qt: [0, -1, 7, 2**64, None, 2.0, "32", 16],
        "granularity": lambda qt: ["block", "row", None, 3, "channel"],
        "scheme": lambda qt: ["q4_1", "int2", "nf4", "fp8_e4m3", "bogus", None],
        "dtype": lambda qt: [np.float64, object, "F16", None],
    }
    choices = [(s, attr, i) for s in made for attr, make in hostile.items() for i in range(len(make(made[s])))]

    @prop(examples, st.sampled_from(choices), st.booleans())
    def run(choice, use_out):
        s, attr, i = choice
        import copy
        qt = copy.copy(made[s])
        value = hostile[attr](qt)[i]
        setattr(qt, attr, value)
        label = f"{s} with {attr}={describe(value)}"
        if use_out:
            out = np.zeros(qt.shape if isinstance(qt.shape, tuple) and all(is_int(d) and 0 <= d < 1 << 14
                                                                           for d in qt.shape) else (8, 128),
                           np.float32)
            attempt("dequantize(out=) " + label, lambda: fastensors.dequantize(qt, out=out))
        else:
            attempt("dequantize " + label, lambda: fastensors.dequantize(qt))
        attempt("values " + label, lambda: qt.values())

    run()


@st.composite
def arrays_to_quantize(draw):
    dtype = draw(st.sampled_from([np.float32, np.float16, ml_dtypes.bfloat16] * 4 +
                                 [np.float64, np.int8, np.uint8, np.bool_, np.complex64, object]))
    if draw(st.booleans()):  # shapes every scheme takes, so that successes are checked too
        shape = draw(st.sampled_from([(4, 128), (2, 256), (3, 2, 128), (1, 512)]))
    else:
        ndim = draw(st.integers(0, 3))
        shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 5, 32, 64, 128, 130]), min_size=ndim,
                                    max_size=ndim)))
    n = math.prod(shape)
    if n > 1 << 16:
        shape, n = (4, 64), 256
    a = (np.random.default_rng(n).standard_normal(n) * 3).reshape(shape)
    a = a.astype(dtype) if dtype is not object else a.astype(object)
    layout = draw(st.sampled_from(["c"] * 5 + ["fortran", "strided", "byteswapped", "readonly", "nan", "list"]))
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=-1)[..., ::2]
    elif layout == "byteswapped" and a.dtype.kind == "f" and a.dtype.itemsize > 1 and dtype is not object:
        a = a.astype(a.dtype.newbyteorder(">"))
    elif layout == "readonly":
        a.flags.writeable = False
    elif layout == "nan" and a.size and a.dtype.kind == "f":
        a = a.copy()
        a.reshape(-1)[0] = np.nan
    elif layout == "list":
        return a.tolist()
    return a


@family
def quantize_args(examples: int) -> None:
    """quantize() with hostile arrays, schemes, group sizes and flags."""
    @prop(examples, arrays_to_quantize(), st.sampled_from(list(SCHEMES) * 2 + ["q3_k", "", None, 7]),
          st.sampled_from([None] * 8 + [32, 64, 128, 0, -64, 3, 2**40, 1.5, "32", True]),
          st.sampled_from([None] * 8 + [True, False, 0, "yes"]),
          st.sampled_from([None] * 8 + ["tensor", "channel", "block", "row", 0]))
    def run(array, scheme, group_size, symmetric, granularity):
        label = f"quantize({describe(array)}, {scheme!r}, group_size={group_size!r}, symmetric={symmetric!r}, " \
                f"granularity={granularity!r})"
        shape = np.shape(array)

        def check(qt):
            assert isinstance(qt, fastensors.QuantizedTensor) and qt.shape == shape
            res = fastensors.dequantize(qt)
            assert res.shape == shape and res.dtype == np.float32

        attempt(label, lambda: fastensors.quantize(array, scheme, group_size=group_size, symmetric=symmetric,
                                                   granularity=granularity), check=check)

    run()


@family
def quality_args(examples: int) -> None:
    """quality() with mismatched sizes, dtypes and layouts."""
    @prop(examples, arrays_to_quantize(), arrays_to_quantize())
    def run(ref, cand):
        label = f"quality({describe(ref)}, {describe(cand)})"

        def check(r):
            assert set(r) == {"cosine", "sqnr_db", "rmse", "max_abs_err"}, r
            assert np.asarray(ref).size == np.asarray(cand).size

        attempt(label, lambda: fastensors.quality(ref, cand), check=check)

    run()


# -- conversion -------------------------------------------------------------------------------

CONVERT_TARGETS = ["F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "bf16", "fp8_e4m3", np.float32,
                   ml_dtypes.bfloat16, "I8", "U8", "BOOL", "F4", "bogus", "", None, 7, [1], object]


@family
def convert_out(examples: int) -> None:
    """convert() with hostile targets and out= arrays."""
    @prop(examples, arrays_to_quantize(), st.sampled_from(CONVERT_TARGETS),
          st.sampled_from(["none", "none", "exact", "exact", "small", "large", "wrong-dtype", "strided",
                           "readonly", "overlap", "list", "flat", "fortran", "0d"]))
    def run(array, target, out_kind):
        label = f"convert({describe(array)}, {target!r}, out={out_kind})"
        try:
            want = fastensors.convert(array, target)
        except (SE, TypeError, ValueError):
            want = None
        out = None
        if out_kind != "none":
            a = np.asarray(array)
            dt = want.dtype if want is not None else np.dtype(np.float32)
            shape = a.shape
            if out_kind == "exact":
                out = np.empty(shape, dt)
            elif out_kind == "small":
                out = np.empty((max(a.size - 1, 0),), dt)
            elif out_kind == "large":
                out = np.empty((a.size + 1,), dt)
            elif out_kind == "wrong-dtype":
                out = np.empty(shape, np.float64 if dt != np.float64 else np.float32)
            elif out_kind == "strided":
                out = np.empty(shape + (2,), dt)[..., 0]
            elif out_kind == "readonly":
                out = np.empty(shape, dt)
                out.flags.writeable = False
            elif out_kind == "overlap" and isinstance(array, np.ndarray) and array.dtype == dt and array.flags.writeable:
                out = array
            elif out_kind == "list":
                out = [0.0] * a.size
            elif out_kind == "flat":
                out = np.empty(a.size, dt)
            elif out_kind == "fortran":
                out = np.asfortranarray(np.empty(shape, dt))
            elif out_kind == "0d":
                out = np.empty((), dt)

        def check(res):
            assert want is not None, "converted where the plain call raised"
            if out is not None:
                assert res is out, "did not return out"
            same(np.ascontiguousarray(res), np.ascontiguousarray(want))

        attempt(label, lambda: fastensors.convert(array, target, out=out), allowed=(SE,), check=check)

    run()


@family
def convert_file_args(examples: int) -> None:
    """convert_file() with hostile dtypes, regexes and paths."""
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "in.safetensors")
    fnp.save_file({"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(3, dtype=np.int64),
                   "c": np.ones(5, np.float16)}, src)

    @prop(examples, st.sampled_from(["BF16", "F16", "F8_E4M3"] * 3 + CONVERT_TARGETS),
          st.sampled_from([None] * 6 + ["a", "^b$", "[", "(?P<", 5, ""]),
          st.sampled_from([None] * 6 + ["c", ")", 5]),
          st.sampled_from([src] * 8 + [os.path.join(tmp, "missing"), tmp, "", "a\0b", 3, None]))
    def run(target, only, keep, path):
        dst = os.path.join(tmp, "out.safetensors")
        label = f"convert_file({path!r}, {target!r}, only={only!r}, keep={keep!r})"

        def check(report):
            with fastensors.safe_open(dst, "np") as f:
                assert set(f.keys()) == {"a", "b", "c"}

        attempt(label, lambda: fastensors.convert_file(path, dst, target, only=only, keep=keep, durable=False),
                allowed=(SE, TypeError, ValueError), check=check)

    run()


# -- reading ----------------------------------------------------------------------------------

INDEX_ATOMS = [0, 1, 2, -1, -3, 5, 7, 100, -100, 2**31, 2**63, -2**63 - 1, 2**64, np.int64(1), np.uint8(2),
               Ellipsis, None, 1.5, "a", True, False, [0, 1], np.array([0, 1]), np.array([True, False, True]),
               b"\x00"]
SLICE_PARTS = [None, 0, 1, 2, -1, -7, 3, 100, -100, 2**63, -2**64, 1.5]


@st.composite
def indices(draw):
    def atom():
        if draw(st.booleans()):
            return draw(st.sampled_from(INDEX_ATOMS))
        return slice(draw(st.sampled_from(SLICE_PARTS)), draw(st.sampled_from(SLICE_PARTS)),
                     draw(st.sampled_from(SLICE_PARTS + [0, 0, -2])))
    if draw(st.integers(0, 3)) == 0:
        return atom()
    return tuple(atom() for _ in range(draw(st.integers(0, 5))))


def reading_file(tmp: str) -> tuple:
    tensors = {
        "f32": np.arange(120, dtype=np.float32).reshape(4, 5, 6),
        "bf16": np.arange(7).astype(ml_dtypes.bfloat16),
        "scalar": np.array(3, np.int64),
        "empty": np.zeros((0, 3), np.float16),
        "u8": np.arange(24, dtype=np.uint8).reshape(3, 2, 4),
        "bool": np.array([True, False, True, True, False]),
    }
    path = os.path.join(tmp, "r.safetensors")
    fnp.save_file(tensors, path, metadata={"k": "v"})
    return path, tensors


READ_ALLOWED = (SE, IndexError, TypeError, ValueError)


@family
def get_slice_indices(examples: int) -> None:
    """safe_open(...).get_slice(name)[index] with hostile indices, against numpy."""
    path, tensors = reading_file(tempfile.mkdtemp())
    handles = {b: fastensors.safe_open(path, "np", backend=b) for b in ("mmap", "pread")}

    @prop(examples, st.sampled_from(sorted(tensors)), indices(), st.sampled_from(["mmap", "pread"]),
          st.sampled_from([None, None, "F32", "bogus"]))
    def run(name, index, backend, dtype):
        full = tensors[name]
        label = f"get_slice({name!r}, dtype={dtype!r})[{describe(index)}] ({backend})"
        allowed = READ_ALLOWED
        try:
            want = full[index]
        except Exception as exc:  # what numpy raises for this index is fine too (OverflowError, ...)
            want, allowed = None, READ_ALLOWED + (type(exc),)

        def check(got):
            assert want is not None, "sliced where numpy raises"
            got = np.asarray(got)
            w = np.asarray(want)
            if dtype == "F32":
                w = w.astype(np.float32)
            assert got.shape == w.shape, (got.shape, w.shape)
            assert np.array_equal(got.astype(np.float64), w.astype(np.float64), equal_nan=True)

        h = handles[backend]
        attempt(label, lambda: h.get_slice(name, dtype=dtype)[index], allowed=allowed, check=check)

    run()


@family
def safe_open_args(examples: int) -> None:
    """safe_open with hostile frameworks, backends, devices, names and dtypes."""
    tmp = tempfile.mkdtemp()
    path, tensors = reading_file(tmp)
    junk = os.path.join(tmp, "junk.safetensors")
    with open(junk, "wb") as fh:
        fh.write(b"\xff" * 64)
    names = sorted(tensors) + ["missing", "", "__metadata__", 5, None, b"f32", ("f32",), "\ud800", "f32\0"]

    # Honest values weigh more, so that most cases break one or two things at a time.
    @prop(examples, st.sampled_from([path] * 8 + [junk, tmp, os.path.join(tmp, "nope"), 3, None, b"x", ""]),
          st.sampled_from(["np"] * 6 + ["numpy", "tf", "jax", "", None, 1]),  # torch: its own tests
          st.sampled_from(["cpu"] * 6 + ["cuda:0", "meta", 0, None]),
          st.sampled_from(["mmap"] * 4 + ["pread"] * 3 + ["bogus", None, 1]),
          st.sampled_from(sorted(tensors) * 3 + names),
          st.sampled_from([None] * 6 + ["F32", "BF16", "F16", "bogus", np.float64, 7]))
    def run(filename, framework, device, backend, name, dtype):
        label = (f"safe_open({filename!r}, {framework!r}, {device!r}, backend={backend!r})"
                 f".get_tensor({name!r}, dtype={dtype!r})")

        def go():
            with fastensors.safe_open(filename, framework, device, backend=backend) as f:
                f.keys(), f.metadata(), f.offset_keys()
                if name in f.keys() if isinstance(name, str) else False:
                    f.tensor_info(name)
                return np.asarray(f.get_tensor(name, dtype=dtype))

        def check(got):
            want = tensors[name]
            assert got.shape == want.shape

        attempt(label, go, allowed=READ_ALLOWED + (NotImplementedError,), check=check)

    run()


# -- framework adapters (flax, tensorflow, paddle, mlx) ----------------------------------------

ADAPTERS = {"flax": ("jax", "flax"), "tf": ("tensorflow", "tensorflow"), "mlx": ("mlx.core", "mlx"),
            "paddle": ("paddle", "paddle")}


def adapter_cases(examples: int, names) -> None:
    """Hostile arguments for each adapter's save/save_file/load/load_file and
    safe_open(framework=...).get_slice; an adapter whose framework is missing
    must raise FrameworkNotInstalled (naming the extra), from import and from
    safe_open alike."""
    import importlib
    import importlib.util

    from fastensors.format.frameworks import get_framework

    tmp = tempfile.mkdtemp()
    path, tensors = reading_file(tmp)
    data = open(path, "rb").read()
    f8 = os.path.join(tmp, "f8.safetensors")
    fnp.save_file({"ok": np.ones(2, np.float32), "e8m0": np.ones(2, ml_dtypes.float8_e8m0fnu),
                   "f6": np.zeros(4, ml_dtypes.float6_e2m3fn)}, f8)
    installed = []
    for fw in names:
        module, adapter = ADAPTERS[fw]
        if importlib.util.find_spec(module.split(".")[0]) is None:
            expect(f"import fastensors.{adapter} without {module}",
                   lambda: importlib.import_module(f"fastensors.{adapter}"), fastensors.FrameworkNotInstalled,
                   f"fastensors[")
            expect(f"safe_open(framework={fw!r}) without {module}", lambda: fastensors.safe_open(path, fw),
                   fastensors.FrameworkNotInstalled, "pip install")
        else:
            installed.append((fw, importlib.import_module(f"fastensors.{adapter}")))
    if not installed:
        return

    def as_numpy(fw, t):
        return get_framework(fw).to_numpy("t", t)

    good = {name: get_framework(fw).from_numpy(np.ascontiguousarray(tensors["f32"]), "F32") for fw, _ in installed
            for name in [fw]}
    datas = [data] * 4 + [b"", b"\x00" * 8, data[:-3], data[:40], bytearray(data), memoryview(data), "text", None, 5,
                          open(f8, "rb").read()]
    files = [path] * 4 + [f8, os.path.join(tmp, "missing"), tmp, None, 3, b"x", ""]
    backends = ["mmap"] * 3 + ["pread"] * 2 + ["bogus", None]
    dtypes = [None] * 4 + ["F32", "bf16", "bogus", 7]
    selects = [{}] * 4 + [{"include": "f32"}, {"prefix": 5}, {"remap": {"f32": "g"}}, {"bogus": 1}]
    metas = [None] * 3 + [{"k": "v"}, {"k": 5}, {5: "v"}, "text"]
    devices = ["cpu"] * 4 + ["cuda:0", 0, None, "meta"]
    indices_ = [slice(None), (0, slice(1, 3)), (Ellipsis, -1), 99, (slice(None, None, -1),), "x", None, [0, 2]]

    @prop(examples, st.sampled_from(range(len(installed))), st.sampled_from(range(4)),
          st.sampled_from(datas), st.sampled_from(files), st.sampled_from(backends), st.sampled_from(dtypes),
          st.sampled_from(selects), st.sampled_from(metas), st.sampled_from(devices), st.sampled_from(indices_),
          st.sampled_from(sorted(tensors) + ["e8m0", "missing"]))
    def run(which, verb, blob, filename, backend, dtype, select, meta, device, index, name):
        fw, mod = installed[which]
        if verb == 0:
            def check(got):
                assert sorted(got) == sorted(tensors)
                for k, v in got.items():
                    assert tuple(v.shape) == tensors[k].shape, k
            attempt(f"fastensors.{fw}.load({describe(blob)})", lambda: mod.load(blob),
                    allowed=(SE, TypeError), check=check)
        elif verb == 1:
            def check(got):
                for k, v in got.items():
                    want = tensors.get(k, tensors.get("f32"))
                    assert tuple(v.shape) == want.shape, k
            attempt(f"fastensors.{fw}.load_file({filename!r}, backend={backend!r}, dtype={dtype!r}, **{select!r})",
                    lambda: mod.load_file(filename, backend=backend, dtype=dtype, **select),
                    allowed=(SE, TypeError), check=check)
        elif verb == 2:
            arg = {"t": good[fw]} if meta is None or select == {} else {5: good[fw]} if select.get("prefix") else \
                {"t": np.zeros(3)} if "bogus" in select else {"t": None} if "remap" in select else [("t", 1)]
            out = os.path.join(tmp, "out.safetensors") if filename == path else filename

            def go():
                if out is None or isinstance(out, (int, bytes)) or out == f8:
                    return mod.save(arg, metadata=meta)
                mod.save_file(arg, out, metadata=meta)
                return open(out, "rb").read()

            def check(blob_out):
                back = fnp.load(blob_out)
                assert back["t"].tobytes() == tensors["f32"].tobytes()
            attempt(f"fastensors.{fw} save({describe(arg)}, {out!r}, metadata={meta!r})", go,
                    allowed=(SE, TypeError), check=check)
        else:
            def go():
                with fastensors.safe_open(path if filename != f8 else f8, fw, device) as f:
                    return as_numpy(fw, f.get_slice(name)[index])

            def check(got):
                want = tensors[name][index]
                assert got.shape == np.shape(want)
            attempt(f"safe_open({fw!r}, device={device!r}).get_slice({name!r})[{index!r}]", go,
                    allowed=READ_ALLOWED, check=check)

    run()


@family
def framework_adapters(examples: int) -> None:
    """flax, tensorflow and mlx (paddle cannot share a process with tensorflow)."""
    adapter_cases(examples, ["flax", "tf", "mlx"])


@family
def paddle_adapter(examples: int) -> None:
    adapter_cases(examples, ["paddle"])


# -- writing ----------------------------------------------------------------------------------

SPEC_DTYPES = ["float32", "F32", "uint8", "bfloat16", "float4_e2m1fn_x2", "F4", "bool", "float128", "", 5, None]
SHAPES = [[4], [2, 2], [], [0], [5], [3], [2**64], [2**63, 0], [-1], [1.5], ["4"], [1] * 70, None, 4]
KEYS = ["a", "b", "", "__metadata__", "é", "\ud800", 5, None, b"a", ("a",), 1.5]
METADATA = [None, {}, {"k": "v"}, {"k": 1}, {1: "v"}, {"k": None}, {"k": b"v"}, {"\ud800": "v"}, [("k", "v")],
            "k=v", {"__metadata__": "x"}, {"k" * 10000: "v" * 100000}]


@family
def serialize_specs(examples: int) -> None:
    """serialize / serialize_file / TensorSpec with lying shapes and sizes,
    odd keys and non-str metadata; successes must deserialize back."""
    tmp = tempfile.mkdtemp()
    buf = np.arange(64, dtype=np.uint8)  # every spec points inside this

    @prop(examples, st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(SPEC_DTYPES), st.sampled_from(SHAPES),
                                       st.sampled_from([0, 1, 4, 8, 16, 32, -1, 2**64, 1.5])),
                             min_size=0, max_size=4),
          st.sampled_from(METADATA), st.booleans())
    def run(specs, metadata, to_file):
        label = f"serialize({describe(specs)}, metadata={describe(metadata)}, file={to_file})"
        built = {}
        for key, dtype, shape, data_len in specs:
            spec = attempt("TensorSpec" + describe((dtype, shape, data_len)),
                           lambda: fastensors.TensorSpec(dtype=dtype, shape=shape, data_ptr=buf.ctypes.data,
                                                         data_len=data_len),
                           allowed=(SE, TypeError, ValueError))
            if spec is None:
                return
            try:
                built[key] = spec
            except TypeError:  # unhashable key
                return
        target = os.path.join(tmp, "s.safetensors")

        def go():
            if to_file:
                fastensors.serialize_file(built, target, metadata=metadata, durable=False)
                with open(target, "rb") as fh:
                    return fh.read()
            return fastensors.serialize(built, metadata=metadata)

        def check(raw):
            back = dict(fastensors.deserialize(raw))
            assert set(back) == set(built)
            for k, spec in built.items():
                assert back[k]["shape"] == spec.shape and back[k]["data"] == buf.tobytes()[:spec.data_len]

        attempt(label, go, allowed=(SE, TypeError, ValueError), check=check)

    run()


@family
def numpy_save(examples: int) -> None:
    """fastensors.numpy.save / save_file with odd keys, values and metadata."""
    tmp = tempfile.mkdtemp()
    values = [np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(6, dtype=np.float32).reshape(2, 3).T,
              np.zeros(0, np.int8), np.array(1.5), np.arange(4, dtype=">i4"), np.ones(3, ml_dtypes.bfloat16),
              np.ones(3, object), np.ones(2, np.complex128), [1, 2], "x", None, np.ones((2, 2), np.float16)[::2]]

    @prop(examples, st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(range(len(values)))), max_size=4),
          st.sampled_from(METADATA), st.booleans())
    def run(items, metadata, to_file):
        try:
            d = {k: values[i] for k, i in items}
        except TypeError:
            return
        label = f"numpy.save({describe(d)}, metadata={describe(metadata)}, file={to_file})"
        target = os.path.join(tmp, "n.safetensors")

        def go():
            if to_file:
                fnp.save_file(d, target, metadata=metadata, durable=False)
                with open(target, "rb") as fh:
                    return fh.read()
            return fnp.save(d, metadata=metadata)

        def check(raw):
            back = fnp.load(raw)
            assert set(back) == set(d)
            for k, v in d.items():
                assert np.array_equal(back[k], np.asarray(v)), k

        attempt(label, go, allowed=(SE, TypeError, ValueError), check=check)

    run()


@family
def save_sharded_args(examples: int) -> None:
    """save_sharded with hostile shard sizes, patterns and metadata; successes
    must load back through open_checkpoint."""
    root = tempfile.mkdtemp()
    sd = {f"layer{i}.w": np.full((i + 1, 8), i, np.float32) for i in range(4)}
    sd["tiny"] = np.zeros((), np.int8)

    @prop(examples, st.sampled_from([0, 1, 64, 100, 10**9, -1, 2**70, "5GB", "1KB", "0", "-3MB", "junk", "1.5MB",
                                     1.5, None, [], True]),
          st.sampled_from(["model{suffix}.safetensors"] * 6 + ["x{suffix}", "nosuffix", "{suffix}{suffix}",
                                                               "sub/x{suffix}.safetensors", "{suffix}",
                                                               "../up{suffix}.safetensors", "", "{other}{suffix}",
                                                               "{0}{suffix}", "{suffix:>99999}", 5]),
          st.sampled_from([None] * 4 + [{}] * 2 + METADATA[2:8]), st.sampled_from([0] * 6 + [1, 2]))
    def run(size, pattern, metadata, keys):
        d = dict(sd)
        if keys == 1:
            d[5] = np.zeros(2, np.float32)
        elif keys == 2:
            d["bad"] = "not an array"
        out = tempfile.mkdtemp(dir=tempfile.mkdtemp(dir=root))  # "../" stays inside root
        label = f"save_sharded(max_shard_size={size!r}, filename_pattern={pattern!r}, metadata={metadata!r}, " \
                f"keys={keys})"

        def check(plan):
            written = set()
            for root_dir, _dirs, files in os.walk(os.path.dirname(out)):  # "../" from out lands here
                written.update(os.path.relpath(os.path.join(root_dir, f), out) for f in files)
            assert all(not w.startswith("..") for w in written), f"wrote outside the directory: {sorted(written)}"
            assert set(plan.filename_to_tensors) <= written, (plan.filename_to_tensors, written)
            seen = {}
            for fname, names in plan.filename_to_tensors.items():
                with fastensors.safe_open(os.path.join(out, fname), "np") as f:
                    assert sorted(f.keys()) == sorted(names), (fname, f.keys(), names)
                    seen.update({k: f.get_tensor(k) for k in names})
            assert set(seen) == set(d), (sorted(seen), sorted(d))
            for k, v in d.items():
                assert np.array_equal(seen[k], v), k
            if pattern == "model{suffix}.safetensors":
                assert set(fastensors.open_checkpoint(out, "np").keys()) == set(d)

        attempt(label, lambda: fastensors.save_sharded(d, out, max_shard_size=size, filename_pattern=pattern,
                                                       metadata=metadata, durable=False),
                allowed=(SE, TypeError, ValueError), check=check)

    run()


@family
def read_plans(examples: int) -> None:
    """The read engine: Checkpoint.prefetch with odd name lists (then every
    tensor read back against what was written), and _core.ReadPlan /
    ReadJob given hostile offsets, sizes, arrays and indices."""
    from fastensors import _core

    tmp = tempfile.mkdtemp()
    path, tensors = reading_file(tmp)
    names = sorted(tensors)
    name_lists = [names, names[::-1], names + names, [], ["f32", "f32"], ["nope"], [5], None, "f32", [None],
                  [b"f32"], names[:2], ["f32", "nope"], 7]
    offsets = [0, 1, 7, 4095, 2**31, 2**63 - 1, 2**64 - 1, 2**64, -1, None, 1.5]
    sizes = [0, 1, 8, 100, 2**40, 2**64 - 1, -3, "8"]
    arrays = [np.zeros(16, np.uint8), np.zeros(0, np.uint8), np.zeros(16, np.float32), np.zeros((4, 4), np.uint8),
              np.zeros(32, np.uint8)[::2], np.frombuffer(bytes(16), np.uint8), None, b"abc"]

    def prefetched(names_arg):
        with fastensors.open_checkpoint(path, "np") as ckpt:
            ckpt.prefetch(names_arg)
            return {k: ckpt.get_tensor(k) for k in ckpt.keys()}

    def check_all(got):
        for k, v in tensors.items():
            same(np.asarray(got[k]), v)

    @prop(examples, st.sampled_from(range(len(name_lists))), st.sampled_from(offsets), st.sampled_from(sizes),
          st.sampled_from(range(len(arrays))), st.sampled_from(["mmap", "pread"]),
          st.sampled_from([-1, 0, 1, 2, 2**64]))
    def run(li, offset, size, ai, backend, entry):
        attempt(f"Checkpoint.prefetch({name_lists[li]!r})", lambda: prefetched(name_lists[li]),
                allowed=(SE, TypeError), check=check_all)

        def plan_read():
            f = _core.File(path, backend)
            plan = _core.ReadPlan()
            arr = arrays[ai]
            plan.read(f, offset, arr)
            plan.prefetch(f, offset, size)
            job = _core.ReadJob(plan)
            try:
                job.wait()
                job.wait_entry(entry)
            finally:
                job.close()
            return arr

        def check_read(arr):
            with open(path, "rb") as fh:
                fh.seek(offset)
                want = np.frombuffer(fh.read(arr.size), np.uint8)
            same(arr, want)

        attempt(f"ReadPlan.read/prefetch({backend}, offset={offset!r}, size={size!r}, {describe(arrays[ai])}, "
                f"wait_entry({entry}))", plan_read, allowed=(SE, TypeError, OverflowError), check=check_read)

    run()


@family
def checkpoint_read_into(examples: int) -> None:
    """Checkpoint.read_into with hostile names, destinations, boxes and
    dtypes, against numpy slicing (and ml_dtypes casts) of what was written."""
    tmp = tempfile.mkdtemp()
    _, tensors = reading_file(tmp)
    sharded = os.path.join(tmp, "sharded")
    fnp.save_file(tensors, os.path.join(tmp, "single.safetensors"))
    fastensors.save_sharded(tensors, sharded, max_shard_size=200)
    names = sorted(tensors) + ["nope", "", "f32\x00"]
    outs = [lambda n: np.zeros(n, np.uint8), lambda n: np.zeros(max(n - 1, 0), np.uint8),
            lambda n: np.zeros(n + 7, np.uint8), lambda n: np.zeros((n + 3) // 4 + 1, np.float32),
            lambda n: np.zeros(2 * n + 2, np.uint8)[::2], lambda n: np.frombuffer(bytes(n + 1), np.uint8),
            lambda n: bytearray(n), lambda n: bytes(n), lambda n: memoryview(bytearray(n + 4)),
            lambda n: None, lambda n: [0] * n, lambda n: np.zeros((2, n), np.uint8)[:, 0]]
    bounds = st.one_of(st.none(), st.lists(st.sampled_from([0, 1, 2, 3, 5, 6, 7, -1, 2**63, 2**64, 1.5, True, None]),
                                           max_size=4), st.sampled_from(["ab", 3, b"\x00"]))
    dtypes = [None, "F32", "F16", "BF16", "I64", "Q4", 5, "f32", "BOOL"]

    def run_one(where, name, mk, start, stop, dtype):
        with fastensors.open_checkpoint(where, "np") as ckpt:
            shape = tensors[name].shape if name in tensors else ()
            need = int(np.prod(shape, dtype=np.int64)) * 8 + 8
            out = mk(need)
            wrote = ckpt.read_into(name, out, start=start, stop=stop, dtype=dtype)
            return name, out, start, stop, dtype, wrote

    def check(result):
        name, out, start, stop, dtype, wrote = result
        src = tensors[name]
        lo = list(start) if start is not None else [0] * src.ndim
        hi = list(stop) if stop is not None else list(src.shape)
        want = src[tuple(slice(a, b) for a, b in zip(lo, hi))] if src.ndim else src
        if dtype is not None:
            want = want.astype({"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}[dtype])
        raw = np.ascontiguousarray(want).tobytes()
        assert wrote == len(raw), (wrote, len(raw))
        got = bytes(memoryview(out).cast("B")[:wrote]) if not isinstance(out, np.ndarray) else \
            out.reshape(-1).view(np.uint8)[:wrote].tobytes()
        assert got == raw, "different bytes"

    @prop(examples, st.sampled_from(["single.safetensors", "sharded"]), st.sampled_from(names),
          st.sampled_from(range(len(outs))), bounds, bounds, st.sampled_from(dtypes))
    def run(where, name, oi, start, stop, dtype):
        attempt(f"Checkpoint({where}).read_into({name!r}, out#{oi}, start={start!r}, stop={stop!r}, "
                f"dtype={dtype!r})", lambda: run_one(os.path.join(tmp, where), name, outs[oi], start, stop, dtype),
                check=check)

    run()
    for where in ("single.safetensors", "sharded"):
        for name, value in tensors.items():
            for dtype in (None, "F32", "F16", "BF16"):
                if dtype is not None and value.dtype.kind not in "f" and value.dtype != ml_dtypes.bfloat16:
                    continue
                attempt(f"Checkpoint({where}).read_into({name!r}, whole, dtype={dtype!r})",
                        lambda: run_one(os.path.join(tmp, where), name, outs[0], None, None, dtype), check=check)


# -- checkpoints, inspection, renaming ---------------------------------------------------------

class HostileFile:
    """A file-like object that lies in one way (``how``) and is honest otherwise."""

    def __init__(self, data: bytes, how: str):
        import io as _io
        self._b = _io.BytesIO(data)
        self.how = how

    def read(self, n=-1):
        data = self._b.read(n)
        return {"none": None, "str": "x" * len(data), "int": 7, "more": data + b"\0\0", "less": data[:-1],
                "raise": None, "list": [1, 2]}.get(self.how, data) if self.how != "raise" else _boom()

    def seek(self, offset, whence=0):
        if self.how == "seek-raise":
            raise RuntimeError("seek refused")
        pos = self._b.seek(offset, whence)
        return {"seek-none": None, "seek-neg": -4, "seek-str": "0", "seek-float": 1.5}.get(self.how, pos)

    def fileno(self):
        if self.how == "fileno-raise":
            raise RuntimeError("no descriptor")
        return {"fileno-neg": -1, "fileno-huge": 2**40, "fileno-str": "3"}.get(self.how, -1)


def _boom():
    raise RuntimeError("read refused")


HOSTILE_HOWS = ["honest", "none", "str", "int", "more", "less", "raise", "list", "seek-raise", "seek-none",
                "seek-neg", "seek-str", "seek-float", "fileno-raise", "fileno-neg", "fileno-huge", "fileno-str"]


@family
def file_objects_and_urls(examples: int) -> None:
    """safe_open over lying file objects, odd URLs and RemoteOptions, odd
    storage_options: a typed error or the right tensor, never a crash."""
    from fastensors.sources import RemoteOptions

    tmp = tempfile.mkdtemp()
    path, tensors = reading_file(tmp)
    with open(path, "rb") as fh:
        data = fh.read()
    quick = RemoteOptions(retries=1, backoff_s=0.01, deadline_s=5.0, timeout_s=2.0)
    urls = ["nope://x/m.safetensors", "http://", "http://127.0.0.1:1/m.safetensors", "s3://",
            "memory://absent/m.safetensors", "http://[::1", "file://" + path, "://x", "http:///x"]
    option_values = [None, quick, {"retries": 1}, "fast", 3]
    option_kwargs = [{}, {"retries": -1}, {"request_bytes": 0}, {"concurrency": True}, {"deadline_s": float("nan")},
                     {"timeout_s": -1.0}, {"gap_bytes": 2**70}, {"header_bytes": 1}, {"header_bytes": 7},
                     {"window_bytes": 1}, {"request_bytes": 3}]

    @prop(examples, st.sampled_from(HOSTILE_HOWS + ["honest"] * 6 + urls),
          st.sampled_from(option_values), st.sampled_from(option_kwargs),
          st.sampled_from([None] * 4 + [{}, {"anon": True}, [1], "x", {"client_kwargs": 3}]),
          st.sampled_from(sorted(tensors)))
    def run(source, options, option_kw, storage_options, name):
        label = f"safe_open({source!r}, remote={options!r}/{option_kw!r}, storage_options={storage_options!r})"

        def go():
            opts = RemoteOptions(**{**{"retries": 1, "backoff_s": 0.01, "deadline_s": 5.0, "timeout_s": 2.0},
                                    **option_kw}) if option_kw else options
            target = HostileFile(data, source) if source in HOSTILE_HOWS else source
            with fastensors.safe_open(target, "np", remote=opts, storage_options=storage_options) as f:
                return np.asarray(f.get_tensor(name))

        def check(got):
            same(got, np.asarray(tensors[name]))

        attempt(label, go, allowed=(SE, TypeError, ValueError), check=check)

    run()


@family
def checkpoint_paths(examples: int) -> None:
    """open_checkpoint, get_safetensors_metadata, list_safetensors_tensors,
    summary and detect_modality on hostile paths and arguments."""
    tmp = tempfile.mkdtemp()
    good, _ = reading_file(tmp)
    bad_index = os.path.join(tmp, "bad")
    os.mkdir(bad_index)
    with open(os.path.join(bad_index, "model.safetensors.index.json"), "w") as fh:
        fh.write('{"weight_map": {"a": "../r.safetensors", "b": 5}}')
    junk = os.path.join(tmp, "junk")
    os.mkdir(junk)
    with open(os.path.join(junk, "model.safetensors"), "wb") as fh:
        fh.write(b"\x08" + b"\0" * 7 + b"{}")
    paths = [good, tmp, bad_index, junk, os.path.join(tmp, "none"), "", "a\0b", 7, None, b"/", ["x"]]
    funcs = {
        "open_checkpoint": lambda p: fastensors.open_checkpoint(p, "np").keys(),
        "get_safetensors_metadata": fastensors.get_safetensors_metadata,
        "list_safetensors_tensors": fastensors.list_safetensors_tensors,
        "summary": fastensors.summary,
        "detect_modality": lambda p: fastensors.detect_modality(p if not isinstance(p, str) else {"k": p}, p
                                                                 if isinstance(p, str) else None),
    }

    @prop(examples, st.sampled_from(sorted(funcs)), st.sampled_from(paths))
    def run(fname, path):
        attempt(f"{fname}({path!r})", lambda: funcs[fname](path), allowed=(SE, TypeError, ValueError))

    run()


@family
def distributed_args(examples: int) -> None:
    """fastensors.distributed in one process (no process group): StorageWriter,
    StorageReader, save, load and load_tensor_parallel with hostile paths,
    sizes, metadata, state dicts and placements. Successful saves are read
    back with the reference safetensors reader."""
    import warnings

    import torch
    from safetensors.torch import load_file as ref_load_file
    from fastensors import distributed as fd

    warnings.filterwarnings("ignore")  # DCP's "single process" notice
    tmp = tempfile.mkdtemp()
    good = os.path.join(tmp, "good")
    fd.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, good)
    junk = os.path.join(tmp, "junk")
    os.mkdir(junk)
    with open(os.path.join(junk, "model.safetensors"), "wb") as fh:
        fh.write(b"\x08" + b"\0" * 7 + b"{}")
    paths = [good, junk, os.path.join(tmp, "none"), "", "a\0b", 7, None, b"/x", ["x"]]
    sizes = ["5GB", 100, 0, -1, "x", "1.5XB", True, None, 2**70, 1.5]
    metas = [None, {}, {"a": "b"}, {"a": 1}, {1: "a"}, "x", {"__metadata__": "x"}]
    patterns = ["model{suffix}.safetensors", "x", "../{suffix}", "{suffix}{other}", "", 3]
    values = [torch.ones(2, 2), torch.tensor(1, dtype=torch.int64), torch.zeros(0, 3, dtype=torch.bool),
              torch.ones(2).to(torch.float8_e5m2), np.ones(2), 3, "x", None, torch.ones(2, device="meta"),
              torch.ones(4, 4)[:, ::2]]
    keys = ["a", "b.c", "", 5, "__metadata__"]

    def check_saved(out, sd):
        def check(_):
            files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
            got = {}
            for f in files:
                got.update(ref_load_file(os.path.join(out, f)))
            assert set(got) == set(sd), (sorted(got), sorted(sd))
            for k, v in sd.items():
                w = v.contiguous()
                assert got[k].dtype == w.dtype and got[k].shape == w.shape
                assert got[k].reshape(-1).view(torch.uint8).tolist() == w.reshape(-1).view(torch.uint8).tolist(), k
        return check

    counter = [0]

    @prop(examples, st.sampled_from(["writer", "reader", "save", "load", "tp", "convert"]), st.sampled_from(paths),
          st.sampled_from(sizes), st.sampled_from(metas), st.sampled_from(patterns),
          st.lists(st.tuples(st.sampled_from(keys), st.sampled_from(values)), max_size=3))
    def run(kind, path, size, meta, pattern, items):
        sd = dict(items)
        allowed = (SE, TypeError, ValueError)
        if kind == "writer":
            attempt(f"StorageWriter({path!r}, max_shard_size={size!r}, metadata={meta!r}, pattern={pattern!r})",
                    lambda: fd.StorageWriter(path, max_shard_size=size, metadata=meta, filename_pattern=pattern),
                    allowed)
        elif kind == "reader":
            attempt(f"StorageReader({path!r}).read_metadata()", lambda: fd.StorageReader(path).read_metadata(),
                    allowed)
        elif kind == "save":
            counter[0] += 1
            out = os.path.join(tmp, f"out{counter[0]}")
            attempt(f"save({describe(sd)}, max_shard_size={size!r}, metadata={meta!r}, pattern={pattern!r})",
                    lambda: fd.save(sd, out, max_shard_size=size, metadata=meta, filename_pattern=pattern,
                                    durable=False),
                    allowed, check=check_saved(out, sd))
        elif kind == "load":
            attempt(f"load({describe(sd)}, {path!r})", lambda: fd.load(sd, path), allowed)
        elif kind == "convert":
            counter[0] += 1
            out = os.path.join(tmp, f"conv{counter[0]}")
            dtype = meta if isinstance(meta, str) else pattern  # hostile dtypes from the other lists
            attempt(f"distributed.convert_file({path!r}, dtype={dtype!r})",
                    lambda: fd.convert_file(path, out, dtype), allowed)
        else:
            attempt(f"load_tensor_parallel({describe(sd)}, {path!r})",
                    lambda: fd.load_tensor_parallel(sd, path, placements={k: [] for k in list(sd)[:1]}), allowed)

    run()
    for i, sd in enumerate([{"a": values[0], "b": values[1], "c": values[2], "d": values[3]}, {"s": values[9]}, {}]):
        out = os.path.join(tmp, f"det{i}")
        attempt(f"save({describe(sd)})", lambda: fd.save(sd, out, max_shard_size=10), check=check_saved(out, sd))
    expect("load_tensor_parallel(broadcast=True) without a process group",
           lambda: fd.load_tensor_parallel({}, good, broadcast=True), fastensors.InvalidArgument, "initialized")
    expect("load into another dtype", lambda: fd.load({"w": torch.zeros(2, 3, dtype=torch.float64)}, good),
           fastensors.StateDictMismatch, "torch.float32")


@family
def remap_args(examples: int) -> None:
    """Remapper, reindex and safe_open(remap=/include=/prefix=) with odd rules."""
    tmp = tempfile.mkdtemp()
    path, tensors = reading_file(tmp)
    rules = [{"f32": "x"}, {"f32": "u8"}, {"(": "x"}, [("f(3)2", r"\1")], [("a", 5)], 5, None, "f32", {5: "a"},
             lambda k: k.upper(), lambda k: 5, lambda k: "same", [("^", "p.")], [("bad", "\\9")]]

    @prop(examples, st.sampled_from(rules), st.sampled_from([None, "f", "(", 5, ["u8"]]),
          st.sampled_from([None, "b", "", 7]), st.sampled_from([["a.0.x", "a.1.x"], ["a"], [5], None, "abc"]),
          st.sampled_from([0, -1, 2**70, "1", None]))
    def run(rule, include, prefix, keys, start):
        attempt(f"Remapper({describe(rule)})", lambda: fastensors.Remapper(rule) if not callable(rule) else None,
                allowed=(SE, TypeError, ValueError))
        attempt(f"reindex({keys!r}, start={start!r})", lambda: fastensors.reindex(keys, start=start),
                allowed=(SE, TypeError, ValueError))

        def go():
            with fastensors.safe_open(path, "np", remap=rule, include=include, prefix=prefix) as f:
                return {k: f.get_tensor(k) for k in f.keys()}

        attempt(f"safe_open(remap={describe(rule)}, include={include!r}, prefix={prefix!r})", go,
                allowed=(SE, TypeError, ValueError))

    run()


@family
def model_tools(examples: int) -> None:
    """quantize_model / dequantize_model with hostile options on a tiny model."""
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "src")
    os.mkdir(src)
    rng = np.random.default_rng(1)
    fnp.save_file({"model.layers.0.mlp.up_proj.weight": rng.standard_normal((64, 128)).astype(np.float32),
                   "model.norm.weight": np.ones(64, np.float32)}, os.path.join(src, "model.safetensors"))

    @prop(examples, st.sampled_from(["int8", "int4", "nf4", "fp8_e4m3", "q4_0"] * 2 + ["bogus", None, 5]),
          st.sampled_from([None] * 6 + [32, 0, -1, 7, 2**40, "32"]), st.sampled_from([None] * 4 + [True, False]),
          st.sampled_from(["safetensors"] * 4 + ["gguf", "parquet", "bogus", None]),
          st.sampled_from(["5GB"] * 4 + [0, -1, "junk", 1000]),
          st.sampled_from([None] * 6 + [0.5, 2.0, -1.0, "x"]))
    def run(scheme, group_size, symmetric, fmt, size, min_cosine):
        dst = tempfile.mkdtemp(dir=tmp)
        label = (f"quantize_model(scheme={scheme!r}, group_size={group_size!r}, symmetric={symmetric!r}, "
                 f"format={fmt!r}, max_shard_size={size!r}, min_cosine={min_cosine!r})")
        rep = attempt(label, lambda: fastensors.quantize_model(src, dst, scheme=scheme, group_size=group_size,
                                                               symmetric=symmetric, format=fmt, max_shard_size=size,
                                                               min_cosine=min_cosine, overwrite=True, durable=False),
                      allowed=(SE, TypeError, ValueError))
        if rep is not None and fmt in (None, "safetensors"):
            back = tempfile.mkdtemp(dir=tmp)
            attempt("dequantize_model after " + label,
                    lambda: fastensors.dequantize_model(dst, back, max_shard_size=size, overwrite=True,
                                                        durable=False),
                    allowed=(SE, TypeError, ValueError))

    run()


def _tiny_gpt2(d: str) -> None:
    """A 2-layer GPT-2 with a byte-level BPE tokenizer, saved by transformers."""
    import tokenizers
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(["hello world gguf export of a tiny model"] * 20, vocab_size=300, min_frequency=1,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            unk_token="<|endoftext|>")
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=64, n_layer=2, n_head=2, n_positions=32, vocab_size=len(tok),
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(d)


@family
def gguf_args(examples: int) -> None:
    """export_gguf / read_gguf / dequantize_gguf / plan_types with hostile
    paths, recipes, type overrides and files (garbage, truncated, bit-flipped
    GGUF); a successful export must read back to the checkpoint's names."""
    import fastensors.gguf as fg

    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "gpt2")
    os.mkdir(src)
    _tiny_gpt2(src)
    names = set(fastensors.open_checkpoint(src).keys())
    good = os.path.join(tmp, "good.gguf")
    fg.export_gguf(src, good, recipe="q8_0")
    blob = open(good, "rb").read()
    bad_dirs = {}
    for name, files in {"empty": {}, "bad_json": {"config.json": "{not json"},
                        "list_json": {"config.json": "[1, 2]"},
                        "unknown_arch": {"config.json": json.dumps({"architectures": ["FooForBar"]})}}.items():
        d = os.path.join(tmp, name)
        os.mkdir(d)
        for f, text in files.items():
            with open(os.path.join(d, f), "w") as fh:
                fh.write(text)
        bad_dirs[name] = d
    allowed = (SE, TypeError, ValueError, OSError)

    def check_export(out):
        def check(rep):
            assert os.path.isfile(out), "no file after a successful export"
            back = fg.read_gguf(out).state_dict()
            assert set(back) <= names and back, sorted(back)[:5]
        return check

    @prop(examples, st.sampled_from([src] * 6 + [None, 5, os.path.join(tmp, "missing"), good] + list(bad_dirs.values())),
          st.sampled_from(["out"] * 6 + [None, 3, "dir", "missing/x.gguf"]),
          st.sampled_from(["q8_0"] * 3 + ["q4_k_m", "f16", "q2_k", "bogus", None, 5, "Q8_0", ""]),
          st.sampled_from([None] * 6 + [{}, {"token_embd.weight": "bogus"}, {"token_embd.weight": "q4_k"},
                                        {"nope": "f32"}, lambda n, shape: 5, lambda n, shape: None, "f16", [1]]))
    def run(model_dir, out, recipe, types):
        target = {"out": os.path.join(tempfile.mkdtemp(dir=tmp), "m.gguf"), "dir": tmp,
                  "missing/x.gguf": os.path.join(tmp, "missing", "x.gguf")}.get(out, out)
        label = (f"export_gguf({describe(model_dir)}, {describe(target)}, recipe={recipe!r}, "
                 f"types={describe(types) if not callable(types) else 'callable'})")
        attempt(label, lambda: fg.export_gguf(model_dir, target, recipe=recipe, types=types), allowed=allowed,
                check=check_export(target) if isinstance(target, str) and target.endswith(".gguf") else None)
        if isinstance(target, str) and os.path.isdir(os.path.dirname(target) or "."):
            left = [f for f in os.listdir(os.path.dirname(target) or ".") if f.startswith(".") or f.endswith(".tmp")]
            if left:
                FAILURES.append({"case": label, "error": f"left temporary files {left}"})

    run()

    # GGUF files that are not what they claim: read_gguf must refuse them typed.
    rng = np.random.default_rng(3)
    files = {"random": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "empty": b"",
             "magic_only": b"GGUF", "header": blob[:24]}
    for cut in (64, 200, len(blob) // 3, len(blob) // 2, len(blob) - 1):
        files[f"truncated_{cut}"] = blob[:cut]
    for k in range(12):
        b = bytearray(blob)
        for pos in rng.integers(4, min(len(b), 4096), 3):
            b[pos] ^= int(rng.integers(1, 256))
        files[f"flipped_{k}"] = bytes(b)
    for name, data in files.items():
        path = os.path.join(tmp, name + ".gguf")
        with open(path, "wb") as fh:
            fh.write(data)

        def read_all(path=path):
            sd = fg.read_gguf(path).state_dict()
            for v in sd.values():
                np.asarray(v).sum()
            return sd

        attempt(f"read_gguf({name})", read_all, allowed=(SE, ValueError, OSError))
        attempt(f"is_export({name})", lambda path=path: fg.is_export(path), allowed=())
        dst = tempfile.mkdtemp(dir=tmp)
        attempt(f"dequantize_gguf({name})", lambda path=path, dst=dst: fg.dequantize_gguf(path, dst, overwrite=True),
                allowed=(SE, ValueError, OSError))
    for bad in (None, 5, tmp, os.path.join(tmp, "missing.gguf"), b"\x00"):
        attempt(f"read_gguf({describe(bad)})", lambda bad=bad: fg.read_gguf(bad), allowed=(SE, TypeError, ValueError, OSError))
    # plan_types with hostile tensor lists and facts
    facts = fg.ModelFacts(arch="llama", n_layer=2, n_head=4, n_head_kv=2)
    for recipe, tensors, f in (("q4_k_m", [("blk.0.attn_v.weight", (256, 256))], facts),
                               ("q4_k_m", None, facts), ("q4_k_m", [("x", "shape")], facts),
                               ("q4_k_m", [(5, (256, 256))], facts), ("q4_k_m", [("a", (-1, 256))], facts),
                               ("q4_k_m", [("a", (256, 256)), ("a", (256, 256))], facts),
                               ("nope", [("a", (256, 256))], facts), ("q4_k_m", [("a", (256, 256))], None),
                               (None, [], facts), ("q2_k", [("blk.0.ffn_down.weight", (2**40, 2**40))], facts)):
        attempt(f"plan_types({recipe!r}, {describe(tensors)}, {describe(f)})",
                lambda r=recipe, t=tensors, f=f: fg.plan_types(r, t, f), allowed=(SE, TypeError, ValueError))
    for kw in ({"arch": "llama", "n_layer": -1}, {"arch": 5, "n_layer": 2}, {"arch": "llama", "n_layer": "2"},
               {"arch": "llama", "n_layer": 2, "n_expert": -3}):
        attempt(f"ModelFacts({kw})", lambda kw=kw: fg.ModelFacts(**kw), allowed=(SE, TypeError, ValueError))


# -- the cases, deterministic -----------------------------------------------------------

@family
def regressions(examples: int) -> None:
    """Malformed quantized tensors that crashed or read out of bounds."""
    QT = fastensors.QuantizedTensor
    expect("issue repro: q4_0 4096x4096 with 18 bytes",
           lambda: fastensors.dequantize(QT("q4_0", (4096, 4096), np.float32, np.zeros(18, np.uint8), None, None,
                                            32)),
           fastensors.InvalidArgument, "data: expected 9437184 bytes")
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    int4 = fastensors.quantize(x, "int4", group_size=32, symmetric=False)
    nf4 = fastensors.quantize(x, "nf4")
    fp8 = fastensors.quantize(x, "fp8_e4m3", granularity="block")
    expect("short data (int4)", lambda: QT("int4", x.shape, np.float32, int4.data[:10], int4.scales,
                                           int4.zero_points, 32), fastensors.InvalidArgument, "data:")
    expect("short scales (int4)", lambda: QT("int4", x.shape, np.float32, int4.data, int4.scales.reshape(-1)[:12],
                                             int4.zero_points, 32), fastensors.InvalidArgument,
           "scales: expected 512 scale values")
    expect("short zero points (int4)", lambda: QT("int4", x.shape, np.float32, int4.data, int4.scales,
                                                  int4.zero_points.reshape(-1)[:3], 32),
           fastensors.InvalidArgument, "zero_points: expected 512")
    expect("shape larger than data (nf4)", lambda: QT("nf4", (128, 256), np.float32, nf4.data, nf4.scales, None, 64),
           fastensors.InvalidArgument, "data:")
    expect("short absmax (nf4)", lambda: QT("nf4", x.shape, np.float32, nf4.data, nf4.scales[:1], None, 64),
           fastensors.InvalidArgument, "scales:")
    expect("short block scales (fp8)", lambda: QT("fp8_e4m3", x.shape, np.float32, fp8.data,
                                                  fp8.scales.reshape(-1)[:1], None, None, "block"),
           fastensors.InvalidArgument, "scales:")

    def grown():
        qt = fastensors.quantize(x, "q8_0")
        qt.shape = (4096, 4096)  # attributes are checked again before a kernel runs
        return fastensors.dequantize(qt)

    expect("shape enlarged after construction", grown, fastensors.InvalidArgument, "data: expected")
    from fastensors import _core

    expect("core: short data", lambda: _core.ggml_dequantize(_core.GgmlType.q4_0, np.zeros(18, np.uint8),
                                                             np.empty((4096, 4096), np.float32)),
           fastensors.InvalidArgument, "data: expected 9437184 bytes for q4_0 4096x4096")
    expect("core: short scales", lambda: _core.int_dequantize_packed(
        np.zeros((4096, 512), np.int32), 4, np.zeros(12, np.uint16), "F16", None, 32,
        np.empty((4096, 4096), np.float32)),
        fastensors.InvalidArgument, "scales: expected 524288 F16 values for int4 4096x4096 (group 32), got 12")
    expect("core: short output", lambda: _core.nf4_quantize(np.zeros((4, 64), np.uint32), "F32",
                                                            np.empty(10, np.uint8), np.empty(4, np.float32)),
           fastensors.InvalidOutput, "out: expected 128 bytes")
    expect("core: an address is not an array", lambda: _core.ggml_dequantize(
        _core.GgmlType.q4_0, 12345, np.empty((1, 32), np.float32)), TypeError)
    expect("core: a writer spec with an address", lambda: _core.serialize([("a", "U8", [4], 12345, 4)], None),
           fastensors.InvalidArgument, "uint8 array")
    expect("core: writer data shorter than nbytes", lambda: _core.serialize(
        [("a", "U8", [8], np.zeros(4, np.uint8), 8)], None), fastensors.InvalidArgument, "holds 4 bytes")


def main() -> None:
    """argv: FAMILY:EXAMPLES[,FAMILY:EXAMPLES...]; one JSON report line per family."""
    np.seterr(all="ignore")
    for item in sys.argv[1].split(","):
        name, examples = item.split(":")
        CASES[0] = SUCCEEDED[0] = 0
        del FAILURES[:]
        FAMILIES[name](int(examples))
        print(json.dumps({"family": name, "cases": CASES[0], "succeeded": SUCCEEDED[0],
                          "failures": FAILURES[:50], "failure_count": len(FAILURES)}), flush=True)


if __name__ == "__main__":
    main()
