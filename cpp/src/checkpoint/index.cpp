#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/index_internal.h"
#include "checkpoint/text_internal.h"
#include "fastensors/checkpoint.hpp"
#include "fastensors/error.hpp"
#include "io/io_internal.h"

namespace fastensors::detail {
namespace {

using ojson = nlohmann::ordered_json;

// Deeper than any index; bounds the duplicate-key bookkeeping.
constexpr int kMaxIndexDepth = 128;

[[noreturn]] void invalid(const std::string& index_path, const std::string& why, const std::string& tensor = {}) {
  const char* sep = !why.empty() && why[0] == ':' ? "" : " ";
  throw Error(ErrorCode::InvalidIndex, "index " + py_repr(index_path) + sep + why, index_path, tensor);
}

std::string read_index_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      throw Error(ErrorCode::CheckpointNotFound, "index " + py_repr(path) + " does not exist", path);
    }
    throw_io("open", path);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) throw_io("fstat", path);
  if (!S_ISREG(st.st_mode)) throw_not_regular(st.st_mode, path);
  if (static_cast<std::uint64_t>(st.st_size) > kMaxIndexBytes) {
    invalid(path, "is " + std::to_string(st.st_size) + " bytes, over the " + std::to_string(kMaxIndexBytes) +
                      "-byte limit for an index");
  }
  std::string out;
  out.resize(static_cast<std::size_t>(st.st_size) + 1);
  std::size_t got = 0;
  // One read in practice; a loop for short reads and a file still growing.
  for (int tries = 0; tries < 1024; ++tries) {
    if (got == out.size()) {
      if (out.size() > kMaxIndexBytes) invalid(path, "is over the " + std::to_string(kMaxIndexBytes) + "-byte limit for an index");
      out.resize(out.size() * 2);
    }
    const ssize_t n = ::read(fd, &out[got], out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io("read", path);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  if (got > kMaxIndexBytes) invalid(path, "is over the " + std::to_string(kMaxIndexBytes) + "-byte limit for an index");
  return out;
}

std::string text_of(const ojson& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// A JSON value as Python's repr() shows what json.loads made of it.
std::string py_value(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null: return "None";
    case ojson::value_t::boolean: return v.get<bool>() ? "True" : "False";
    case ojson::value_t::string: return py_repr(v.get_ref<const std::string&>());
    case ojson::value_t::array: {
      std::string out = "[";
      for (const auto& x : v) out += (out.size() > 1 ? ", " : "") + py_value(x);
      return out + "]";
    }
    case ojson::value_t::object: {
      std::string out = "{";
      for (const auto& kv : v.items()) out += (out.size() > 1 ? ", " : "") + py_repr(kv.key()) + ": " + py_value(kv.value());
      return out + "}";
    }
    default: return v.dump();  // numbers
  }
}

}  // namespace

void check_shard_name(const std::string& name, const std::string& index_path) {
  std::string slashed = name;
  for (char& c : slashed) {
    if (c == '\\') c = '/';
  }
  bool dotdot = false;
  std::size_t begin = 0;
  while (begin <= slashed.size()) {
    std::size_t end = slashed.find('/', begin);
    if (end == std::string::npos) end = slashed.size();
    if (slashed.compare(begin, end - begin, "..") == 0 && end - begin == 2) dotdot = true;
    begin = end + 1;
  }
  if (name.empty() || name[0] == '/' || name[0] == '\\' || (name.size() > 1 && name[1] == ':') || dotdot) {
    invalid(index_path, ": shard name " + py_repr(name) + " must be a relative path inside the checkpoint directory");
  }
  static const std::string ext = ".safetensors";
  if (name.size() < ext.size() || name.compare(name.size() - ext.size(), ext.size(), ext) != 0) {
    invalid(index_path, ": shard name " + py_repr(name) + " does not end with '.safetensors'");
  }
}

