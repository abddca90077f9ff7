"""fastensors: a fast, strict, embeddable engine for safetensors files.

A drop-in for the ``safetensors`` API (``safe_open``, ``serialize``,
``deserialize``, ``SafetensorError``, ``fastensors.numpy``,
``fastensors.torch``, ``fastensors.flax``, ``fastensors.tensorflow``,
``fastensors.paddle``, ``fastensors.mlx``) backed by a C++ core, plus conversion, quantization,
sharded checkpoints, model surgery and the Hugging Face conventions.

This module is the façade: it re-exports the public API of the subpackages
(``format``, ``checkpoint``, ``surgery``, ``hf``, ``quant``, ``cli``) and
defines nothing of its own."""

from . import _core
from ._util import aliases as _aliases
from .checkpoint import (
    Checkpoint,
    CheckpointTensor,
    ConversionReport,
    ShardPlan,
    convert_file,
    get_safetensors_metadata,
    list_safetensors_tensors,
    open_checkpoint,
    save_sharded,
)
from .errors import *  # noqa: F401,F403  (the typed error classes)
from .errors import __all__ as _error_names
from .format import (
    TensorInfo,
    TensorSlice,
    TensorSpec,
    convert,
    deserialize,
    isa,
    safe_open,
    serialize,
    serialize_file,
    supported_isas,
)
from .quant import (
    QuantizationReport,
    QuantizedTensor,
    TensorReport,
    dequantize,
    dequantize_model,
    quality,
    quantize,
    quantize_model,
)
from . import sources  # noqa: E402
from .sources import RemoteOptions
from . import remap  # noqa: E402
from .remap import Remapper, reindex
from .surgery import Summary, detect_modality, layout, metadata, rename_file, summary

__version__: str = _core.__version__

# The reference exposes its handle class under this name.
_safe_open_handle = safe_open

# Modules that lived at the top level before the subpackages; user code may
# import them by these names.
_aliases.install({
    "fastensors.sharding": "fastensors.checkpoint.sharding",
    "fastensors.convert_bin": "fastensors.hf.convert_bin",
    "fastensors.layout": "fastensors.surgery.layout",
    "fastensors.metadata": "fastensors.surgery.metadata",
    "fastensors.quantize_model": "fastensors.quant.quantize_model",
    "fastensors.dequantize_model": "fastensors.quant.dequantize_model",
    "fastensors.demo": "fastensors.cli.demo",
})
# ``fastensors.remap.rename_file`` predates fastensors.surgery; remap itself
# stays a leaf (names only), so the façade attaches it.
remap.rename_file = rename_file

__all__ = [
    "__version__",
    # one file
    "safe_open", "TensorInfo", "TensorSlice", "TensorSpec", "serialize", "serialize_file", "deserialize",
    "convert", "isa", "supported_isas",
    # file objects and URLs (docs/remote.md)
    "sources", "RemoteOptions",
    # tensor quantization
    "quantize", "dequantize", "quality", "QuantizedTensor",
    # sharded checkpoints
    "open_checkpoint", "Checkpoint", "CheckpointTensor", "save_sharded", "ShardPlan", "convert_file",
    "ConversionReport", "get_safetensors_metadata", "list_safetensors_tensors",
    # model surgery and metadata
    "summary", "Summary", "detect_modality", "metadata", "remap", "layout", "Remapper", "reindex", "rename_file",
    # whole-model quantization
    "quantize_model", "dequantize_model", "QuantizationReport", "TensorReport",
    *_error_names,
]


def __getattr__(name):
    # ``fastensors.sharding`` and the other old module names as attributes.
    if name in ("sharding", "convert_bin", "demo"):
        import importlib

        return importlib.import_module(f"fastensors.{name}")
    raise AttributeError(f"module 'fastensors' has no attribute {name!r}")
