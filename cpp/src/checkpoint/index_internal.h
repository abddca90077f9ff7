// model.safetensors.index.json: read with a size limit, parsed strictly
// (UTF-8 JSON, no duplicate keys), every entry checked; and the rule a shard
// name obeys. The rules are the Python layer's (checkpoint/index.py,
// checkpoint/names.py), with the same error codes.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "fastensors/header.hpp"

namespace fastensors::detail {

struct ParsedIndex {
  std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> file, in index order
  Metadata metadata;  // non-string values as compact JSON text
  std::string metadata_json = "{}";  // the "metadata" object itself, values typed
};

// Throws CheckpointNotFound (no such file) or InvalidIndex.
ParsedIndex parse_index_file(const std::string& index_path);

// Shard names are relative paths inside the checkpoint's directory: no root,
// no drive, no ".." component, on any OS's reading; they end in
// ".safetensors". Throws InvalidIndex naming the index.
void check_shard_name(const std::string& name, const std::string& index_path);

}  // namespace fastensors::detail