ParsedIndex parse_index_file(const std::string& index_path) {
  const std::string raw = read_index_bytes(index_path);
  // nlohmann skips a byte-order mark and stops at a NUL; JSON allows neither.
  if (raw.size() >= 3 && static_cast<unsigned char>(raw[0]) == 0xEF && static_cast<unsigned char>(raw[1]) == 0xBB &&
      static_cast<unsigned char>(raw[2]) == 0xBF) {
    invalid(index_path, "is not valid JSON: it starts with a byte-order mark");
  }
  // Decoded first, as Python does: the error names the first bad byte.
  const std::string not_utf8 = utf8_error(raw);
  if (!not_utf8.empty()) invalid(index_path, "is not UTF-8: " + not_utf8);
  if (raw.find('\0') != std::string::npos) invalid(index_path, "is not valid JSON: it contains a NUL byte");

  // Duplicate keys are caught as the parser meets them, one set per open
  // object (by depth: a discarded object reports no end). The weight_map's
  // entries are taken from the parser and kept out of the document:
  // ordered_json inserts in linear time, quadratic for a large index.
  std::vector<std::unordered_set<std::string>> open_objects;
  std::string top_key, entry_key, first_non_string;
  bool non_string = false;
  std::vector<std::pair<std::string, std::string>> entries;
  const auto in_weight_map = [&](int depth) { return depth == 2 && top_key == "weight_map"; };
  const auto parse = [&](const std::string* keep_only) {
    open_objects.clear();
    top_key.clear();
    ojson::parser_callback_t cb = [&](int depth, ojson::parse_event_t event, ojson& parsed) {
      if (depth > kMaxIndexDepth) invalid(index_path, "is nested deeper than " + std::to_string(kMaxIndexDepth) + " levels");
      const auto d = static_cast<std::size_t>(depth);
      switch (event) {
        case ojson::parse_event_t::object_start:
          if (open_objects.size() <= d) open_objects.resize(d + 1);
          open_objects[d].clear();
          [[fallthrough]];
        case ojson::parse_event_t::array_start:
          if (in_weight_map(depth) && !non_string) {
            non_string = true;
            first_non_string = entry_key;
          }
          break;
        case ojson::parse_event_t::key: {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (d >= 1 && d - 1 < open_objects.size() && !open_objects[d - 1].insert(key).second) {
            invalid(index_path, "is not valid JSON: duplicate key " + py_repr(key));
          }
          if (depth == 1) top_key = key;
          if (in_weight_map(depth)) {
            entry_key = key;
            return keep_only != nullptr && key == *keep_only;
          }
          break;
        }
        case ojson::parse_event_t::value:
          if (in_weight_map(depth) && keep_only == nullptr) {
            if (parsed.is_string()) {
              entries.emplace_back(entry_key, parsed.get<std::string>());
            } else if (!non_string) {
              non_string = true;
              first_non_string = entry_key;
            }
          }
          break;
        default: break;
      }
      return true;
    };
    try {
      return ojson::parse(raw, cb, /*allow_exceptions=*/true);
    } catch (const ojson::exception& e) {
      invalid(index_path, std::string("is not valid JSON: ") + e.what());
    }
  };
  ojson doc = parse(nullptr);
  if (!doc.is_object() || !doc.contains("weight_map") || !doc["weight_map"].is_object()) {
    invalid(index_path, "must be a JSON object with a \"weight_map\" object");
  }
  ParsedIndex out;
  if (doc.contains("metadata") && !doc["metadata"].is_null()) {
    const ojson& meta = doc["metadata"];
    if (!meta.is_object()) invalid(index_path, ": \"metadata\" must be an object");
    for (const auto& kv : meta.items()) out.metadata.emplace_back(kv.key(), text_of(kv.value()));
    out.metadata_json = meta.dump();
  }
  // Values that are not strings first, then names: the order of index.py.
  if (non_string) {
    const ojson again = parse(&first_non_string);  // rare: parsed again for the value's text
    invalid(index_path,
            ": tensor " + py_repr(first_non_string) + " maps to " + py_value(again.at("weight_map").at(first_non_string)) +
                ", not a file name",
            first_non_string);
  }
  std::unordered_set<std::string> checked;
  for (const auto& entry : entries) {
    if (checked.insert(entry.second).second) check_shard_name(entry.second, index_path);
  }
  out.weight_map = std::move(entries);
  return out;
}

}  // namespace fastensors::detail
