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
  throw Error(ErrorCode::InvalidIndex, "index '" + index_path + "'" + sep + why, index_path, tensor);
}

std::string read_index_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      throw Error(ErrorCode::CheckpointNotFound, "index '" + path + "' does not exist", path);
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
    invalid(index_path, ": shard name '" + name + "' must be a relative path inside the checkpoint directory");
  }
  static const std::string ext = ".safetensors";
  if (name.size() < ext.size() || name.compare(name.size() - ext.size(), ext.size(), ext) != 0) {
    invalid(index_path, ": shard name '" + name + "' does not end with '.safetensors'");
  }
}

ParsedIndex parse_index_file(const std::string& index_path) {
  const std::string raw = read_index_bytes(index_path);
  // nlohmann skips a byte-order mark and stops at a NUL; JSON allows neither.
  if (raw.size() >= 3 && static_cast<unsigned char>(raw[0]) == 0xEF && static_cast<unsigned char>(raw[1]) == 0xBB &&
      static_cast<unsigned char>(raw[2]) == 0xBF) {
    invalid(index_path, "is not valid JSON: it starts with a byte-order mark");
  }
  if (raw.find('\0') != std::string::npos) invalid(index_path, "is not valid JSON: it contains a NUL byte");

  // Duplicate keys are caught as the parser meets them, one set per open object.
  std::vector<std::unordered_set<std::string>> open_objects;
  ojson::parser_callback_t cb = [&](int depth, ojson::parse_event_t event, ojson& parsed) {
    if (depth > kMaxIndexDepth) invalid(index_path, "is nested deeper than " + std::to_string(kMaxIndexDepth) + " levels");
    switch (event) {
      case ojson::parse_event_t::object_start: open_objects.emplace_back(); break;
      case ojson::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case ojson::parse_event_t::key: {
        const std::string& key = parsed.get_ref<const std::string&>();
        if (!open_objects.empty() && !open_objects.back().insert(key).second) {
          invalid(index_path, "is not valid JSON: duplicate key '" + key + "'");
        }
        break;
      }
      default: break;
    }
    return true;
  };
  ojson doc;
  try {
    doc = ojson::parse(raw, cb, /*allow_exceptions=*/true);
  } catch (const ojson::exception& e) {
    invalid(index_path, std::string("is not valid JSON: ") + e.what());
  }
  if (!doc.is_object() || !doc.contains("weight_map") || !doc["weight_map"].is_object()) {
    invalid(index_path, "must be a JSON object with a \"weight_map\" object");
  }
  ParsedIndex out;
  if (doc.contains("metadata") && !doc["metadata"].is_null()) {
    const ojson& meta = doc["metadata"];
    if (!meta.is_object()) invalid(index_path, ": \"metadata\" must be an object");
    for (const auto& kv : meta.items()) out.metadata.emplace_back(kv.key(), text_of(kv.value()));
  }
  const ojson& wm = doc["weight_map"];
  out.weight_map.reserve(wm.size());
  std::unordered_set<std::string> checked;
  for (const auto& kv : wm.items()) {
    if (!kv.value().is_string()) {
      invalid(index_path, ": tensor '" + kv.key() + "' maps to " + kv.value().dump() + ", not a file name", kv.key());
    }
    std::string file = kv.value().get<std::string>();
    if (checked.insert(file).second) check_shard_name(file, index_path);
    out.weight_map.emplace_back(kv.key(), std::move(file));
  }
  return out;
}

}  // namespace fastensors::detail
