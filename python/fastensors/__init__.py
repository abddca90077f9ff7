"""fastensors: a fast, strict, embeddable engine for safetensors files.

A drop-in for the ``safetensors`` API (``safe_open``, ``serialize``,
``deserialize``, ``SafetensorError``, ``fastensors.numpy``,
``fastensors.torch``) backed by a C++ core."""

from . import _core
from ._errors import *  # noqa: F401,F403  (the typed error classes)
from ._errors import __all__ as _error_names
from ._open import TensorInfo, TensorSlice, safe_open
from ._serialize import TensorSpec, deserialize, serialize, serialize_file
from ._convert import convert, isa, supported_isas
from ._convert_file import ConversionReport, convert_file
from .quant import QuantizedTensor, dequantize, quality, quantize

__version__: str = _core.__version__

# The reference exposes its handle class under this name.
_safe_open_handle = safe_open

__all__ = [
    "__version__",
    "safe_open",
    "TensorInfo",
    "TensorSlice",
    "TensorSpec",
    "serialize",
    "serialize_file",
    "deserialize",
    "convert",
    "convert_file",
    "ConversionReport",
    "isa",
    "supported_isas",
    "quantize",
    "dequantize",
    "quality",
    "QuantizedTensor",
    *_error_names,
]

# -- sharded checkpoints --------------------------------------------------------
from .checkpoint import (  # noqa: E402
    Checkpoint,
    CheckpointTensor,
    get_safetensors_metadata,
    list_safetensors_tensors,
    open_checkpoint,
)
from .sharding import ShardPlan, save_sharded  # noqa: E402

__all__ += [
    "open_checkpoint",
    "Checkpoint",
    "CheckpointTensor",
    "save_sharded",
    "ShardPlan",
    "get_safetensors_metadata",
    "list_safetensors_tensors",
]

# -- model surgery and metadata ---------------------------------------------------
from . import layout, metadata, remap  # noqa: E402
from ._inspect import Summary, detect_modality, summary  # noqa: E402
from .remap import Remapper, reindex  # noqa: E402

__all__ += ["summary", "Summary", "detect_modality", "metadata", "remap", "layout", "Remapper", "reindex"]

# -- whole-model quantization ---------------------------------------------------
from ._report import QuantizationReport, TensorReport  # noqa: E402
from .quantize_model import quantize_model  # noqa: E402
from .dequantize_model import dequantize_model  # noqa: E402

__all__ += ["quantize_model", "dequantize_model", "QuantizationReport", "TensorReport"]
