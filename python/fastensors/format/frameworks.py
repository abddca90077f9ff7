"""Framework arrays beyond numpy and torch: jax (flax), tensorflow, paddle and
mlx, with the same interface as ``arrays.py`` (``from_bytes``,
``from_numpy``, ``to_device``), plus ``to_numpy`` for writing and
``check_dtype`` so that a dtype a framework lacks is a typed error naming
the tensor. ``get_framework`` here knows every framework name the reference
accepts.

What is shared and what is copied is in docs/frameworks.md; in short: jax
and paddle take the mapping itself where they can, tensorflow and
mlx copy. Each framework is imported when first asked for, so importing
fastensors needs none of them."""

from __future__ import annotations

import importlib

import numpy as np

from ..errors import DtypeNotInFramework, FrameworkNotInstalled, InvalidArgument
from .arrays import _ALIASES as _BASE_ALIASES, get_framework as _base_framework, NumpyFramework
from .dtypes import NUMPY

_NUMPY = NumpyFramework()

# XLA's CPU client aliases a host buffer only at this alignment; jax copies
# anything less aligned.
XLA_ALIGNMENT = 64


def require(module: str, framework: str, extra: str):
    """``module`` imported, or ``FrameworkNotInstalled`` naming the extra
    (``pip install 'fastensors[extra]'``) that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise FrameworkNotInstalled(
            f"framework={framework!r} needs the {module.split('.')[0]} package, which is not installed"
            f" ({e}); install it with: pip install 'fastensors[{extra}]'"
        ) from e


def _contiguous(arr: np.ndarray) -> np.ndarray:
    # (np.ascontiguousarray would turn a 0-d array into 1-d)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


class _Framework:
    """What every adapter shares: the codes the framework can hold, the typed
    error for the others, and the device rule (CPU only unless overridden)."""

    name = ""
    codes: frozenset = frozenset()

    def check_dtype(self, tensor: str, code: str) -> None:
        if code not in self.codes:
            raise DtypeNotInFramework(
                f"tensor '{tensor}' has dtype {code}, which {self.name} has no dtype for"
                f" ({self.name} holds {', '.join(sorted(self.codes))}); load it with framework='numpy'"
            )

    def from_bytes(self, raw: np.ndarray, code: str, shape):
        """An array of ``code`` and ``shape`` over ``raw`` (uint8)."""
        if code not in self.codes:  # callers name the tensor first (safe_open, adapter.load)
            self.check_dtype("(unnamed)", code)
        return self.from_numpy(_NUMPY.from_bytes(raw, code, shape), code)

    def to_device(self, arr, device):
        if device not in (None, "cpu"):
            raise InvalidArgument(f"{self.name} tensors are loaded on the CPU; device={device!r} is not available")
        return arr


class JaxFramework(_Framework):
    """jax arrays (``framework="flax"`` / ``"jax"``). A buffer aligned to
    ``XLA_ALIGNMENT`` is shared (``jax.device_put`` aliases it and the array
    keeps the mapping alive); any other is copied, as XLA requires. Without
    ``jax_enable_x64``, 64-bit tensors become 32-bit as ``jnp.asarray`` makes
    them (the reference does the same)."""

    name = "jax"
    # F6 has no XLA primitive type.
    codes = frozenset(NUMPY) - {"F6_E2M3", "F6_E3M2"}

    def __init__(self):
        self.jax = require("jax", "flax", "jax")
        self.jnp = require("jax.numpy", "flax", "jax")

    def from_numpy(self, arr: np.ndarray, code: str):
        arr = _contiguous(arr)
        if code in ("I64", "U64", "F64") and not self.jax.config.jax_enable_x64:
            return self.jnp.asarray(arr)  # jax's own narrowing rule
        # device_put keeps a reference to ``arr`` (and so to the mapping) when
        # it aliases the buffer, which XLA does at XLA_ALIGNMENT only.
        return self.jax.device_put(arr)

    def to_numpy(self, tensor: str, t) -> np.ndarray:
        if not isinstance(t, self.jax.Array):
            raise InvalidArgument(f"tensor `{tensor}` must be a jax.Array, not {type(t).__name__}")
        return np.asarray(t)

    def to_device(self, arr, device):
        if device in (None, "cpu"):
            return arr
        if isinstance(device, self.jax.Device):
            return self.jax.device_put(arr, device)
        raise InvalidArgument(f"jax arrays are loaded on the CPU; pass a jax.Device to place them, not {device!r}")


class TensorflowFramework(_Framework):
    """``tf.Tensor`` (``framework="tf"``): ``tf.convert_to_tensor`` copies the
    bytes into a tensorflow buffer (DLPack import copies too)."""

    name = "tensorflow"
    codes = frozenset(NUMPY) - {"F8_E8M0", "F6_E2M3", "F6_E3M2"}

    def __init__(self):
        self.tf = require("tensorflow", "tf", "tensorflow")

    def from_numpy(self, arr: np.ndarray, code: str):
        return self.tf.convert_to_tensor(_contiguous(arr))

    def to_numpy(self, tensor: str, t) -> np.ndarray:
        if isinstance(t, self.tf.Variable):
            t = t.value()
        if not isinstance(t, self.tf.Tensor):
            raise InvalidArgument(f"tensor `{tensor}` must be a tf.Tensor, not {type(t).__name__}")
        return np.asarray(t.numpy())  # a 0-d tensor's .numpy() is a numpy scalar



class PaddleFramework(_Framework):
    """``paddle.Tensor`` (``framework="paddle"``): the mapping is shared
    through DLPack (the tensor keeps it alive). BF16 and FP8 are DLPack views
    of same-width integers reinterpreted with ``Tensor.view(dtype)``.
    Paddle's DLPack import reads uint16 as bfloat16, so U16 is refused.
    (Not ``paddle.base.core.frombuffer``, the reference's route: freeing some
    tensors made from it aborts the process inside paddle, "The deleter of
    the pointer is not found"; the reference's paddle slices die of it.)"""

    name = "paddle"
    codes = frozenset({"BOOL", "U8", "I8", "I16", "U32", "I32", "U64", "I64", "F16", "BF16", "F32", "F64", "C64",
                       "F8_E4M3", "F8_E5M2"})
    _CARRIER = {"BF16": (np.int16, "bfloat16"), "F8_E4M3": (np.int8, "float8_e4m3fn"),
                "F8_E5M2": (np.int8, "float8_e5m2")}
    _FROM_PADDLE = {"bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2"}

    def __init__(self):
        self.paddle = require("paddle", "paddle", "paddle")

    def from_numpy(self, arr: np.ndarray, code: str):
        paddle = self.paddle
        shape = list(arr.shape)
        if arr.size == 0:  # DLPack cannot carry an empty buffer into paddle
            return paddle.empty(shape, dtype=self._CARRIER.get(code, (None, str(arr.dtype)))[1])
        arr = _contiguous(arr)
        if not arr.flags.writeable:  # DLPack exports only writable numpy arrays
            arr = arr.copy()
        carrier = self._CARRIER.get(code)
        if carrier is None:
            return paddle.utils.dlpack.from_dlpack(arr)
        t = paddle.utils.dlpack.from_dlpack(arr.view(carrier[0]))
        return t.view(getattr(paddle, carrier[1]))

    def to_numpy(self, tensor: str, t) -> np.ndarray:
        paddle = self.paddle
        if not isinstance(t, paddle.Tensor):
            raise InvalidArgument(f"tensor `{tensor}` must be a paddle.Tensor, not {type(t).__name__}")
        if not t.is_contiguous():
            raise InvalidArgument(f"tensor `{tensor}` is not contiguous; call .contiguous() before saving it")
        name = str(t.dtype).split(".")[-1]
        arr = t.cpu().numpy()
        code = self._FROM_PADDLE.get(name)
        if code is not None:  # paddle hands these out as same-width integers
            arr = arr.view(NUMPY[code])
        return arr

    def to_device(self, t, device):
        if device in (None, "cpu"):
            return t
        if isinstance(device, int):
            device = f"gpu:{device}"
        device = str(device).replace("cuda", "gpu")
        try:
            return t.to(device)
        except (ValueError, RuntimeError) as e:  # paddle's words for a device it lacks
            raise InvalidArgument(f"paddle cannot place tensors on device={device!r}: {e}") from None


class MlxFramework(_Framework):
    """``mx.array`` (``framework="mlx"``): ``mx.array`` copies (mlx owns its
    buffers). F64 becomes float32 as ``mx.array`` makes it (the reference
    does the same); FP8 and sub-byte floats have no mlx dtype."""

    name = "mlx"
    codes = frozenset({"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "BF16", "F32", "F64",
                       "C64"})

    def __init__(self):
        self.mx = require("mlx.core", "mlx", "mlx")

    def from_numpy(self, arr: np.ndarray, code: str):
        mx = self.mx
        arr = _contiguous(arr)
        if code == "BF16":  # through the bit pattern: exact whatever numpy knows of bfloat16
            return mx.array(arr.view(np.uint16)).view(mx.bfloat16)
        return mx.array(arr)

    def to_numpy(self, tensor: str, t) -> np.ndarray:
        mx = self.mx
        if not isinstance(t, mx.array):
            raise InvalidArgument(f"tensor `{tensor}` must be an mlx.core.array, not {type(t).__name__}")
        if t.dtype == mx.bfloat16:  # numpy's buffer protocol has no bfloat16
            return np.asarray(t.view(mx.uint16)).view(NUMPY["BF16"])
        return np.asarray(t)

    def to_device(self, arr, device):
        if device in (None, "cpu", "gpu", "mps"):  # unified memory: mlx places work, not arrays
            return arr
        raise InvalidArgument(f"mlx arrays have no device {device!r}")


_CLASSES = {"jax": JaxFramework, "tensorflow": TensorflowFramework, "paddle": PaddleFramework,
            "mlx": MlxFramework}
_ALIASES = {"flax": "jax", "jax": "jax", "tf": "tensorflow", "tensorflow": "tensorflow", "paddle": "paddle",
            "mlx": "mlx"}
_CACHE: dict = {}


def get_framework(name):
    """The array builder of framework ``name``: every name the reference
    accepts ("np"/"numpy", "pt"/"torch"/"pytorch", "flax"/"jax", "tf"/
    "tensorflow", "paddle", "mlx"). Raises ``FrameworkNotInstalled`` (naming
    the extra) when that framework is missing, ``InvalidArgument`` for an
    unknown name."""
    key = _ALIASES.get(str(name).lower())
    if key is None:
        if str(name).lower() in _BASE_ALIASES:
            return _base_framework(name)
        raise InvalidArgument(f"framework {name!r} is not supported (use one of 'numpy'/'np', 'pt'/'torch',"
                              " 'flax'/'jax', 'tf'/'tensorflow', 'paddle', 'mlx')")
    fw = _CACHE.get(key)
    if fw is None:
        fw = _CACHE[key] = _CLASSES[key]()
    return fw


_MODULES = {"jax": "jax", "jaxlib": "jax", "tensorflow": "tensorflow", "paddle": "paddle", "mlx": "mlx"}


def framework_of(array):
    """The framework of ``array`` among those here (by the module of its
    type), or None for numpy, torch and anything else."""
    key = _MODULES.get(type(array).__module__.split(".")[0])
    return None if key is None else get_framework(key)


def numpy_of(framework, tensors) -> dict:
    """``{name: numpy array}`` of a dict of ``framework``'s arrays, for the
    writer (views where the framework allows, never a change to the input)."""
    if not isinstance(tensors, dict):
        raise InvalidArgument(f"expected a dict of str to {framework.name} arrays, not {type(tensors).__name__}")
    return {name: framework.to_numpy(name, t) for name, t in tensors.items()}


__all__ = ["get_framework", "framework_of", "numpy_of", "require", "JaxFramework", "TensorflowFramework",
           "PaddleFramework", "MlxFramework", "XLA_ALIGNMENT"]
