// Checkpoint: one file, or the shards of an index, checked against each
// other as shards are opened (the rules of checkpoint/reader.py).
#include "fastensors/checkpoint.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <unordered_set>

#include "checkpoint/index_internal.h"
#include "checkpoint/read_ranges_internal.h"
#include "checkpoint/text_internal.h"
#include "fastensors/read_plan.hpp"
#include "fastensors/error.hpp"
#include "io/io_internal.h"

namespace fastensors {
namespace {

const char kWeightsName[] = "model.safetensors";
const char kIndexName[] = "model.safetensors.index.json";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_regular(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() || dir.back() == '/' ? dir + name : dir + "/" + name;
}

// Names and paths in messages are quoted as Python's repr() quotes them.
std::string Q(std::string_view s) { return detail::py_repr(s); }

std::string dirname_of(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

Located locate_checkpoint(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    // Other failures (EACCES, ELOOP, ...) are I/O errors, as in os.stat.
    if (errno != ENOENT && errno != ENOTDIR) detail::throw_io("stat", path);
    throw Error(ErrorCode::CheckpointNotFound, "no checkpoint at " + Q(path) + ": no such file or directory", path);
  }
  if (S_ISREG(st.st_mode)) return {ends_with(path, ".json"), path};
  if (!S_ISDIR(st.st_mode)) {
    throw Error(ErrorCode::CheckpointNotFound, "no checkpoint at " + Q(path) + ": not a file or directory", path);
  }
  if (is_regular(join(path, kWeightsName))) return {false, join(path, kWeightsName)};
  if (is_regular(join(path, kIndexName))) return {true, join(path, kIndexName)};
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) detail::throw_io("opendir", path);
  while (const dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (!name.empty() && name[0] != '.' && is_regular(join(path, name))) names.push_back(std::move(name));
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  for (const auto& [suffix, is_index] : {std::pair<std::string, bool>{".safetensors.index.json", true},
                                         std::pair<std::string, bool>{".safetensors", false}}) {
    std::vector<std::string> found;
    for (const auto& n : names) {
      if (ends_with(n, suffix)) found.push_back(n);
    }
    if (found.size() == 1) return {is_index, join(path, found[0])};
    if (found.size() > 1) {
      std::string list;
      for (const auto& n : found) list += (list.empty() ? "" : ", ") + Q(n);
      throw Error(ErrorCode::AmbiguousCheckpoint,
                  Q(path) + " holds several " + suffix + " files and none is named '" + kWeightsName + "' or '" +
                      kIndexName + "': [" + list + "]; open one of them",
                  path);
    }
  }
  throw Error(ErrorCode::CheckpointNotFound, "no safetensors checkpoint in " + Q(path), path);
}

std::shared_ptr<Checkpoint> Checkpoint::open(const std::string& path, Backend backend) {
  const Located where = locate_checkpoint(path);
  std::shared_ptr<Checkpoint> c(new Checkpoint());
  c->path_ = detail::absolute_path(where.path);
  c->directory_ = dirname_of(c->path_);
  c->backend_ = backend;
  if (where.is_index) {
    c->sharded_ = true;
    detail::ParsedIndex index = detail::parse_index_file(c->path_);
    c->index_metadata_ = std::move(index.metadata);
    c->index_metadata_json_ = std::move(index.metadata_json);
    std::unordered_map<std::string, std::size_t> file_ids;
    c->entries_.reserve(index.weight_map.size());
    for (auto& [tensor, file] : index.weight_map) {
      auto it = file_ids.find(file);
      if (it == file_ids.end()) {
        it = file_ids.emplace(file, c->files_.size()).first;
        c->files_.push_back(file);
      }
      c->entries_.emplace_back(std::move(tensor), it->second);
    }
  } else {
    auto file = File::open(c->path_, backend);
    c->files_.push_back(basename_of(c->path_));
    for (const auto& t : file->header().tensors) c->entries_.emplace_back(t.name, 0);
    c->shards_.push_back(std::move(file));
    c->verified_ = true;
  }
  c->shards_.resize(c->files_.size());
  c->per_file_.assign(c->files_.size(), 0);
  c->by_name_.reserve(c->entries_.size());
  for (std::size_t i = 0; i < c->entries_.size(); ++i) {
    c->by_name_.emplace(c->entries_[i].first, i);
    ++c->per_file_[c->entries_[i].second];
  }
  return c;
}

Checkpoint::~Checkpoint() { close(); }

void Checkpoint::close() noexcept {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& s : shards_) s.reset();  // the last holder's release closes the File
  verified_ = false;
}

bool Checkpoint::contains(std::string_view name) const noexcept { return by_name_.count(name) != 0; }

std::size_t Checkpoint::entry(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) {
    throw Error(ErrorCode::TensorNotFound, "no tensor named " + Q(name) + " in checkpoint " + Q(path_),
                path_, std::string(name));
  }
  return it->second;
}

