"""The file names of the safetensors checkpoint convention and the rule a
shard name obeys."""

from __future__ import annotations

from ..errors import InvalidIndex, with_context

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def check_shard_name(name: str, index_path: str, extension: str = ".safetensors") -> None:
    """Shard names are relative paths inside the checkpoint's directory: no
    root, no drive, no ``..`` component, on any OS's reading of the name."""
    parts = name.replace("\\", "/").split("/")
    if (not name or name[0] in "/\\" or (len(name) > 1 and name[1] == ":") or ".." in parts):
        raise with_context(InvalidIndex, f"index {index_path!r}: shard name {name!r} must be a relative path inside"
                     " the checkpoint directory", path=index_path)
    if not name.endswith(extension):
        raise with_context(InvalidIndex, f"index {index_path!r}: shard name {name!r} does not end with {extension!r}",
                     path=index_path)
