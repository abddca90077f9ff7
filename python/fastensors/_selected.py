"""A checkpoint seen through a ``KeySelection``: some of its tensors, under
new names (``open_checkpoint(..., include=, exclude=, prefix=, remap=)``)."""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional

import numpy as np

from .checkpoint import Checkpoint
from .remap import KeySelection


class SelectedCheckpoint:
    """The ``Checkpoint`` interface, in the selection's names."""

    def __init__(self, ckpt: Checkpoint, selection: KeySelection):
        self.checkpoint = ckpt
        self.selection = selection
        self.weight_map: Dict[str, str] = {k: ckpt.weight_map[v] for k, v in selection.to_stored.items()}

    def _stored(self, name: str) -> str:
        return self.selection.stored(name, f" in checkpoint {self.checkpoint.path!r}")

    def __getattr__(self, attr):  # path, directory, files, is_sharded, index_metadata, verify, ...
        return getattr(self.checkpoint, attr)

    def __enter__(self) -> "SelectedCheckpoint":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self.checkpoint.close()

    def keys(self) -> List[str]:
        self.checkpoint.verify()
        return self.selection.keys()

    def offset_keys(self) -> List[str]:
        public = self.selection.to_public
        return [public[n] for n in self.checkpoint.offset_keys() if n in public]

    def __contains__(self, name: object) -> bool:
        return name in self.selection

    def __len__(self) -> int:
        return len(self.selection.to_stored)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def metadata(self) -> Optional[Dict[str, str]]:
        return self.checkpoint.metadata()

    def file_of(self, name: str) -> str:
        return self.checkpoint.file_of(self._stored(name))

    def tensor_info(self, name: str):
        return self.checkpoint.tensor_info(self._stored(name))

    def get_tensor(self, name: str, **kwargs):
        return self.checkpoint.get_tensor(self._stored(name), **kwargs)

    def get_slice(self, name: str, **kwargs):
        return self.checkpoint.get_slice(self._stored(name), **kwargs)

    def get_tensors(self) -> Dict[str, object]:
        return {name: self.get_tensor(name) for name in self.offset_keys()}

    def tensors_in_file(self, fname: str) -> List[str]:
        public = self.selection.to_public
        return [public[n] for n in self.checkpoint.tensors_in_file(fname) if n in public]

    tensors = Checkpoint.tensors  # the same listing over the selected names

    def total_parameters(self) -> int:
        return sum(int(np.prod(t.shape, dtype=np.int64)) if t.shape else 1 for t in self.tensors())

    def raw_spec(self, name: str, keep_alive: list) -> tuple:
        spec = self.checkpoint.raw_spec(self._stored(name), keep_alive)
        return (name,) + tuple(spec[1:])

    def __repr__(self) -> str:
        return f"<fastensors.SelectedCheckpoint of {self.checkpoint!r} ({len(self)} tensors selected)>"