const std::string& Checkpoint::file_of(std::string_view name) const { return files_[entries_[entry(name)].second]; }

void Checkpoint::missing_shard(std::size_t file_index) const {
  const std::string& fname = files_[file_index];
  std::string first;
  for (const auto& e : entries_) {
    if (e.second == file_index) {
      first = e.first;
      break;
    }
  }
  const std::size_t listed = per_file_[file_index];
  const std::string more = listed > 1 ? " and " + std::to_string(listed - 1) + " more" : "";
  throw Error(ErrorCode::ShardNotFound,
              "shard " + Q(fname) + " does not exist; index " + Q(path_) + " lists tensor " + Q(first) + more + " in it",
              join(directory_, fname), first);
}

// Every tensor of the shard maps to it in the index (tensors listed for it
// but absent are found by check_counts or on access).
void Checkpoint::check_shard(std::size_t file_index, const File& file) const {
  const std::string& fname = files_[file_index];
  const std::string shard_path = join(directory_, fname);
  for (const auto& t : file.header().tensors) {
    auto it = by_name_.find(t.name);
    if (it != by_name_.end() && entries_[it->second].second == file_index) continue;
    if (it == by_name_.end()) {
      throw Error(ErrorCode::UnlistedTensor,
                  "shard " + Q(fname) + " holds tensor " + Q(t.name) + ", which index " + Q(path_) + " does not list",
                  shard_path, t.name);
    }
    const std::string& listed = files_[entries_[it->second].second];
    const std::string other = join(directory_, listed);
    bool there = false;
    try {
      there = File::open(other, Backend::Pread)->header().find(t.name) != nullptr;
    } catch (const Error&) {
      there = false;  // a missing or broken other shard: this one's entry is what is wrong here
    }
    if (there) {
      throw Error(ErrorCode::TensorInMultipleShards,
                  "tensor " + Q(t.name) + " is stored in two shards, " + Q(listed) + " (where index " + Q(path_) +
                      " maps it) and " + Q(fname),
                  shard_path, t.name);
    }
    throw Error(ErrorCode::TensorMissingFromShard,
                "index " + Q(path_) + " lists tensor " + Q(t.name) + " in shard " + Q(listed) +
                    ", which does not hold it (shard " + Q(fname) + " does)",
                other, t.name);
  }
}

void Checkpoint::check_counts(std::size_t file_index, const File& file) const {
  if (file.header().tensors.size() == per_file_[file_index]) return;
  for (const auto& e : entries_) {
    if (e.second == file_index && file.header().find(e.first) == nullptr) {
      throw Error(ErrorCode::TensorMissingFromShard,
                  "index " + Q(path_) + " lists tensor " + Q(e.first) + " in shard " + Q(files_[file_index]) +
                      ", which does not hold it",
                  join(directory_, files_[file_index]), e.first);
    }
  }
}

const File& Checkpoint::open_shard_locked(std::size_t file_index) const {
  if (shards_[file_index]) return *shards_[file_index];
  const std::string shard_path = join(directory_, files_[file_index]);
  std::shared_ptr<File> file;
  try {
    file = File::open(shard_path, backend_);
  } catch (const Error& e) {
    if (e.code() == ErrorCode::FileNotFound) missing_shard(file_index);
    throw;
  }
  check_shard(file_index, *file);
  shards_[file_index] = std::move(file);
  return *shards_[file_index];
}

