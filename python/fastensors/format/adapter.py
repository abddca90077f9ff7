"""The reference adapters' four verbs (``save``, ``save_file``, ``load``,
``load_file``) for any framework of ``frameworks.py``, so that each adapter
module (``fastensors.flax``, ``.tensorflow``, ``.paddle``, ``.mlx``) is a
thin layer of names and documentation."""

from __future__ import annotations

import os
from typing import Dict, Optional, Union

import numpy as np

from .. import _core
from .frameworks import get_framework, numpy_of
from .reader import safe_open
from .specs import numpy_specs
from .writer import serialize_specs, write_specs


def save(framework: str, tensors, metadata: Optional[Dict[str, str]]) -> bytes:
    """The bytes of a safetensors file holding ``tensors`` (``framework``'s arrays)."""
    keep_alive: list = []
    arrays = numpy_of(get_framework(framework), tensors)
    return serialize_specs(numpy_specs(arrays, keep_alive), metadata)


def save_file(framework: str, tensors, filename: Union[str, os.PathLike], metadata: Optional[Dict[str, str]],
              durable: Optional[bool]) -> None:
    """Write ``tensors`` to ``filename`` atomically (temporary file, fsync, rename)."""
    keep_alive: list = []
    arrays = numpy_of(get_framework(framework), tensors)
    write_specs(numpy_specs(arrays, keep_alive), filename, metadata, durable)


def load(framework: str, data: bytes, device="cpu") -> dict:
    """Tensors of an in-memory file as ``framework``'s arrays. Each is built
    from a view of ``data``; frameworks that would alias it keep it alive."""
    if not isinstance(data, bytes):
        data = bytes(data)
    infos, _meta, start = _core.parse_buffer(data)
    fw = get_framework(framework)
    for name, code, _shape, _b, _e in infos:
        fw.check_dtype(name, code)
    out = {}
    for name, code, shape, b, e in infos:
        raw = np.frombuffer(data, np.uint8, count=e - b, offset=start + b)
        out[name] = fw.to_device(fw.from_bytes(raw, code, shape), device)
    return out


def load_file(framework: str, filename: Union[str, os.PathLike], device="cpu", backend: str = "mmap",
              dtype=None, **select) -> dict:
    """Every tensor of ``filename`` (chosen and renamed by ``select``, as in
    ``safe_open``) as ``framework``'s arrays."""
    with safe_open(filename, framework=framework, device=device, backend=backend, **select) as f:
        return f.get_tensors(dtype=dtype)
