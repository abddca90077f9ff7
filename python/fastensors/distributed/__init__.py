"""Distributed checkpoints on ``torch.distributed``: a ``StorageWriter`` and
a ``StorageReader`` for ``torch.distributed.checkpoint`` that write and read
Hugging Face safetensors checkpoints, ``save``/``load`` around them with
typed errors on every rank, tensor-parallel loading without DCP, and
``convert_file`` shared out across the ranks.
See docs/distributed.md."""

from .api import load, save
from .convert import convert_file
from .reader import StorageReader
from .tensor_parallel import LoadResult, load_tensor_parallel
from .writer import StorageWriter

__all__ = ["StorageWriter", "StorageReader", "save", "load", "load_tensor_parallel", "LoadResult", "convert_file"]
