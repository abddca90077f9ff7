"""fastensors builds torch tensors only from Python-level torch APIs: a tiny
numpy-backed stand-in installed as ``torch`` (in a subprocess, so the real
torch of this process is untouched) is enough to load files."""

from __future__ import annotations

import textwrap

import numpy as np
import safetensors.numpy as ref_np

from conftest import run_python, sample_array

# The stand-in: dtype objects, a Tensor over a numpy array, from_numpy,
# empty, Tensor.view(dtype) / reshape / to. Any other attribute of the module
# is an AttributeError, and is recorded so the test can show what was wanted.
STANDIN = textwrap.dedent(
    '''
    """A numpy-backed stand-in for the parts of torch that fastensors may use."""
    import ml_dtypes
    import numpy as _np

    MISSING = []
    CALLS = []


    class dtype:
        def __init__(self, name, np_dtype):
            self.name = name
            self.np = _np.dtype(np_dtype)

        def __repr__(self):
            return "standin." + self.name


    _DTYPES = {
        "bool": _np.bool_, "uint8": _np.uint8, "int8": _np.int8, "uint16": _np.uint16, "int16": _np.int16,
        "uint32": _np.uint32, "int32": _np.int32, "uint64": _np.uint64, "int64": _np.int64,
        "float16": _np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": _np.float32,
        "float64": _np.float64, "complex64": _np.complex64, "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
        "float8_e5m2": ml_dtypes.float8_e5m2, "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
        "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz, "float8_e8m0fnu": ml_dtypes.float8_e8m0fnu,
        "float4_e2m1fn_x2": _np.uint8,  # two packed values per byte
    }
    for _n, _d in _DTYPES.items():
        globals()[_n] = dtype(_n, _d)
    _BY_NP = {}
    for _n in _DTYPES:
        if _n != "float4_e2m1fn_x2":
            _BY_NP.setdefault(_np.dtype(_DTYPES[_n]), globals()[_n])


    class device:
        def __init__(self, spec="cpu"):
            self.type = str(spec).split(":")[0]

        def __eq__(self, other):
            return isinstance(other, device) and other.type == self.type

        def __hash__(self):
            return hash(self.type)


    strided = object()


    class Tensor:
        def __init__(self, array, dt):
            self._a = array
            self.dtype = dt
            self.device = device("cpu")

        @property
        def shape(self):
            return tuple(self._a.shape)

        def view(self, dt):
            CALLS.append("view")
            a = self._a
            if a.ndim == 0 or a.shape[-1] * a.dtype.itemsize % dt.np.itemsize:
                raise RuntimeError("bad view")
            return Tensor(a.view(dt.np), dt)

        def reshape(self, *shape):
            CALLS.append("reshape")
            if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
                shape = tuple(shape[0])
            return Tensor(self._a.reshape(shape), self.dtype)

        def to(self, where):
            CALLS.append("to")
            if str(getattr(where, "type", where)).split(":")[0] != "cpu":
                raise RuntimeError("the stand-in has only a CPU")
            return self

        def numpy(self):
            return self._a

        def numel(self):
            return int(self._a.size)


    def from_numpy(array):
        CALLS.append("from_numpy")
        if not isinstance(array, _np.ndarray):
            raise TypeError("expected an ndarray")
        return Tensor(array, _BY_NP[array.dtype])


    def empty(shape, dtype=None):
        CALLS.append("empty")
        return Tensor(_np.empty(tuple(shape), dtype.np), dtype)


    def __getattr__(name):
        MISSING.append(name)
        raise AttributeError(f"the torch stand-in has no attribute {name!r}")
    '''
)

CHECK = textwrap.dedent(
    '''
    import os, sys
    sys.path.insert(0, os.environ["STANDIN_DIR"])
    import numpy as np, ml_dtypes
    import torch
    assert torch.__file__.startswith(os.environ["STANDIN_DIR"]), torch.__file__
    import fastensors, fastensors.torch as fpt
    assert "torch._C" not in sys.modules  # the real torch was never imported

    path = os.environ["FILE"]
    expected = dict(np.load(os.environ["EXPECTED"]))
    special = {"bf": ml_dtypes.bfloat16, "f8": ml_dtypes.float8_e4m3fn}

    def want(name):
        a = expected[name]
        return a.view(special[name]) if name in special else a

    def same(t, name):
        assert isinstance(t, torch.Tensor), type(t)
        a, b = t.numpy(), want(name)
        assert a.dtype == b.dtype and a.shape == b.shape, (name, a.dtype, b.dtype, a.shape, b.shape)
        assert a.tobytes() == b.tobytes(), name

    for backend in ("mmap", "pread"):
        loaded = fpt.load_file(path, backend=backend)
        assert sorted(loaded) == sorted(expected), sorted(loaded)
        for name, t in loaded.items():
            same(t, name)
        with fastensors.safe_open(path, framework="pt", backend=backend) as f:
            for name in f.keys():
                same(f.get_tensor(name), name)
            t = f.get_slice("m")[1:, ::-1]
            assert t.numpy().tolist() == expected["m"][1:, ::-1].tolist()
            assert f.get_slice("m")[2, 3].numpy().tolist() == expected["m"][2, 3].tolist()
    with open(path, "rb") as fh:
        for name, t in fpt.load(fh.read()).items():
            same(t, name)
    assert not torch.MISSING, torch.MISSING
    assert {"from_numpy", "view", "reshape", "empty"} <= set(torch.CALLS), torch.CALLS
    print("ok", len(torch.CALLS))
    '''
)


def test_load_through_a_torch_standin(tmp_path):
    standin_dir = tmp_path / "standin"
    standin_dir.mkdir()
    (standin_dir / "torch.py").write_text(STANDIN)
    tensors = {
        "m": np.arange(20, dtype=np.float32).reshape(4, 5),
        "i": sample_array(np.int64, (3,)),
        "u": sample_array(np.uint16, (2, 2)),
        "b": np.array([True, False, True]),
        "s": np.array(7.25, np.float64),
        "e": np.zeros((0, 3), np.int8),
        "c": sample_array(np.complex64, (2,)),
    }
    # bf16 / fp8 written by the reference from their bit patterns
    import ml_dtypes

    bf = sample_array(ml_dtypes.bfloat16, (2, 3), seed=3)
    f8 = sample_array(ml_dtypes.float8_e4m3fn, (4,), seed=4)
    path = tmp_path / "file.safetensors"
    ref_np.save_file({**tensors, "bf": bf, "f8": f8}, path)
    stored = {**tensors, "bf": bf.view(np.uint16), "f8": f8.view(np.uint8)}
    np.savez(tmp_path / "expected.npz", **stored)
    proc = run_python(
        CHECK,
        env={"STANDIN_DIR": str(standin_dir), "FILE": str(path), "EXPECTED": str(tmp_path / "expected.npz")},
    )
    assert proc.stdout.startswith("ok")