std::shared_ptr<const File> Checkpoint::shard_file(std::size_t file_index) const {
  if (file_index >= files_.size()) {
    throw Error(ErrorCode::InvalidArgument, "shard " + std::to_string(file_index) + " of " +
                                                std::to_string(files_.size()) + " in checkpoint " + Q(path_), path_);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  open_shard_locked(file_index);
  return shards_[file_index];
}

const File& Checkpoint::shard(std::size_t file_index) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return open_shard_locked(file_index);
}

void Checkpoint::verify() const {
  std::lock_guard<std::mutex> lock(mutex_);
  if (verified_) return;
  for (std::size_t i = 0; i < files_.size(); ++i) {
    if (!shards_[i] && !is_regular(join(directory_, files_[i]))) missing_shard(i);
  }
  for (std::size_t i = 0; i < files_.size(); ++i) check_counts(i, open_shard_locked(i));
  verified_ = true;
}

std::vector<std::string> Checkpoint::keys() const {
  verify();
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.push_back(e.first);
  std::sort(out.begin(), out.end());
  return out;
}

const File& Checkpoint::shard_of(std::string_view name) const {
  const auto& e = entries_[entry(name)];
  const File& file = shard(e.second);
  if (file.header().find(name) == nullptr) {
    throw Error(ErrorCode::TensorMissingFromShard,
                "index " + Q(path_) + " lists tensor " + Q(e.first) + " in shard " + Q(files_[e.second]) +
                    ", which does not hold it",
                join(directory_, files_[e.second]), e.first);
  }
  return file;
}

const TensorInfo& Checkpoint::info(std::string_view name) const { return shard_of(name).info(name); }

Metadata Checkpoint::metadata() const {
  if (files_.empty()) return index_metadata_;
  Metadata out = shard(0).metadata();
  if (!sharded_) return out;
  for (const auto& entry : index_metadata_) {
    const std::string& key = entry.first;
    if (key == "total_size" || key == "total_parameters") continue;
    auto it = std::find_if(out.begin(), out.end(), [&](const auto& kv) { return kv.first == key; });
    if (it != out.end()) {
      it->second = entry.second;
    } else {
      out.push_back(entry);
    }
  }
  return out;
}

const std::uint8_t* Checkpoint::data(std::string_view name) const {
  const File& file = shard_of(name);
  return file.data(file.info(name));
}

void Checkpoint::read(std::string_view name, void* dst, std::size_t dst_bytes, std::optional<Dtype> to) const {
  const File& file = shard_of(name);
  const TensorInfo& t = file.info(name);
  fastensors::read_box(file, t, whole_box(t), dst, dst_bytes, to);
}

void Checkpoint::read_rows(std::string_view name, std::uint64_t begin, std::uint64_t end, void* dst,
                           std::size_t dst_bytes, std::optional<Dtype> to) const {
  const File& file = shard_of(name);
  const TensorInfo& t = file.info(name);
  fastensors::read_box(file, t, row_box(t, begin, end), dst, dst_bytes, to);
}

void Checkpoint::read_box(std::string_view name, const Box& box, void* dst, std::size_t dst_bytes,
                          std::optional<Dtype> to) const {
  const File& file = shard_of(name);
  fastensors::read_box(file, file.info(name), box, dst, dst_bytes, to);
}

void Checkpoint::prefetch(const std::vector<std::string>& names) const {
  ReadPlan plan;
  std::unordered_set<std::string> seen;
  for (const auto& name : names) {
    if (!seen.insert(name).second) continue;  // each tensor once
    const File& file = shard_of(name);
    const TensorInfo& t = file.info(name);
    if (file.mapping() != nullptr) {
      if (t.nbytes() != 0) plan.prefetch(detail::borrowed(&file), file.header().data_start + t.begin, t.nbytes());
    } else {
      file.prefetch(t);
    }
  }
  if (!plan.empty()) execute(std::move(plan));
}

}  // namespace fastensors
