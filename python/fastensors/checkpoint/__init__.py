"""A set of files: checkpoint names, finding a checkpoint, its index, the
reader (``open_checkpoint``), atomic commits of file sets, sharded saving and
resharding, and ``convert_file``."""

from .convert_file import ConversionReport, convert_file
from .index import MAX_INDEX_BYTES, check_file_entry, check_weight_map, parse_index, read_index
from .locate import locate
from .names import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, check_shard_name
from .reader import (
    Checkpoint,
    CheckpointTensor,
    SafetensorsCheckpointMetadata,
    SafetensorsFileMetadata,
    get_safetensors_metadata,
    list_safetensors_tensors,
    open_checkpoint,
)
from .sharding import MAX_SHARD_SIZE, ShardPlan, merge, parse_size, plan_shards, reshard, save_sharded

__all__ = [
    "open_checkpoint", "Checkpoint", "CheckpointTensor", "get_safetensors_metadata", "list_safetensors_tensors",
    "SafetensorsFileMetadata", "SafetensorsCheckpointMetadata", "read_index", "parse_index", "locate",
    "check_weight_map", "check_file_entry", "check_shard_name", "SAFE_WEIGHTS_NAME", "SAFE_WEIGHTS_INDEX_NAME",
    "MAX_INDEX_BYTES", "save_sharded", "ShardPlan", "plan_shards", "parse_size", "reshard", "merge",
    "MAX_SHARD_SIZE", "convert_file", "ConversionReport",
]
