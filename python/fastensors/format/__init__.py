"""One safetensors file: dtypes and sub-byte packing, bytes as framework
arrays, the reader (``safe_open``), the writer (``serialize``) and dtype
conversion (``convert``)."""

from .cast import convert, isa, supported_isas
from .reader import TensorInfo, TensorSlice, safe_open
from .writer import TensorSpec, deserialize, serialize, serialize_file

__all__ = ["safe_open", "TensorInfo", "TensorSlice", "TensorSpec", "serialize", "serialize_file", "deserialize",
           "convert", "isa", "supported_isas"]
