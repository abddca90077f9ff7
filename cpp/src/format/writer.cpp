#include "fastensors/writer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string_view>
#include <unordered_set>

#include "fastensors/error.hpp"
#include "format/checked_math_internal.h"
#include "io/io_internal.h"
#include "io/mapping_guard_internal.h"

namespace fastensors {
namespace {

// JSON string escaping as the reference writer (serde_json) does it: quotes,
// backslashes and control characters; everything else verbatim.
void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

std::uint64_t expected_nbytes(const TensorSource& t) {
  std::uint64_t numel = 1;
  for (auto d : t.shape) {
    if (detail::mul_overflows(numel, d, &numel)) {
      throw Error(ErrorCode::Overflow, "the number of elements overflows 64 bits", {}, t.name);
    }
  }
  std::uint64_t bits;
  if (detail::mul_overflows(numel, dtype_bits(t.dtype), &bits)) {
    throw Error(ErrorCode::Overflow, "the size in bits overflows 64 bits", {}, t.name);
  }
  if (bits % 8 != 0) {
    throw Error(ErrorCode::MisalignedSubByte,
                std::to_string(numel) + " elements of " + std::string(dtype_name(t.dtype)) +
                    " do not end on a byte boundary",
                {}, t.name);
  }
  return bits / 8;
}

// Durable writes start writeback every kWritebackWindow bytes, on ranges that
// end at a kWritebackAlign boundary (a partial block at the end of a range
// would be written out and then dirtied again by the next write), and wait
// for older writeback only when more than kMaxInFlight bytes are queued; the
// final fsync does the rest of the waiting.
constexpr std::uint64_t kWritebackWindow = 64ull << 20;
constexpr std::uint64_t kWritebackAlign = 2ull << 20;
constexpr std::uint64_t kMaxInFlight = 512ull << 20;
// Bytes handed to one writev call.
constexpr std::uint64_t kWriteBatch = 64ull << 20;
constexpr std::size_t kMaxIoChunk = 1u << 30;

std::string directory_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) detail::throw_io("open directory for fsync", dir);
  int rc = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (rc != 0) {
    errno = e;
    detail::throw_io("fsync directory", dir);
  }
}

// Temporary files that writers of the same target left when they were killed
// (SIGKILL, a crash) are removed by the next commit. Their names carry the
// writer's pid; only those of processes that no longer exist are removed, so
// a writer still running keeps its file. Best effort: never fails a commit.
void remove_dead_temporaries(const std::string& dir, const std::string& base) noexcept {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  const std::string prefix = "." + base + ".tmp-";
  const long self = static_cast<long>(::getpid());
  while (const dirent* entry = ::readdir(d)) {
    std::string_view name(entry->d_name);
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string_view rest = name.substr(prefix.size());
    auto dash = rest.find('-');
    if (dash == 0 || dash == std::string_view::npos || dash > 9 || dash + 1 == rest.size()) continue;
    auto digits = [](std::string_view v) { return std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }); };
    if (!digits(rest.substr(0, dash)) || !digits(rest.substr(dash + 1))) continue;
    long pid = std::stol(std::string(rest.substr(0, dash)));
    if (pid <= 0 || pid == self) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    ::unlinkat(::dirfd(d), entry->d_name, 0);
  }
  ::closedir(d);
}

}  // namespace

namespace {

HeaderPlan plan(const std::vector<TensorSource>& tensors, const Metadata& metadata, bool metadata_present,
                bool reference_order, bool need_data) {
  HeaderPlan plan;
  {
    std::unordered_set<std::string_view> seen;
    seen.reserve(tensors.size());
    for (const auto& t : tensors) {
      if (t.name == "__metadata__") {
        throw Error(ErrorCode::InvalidArgument, "'__metadata__' is reserved and cannot name a tensor", {}, t.name);
      }
      if (!seen.insert(t.name).second) {
        throw Error(ErrorCode::DuplicateKey, "tensor name appears twice", {}, t.name);
      }
      std::uint64_t want = expected_nbytes(t);
      if (want != t.nbytes) {
        throw Error(ErrorCode::SizeMismatch,
                    "shape and dtype need " + std::to_string(want) + " bytes but the buffer has " +
                        std::to_string(t.nbytes),
                    {}, t.name);
      }
      if (need_data && t.nbytes != 0 && t.data == nullptr) {
        throw Error(ErrorCode::InvalidArgument, "null data pointer", {}, t.name);
      }
    }
    std::unordered_set<std::string_view> keys;
    for (const auto& kv : metadata) {
      if (!keys.insert(kv.first).second) {
        throw Error(ErrorCode::DuplicateKey, "metadata key '" + kv.first + "' appears twice");
      }
    }
  }

  plan.order.resize(tensors.size());
  std::iota(plan.order.begin(), plan.order.end(), std::size_t{0});
  if (reference_order) {
    std::sort(plan.order.begin(), plan.order.end(), [&](std::size_t a, std::size_t b) {
      const auto& ta = tensors[a];
      const auto& tb = tensors[b];
      if (ta.dtype != tb.dtype) return ta.dtype > tb.dtype;
      return ta.name < tb.name;
    });
  }

  std::string json;
  json.reserve(64 + tensors.size() * 96);
  json += '{';
  bool first = true;
  if (metadata_present || !metadata.empty()) {
    json += "\"__metadata__\":{";
    for (std::size_t i = 0; i < metadata.size(); ++i) {
      if (i) json += ',';
      append_json_string(json, metadata[i].first);
      json += ':';
      append_json_string(json, metadata[i].second);
    }
    json += '}';
    first = false;
  }
  plan.begins.assign(tensors.size(), 0);
  std::uint64_t offset = 0;
  for (std::size_t idx : plan.order) {
    const auto& t = tensors[idx];
    if (!first) json += ',';
    first = false;
    append_json_string(json, t.name);
    json += ":{\"dtype\":\"";
    json += dtype_name(t.dtype);
    json += "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d) {
      if (d) json += ',';
      json += std::to_string(t.shape[d]);
    }
    json += "],\"data_offsets\":[";
    json += std::to_string(offset);
    json += ',';
    plan.begins[idx] = offset;
    if (detail::add_overflows(offset, t.nbytes, &offset)) {
      throw Error(ErrorCode::Overflow, "total data size overflows 64 bits", {}, t.name);
    }
    json += std::to_string(offset);
    json += "]}";
  }
  json += '}';
  json.append((8 - json.size() % 8) % 8, ' ');
  if (json.size() > kMaxHeaderSize) {
    throw Error(ErrorCode::HeaderTooLarge,
                "the header would be " + std::to_string(json.size()) + " bytes, over the limit of " +
                    std::to_string(kMaxHeaderSize));
  }
  plan.data_size = offset;
  plan.bytes.resize(8);
  std::uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) plan.bytes[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  plan.bytes += json;
  return plan;
}

}  // namespace

HeaderPlan plan_header(const std::vector<TensorSource>& tensors, const Metadata& metadata,
                       bool metadata_present) {
  return plan(tensors, metadata, metadata_present, /*reference_order=*/true, /*need_data=*/true);
}

HeaderPlan plan_header_in_order(const std::vector<TensorSource>& tensors, const Metadata& metadata,
                                bool metadata_present) {
  return plan(tensors, metadata, metadata_present, /*reference_order=*/false, /*need_data=*/false);
}

bool WriteOptions::default_durable() noexcept {
  const char* v = std::getenv("FASTENSORS_DURABLE");
  if (v == nullptr) return true;
  std::string s(v);
  return !(s == "0" || s == "false" || s == "FALSE" || s == "False" || s == "no" || s == "off");
}

AtomicFile::AtomicFile(const std::string& target, WriteOptions options)
    : target_(target), options_(options) {
  if (target.empty()) throw Error(ErrorCode::InvalidArgument, "empty file name");
  struct stat st;
  // The new file replaces the target by rename, so a FIFO, socket or device
  // there would never be opened (no write blocks) but would silently be
  // replaced by a regular file: refused like a directory.
  if (::stat(target.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) detail::throw_not_regular(st.st_mode, target);
  static std::atomic<unsigned> counter{0};
  std::string dir = directory_of(target);
  std::string base = basename_of(target);
  for (int attempt = 0; attempt < 100; ++attempt) {
    temp_ = dir + "/." + base + ".tmp-" + std::to_string(::getpid()) + "-" +
            std::to_string(counter.fetch_add(1, std::memory_order_relaxed));
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ >= 0) return;
    if (errno != EEXIST) {
      int e = errno;
      temp_.clear();
      throw Error(e == ENOENT ? ErrorCode::FileNotFound : ErrorCode::Io,
                  std::string("cannot create a file in '") + dir + "': " + std::strerror(e), target, {}, e);
    }
  }
  temp_.clear();
  throw Error(ErrorCode::Io, "cannot find a free temporary name", target, {}, EEXIST);
}

AtomicFile::~AtomicFile() {
  if (!committed_) abort();
}

void AtomicFile::abort() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!committed_ && !temp_.empty()) {
    ::unlink(temp_.c_str());
    temp_.clear();
  }
}

void AtomicFile::after_write(std::uint64_t /*previous*/) {
  if (!options_.durable) return;
#ifdef __linux__
  std::uint64_t end = written_ - written_ % kWritebackAlign;
  if (end >= flushed_ + kWritebackWindow) {
    ::sync_file_range(fd_, static_cast<off_t>(flushed_), static_cast<off_t>(end - flushed_), SYNC_FILE_RANGE_WRITE);
    flushed_ = end;
    if (flushed_ - waited_ > kMaxInFlight) {
      std::uint64_t upto = flushed_ - kMaxInFlight / 2;
      ::sync_file_range(fd_, static_cast<off_t>(waited_), static_cast<off_t>(upto - waited_),
                        SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
      waited_ = upto;
    }
  }
#endif
}

void AtomicFile::write(const void* data, std::size_t size) { write_all({{data, size}}); }

void AtomicFile::write_all(const std::vector<std::pair<const void*, std::size_t>>& buffers) {
  if (fd_ < 0) throw Error(ErrorCode::InvalidArgument, "write after commit or abort", target_);
  std::vector<iovec> iov;
  iov.reserve(std::min<std::size_t>(buffers.size(), IOV_MAX));
  std::size_t next = 0;        // next buffer to schedule
  std::size_t next_off = 0;    // bytes of it already scheduled
  while (next < buffers.size()) {
    // Gather up to IOV_MAX pieces and about one window of bytes per call.
    iov.clear();
    std::size_t batch = 0;
    while (next < buffers.size() && iov.size() < IOV_MAX && batch < kWriteBatch) {
      const auto& b = buffers[next];
      std::size_t left = b.second - next_off;
      if (left == 0) {
        ++next;
        next_off = 0;
        continue;
      }
      std::size_t take = std::min({left, kMaxIoChunk, static_cast<std::size_t>(kWriteBatch - batch)});
      iov.push_back({const_cast<char*>(static_cast<const char*>(b.first) + next_off), take});
      batch += take;
      next_off += take;
      if (next_off == b.second) {
        ++next;
        next_off = 0;
      }
    }
    std::size_t i = 0;
    while (i < iov.size()) {
      ssize_t n = ::writev(fd_, iov.data() + i, static_cast<int>(std::min<std::size_t>(iov.size() - i, IOV_MAX)));
      if (n < 0) {
        if (errno == EINTR) continue;
        detail::throw_io("write", target_);
      }
      std::uint64_t previous = written_;
      written_ += static_cast<std::uint64_t>(n);
      auto left = static_cast<std::size_t>(n);
      while (i < iov.size() && left >= iov[i].iov_len) {
        left -= iov[i].iov_len;
        ++i;
      }
      if (left > 0) {
        iov[i].iov_base = static_cast<char*>(iov[i].iov_base) + left;
        iov[i].iov_len -= left;
      }
      after_write(previous);
    }
  }
}

void AtomicFile::commit() {
  if (fd_ < 0) throw Error(ErrorCode::InvalidArgument, "commit after commit or abort", target_);
  if (options_.durable && ::fsync(fd_) != 0) {
    // A failed fsync is final: the data may be lost, never retry and report success.
    detail::throw_io("fsync", target_);
  }
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) detail::throw_io("close", target_);
  if (::rename(temp_.c_str(), target_.c_str()) != 0) detail::throw_io("rename", target_);
  committed_ = true;
  temp_.clear();
  remove_dead_temporaries(directory_of(target_), basename_of(target_));
  if (options_.durable) fsync_directory(directory_of(target_));
}

namespace {
// write(2) from a mapping whose file shrank fails with EFAULT rather than
// raising SIGBUS: report that as the source file changing (FileChanged, as
// reads from the mapping do), not as an I/O error of the target.
template <class Write>
void write_from(const std::vector<std::pair<const void*, std::size_t>>& sources, Write&& write) {
  try {
    write();
  } catch (const Error& e) {
    if (e.code() == ErrorCode::Io && e.errno_value() == EFAULT) {
      for (const auto& s : sources) detail::MappedReadGuard guard(s.first);  // throws FileChanged
    }
    throw;
  }
}

std::vector<std::pair<const void*, std::size_t>> gather(const HeaderPlan& plan,
                                                       const std::vector<TensorSource>& tensors) {
  std::vector<std::pair<const void*, std::size_t>> buffers;
  buffers.reserve(tensors.size() + 1);
  buffers.emplace_back(plan.bytes.data(), plan.bytes.size());
  for (std::size_t idx : plan.order) {
    if (tensors[idx].nbytes) buffers.emplace_back(tensors[idx].data, static_cast<std::size_t>(tensors[idx].nbytes));
  }
  return buffers;
}
}  // namespace

void write_file(const std::string& path, const std::vector<TensorSource>& tensors, const Metadata& metadata,
                bool metadata_present, WriteOptions options) {
  HeaderPlan plan = plan_header(tensors, metadata, metadata_present);
  AtomicFile out(path, options);
  const auto buffers = gather(plan, tensors);
  write_from(buffers, [&] { out.write_all(buffers); });
  out.commit();
}

void write_file_streaming(const std::string& path, const std::vector<TensorSource>& tensors,
                          const Metadata& metadata, bool metadata_present, const TensorFill& fill,
                          WriteOptions options, bool keep_order) {
  // Checked like plan_header, but without data pointers.
  HeaderPlan plan =
      fastensors::plan(tensors, metadata, metadata_present, /*reference_order=*/!keep_order, /*need_data=*/false);
  AtomicFile out(path, options);
  out.write(plan.bytes.data(), plan.bytes.size());
  for (std::size_t idx : plan.order) {
    const TensorSource& t = tensors[idx];
    const std::pair<const void*, std::uint64_t> got = fill(idx);
    if (got.second != t.nbytes) {
      throw Error(ErrorCode::SizeMismatch,
                  "the header planned " + std::to_string(t.nbytes) + " bytes but " + std::to_string(got.second) +
                      " were produced",
                  path, t.name);
    }
    if (t.nbytes == 0) continue;
    if (got.first == nullptr) throw Error(ErrorCode::InvalidArgument, "null data pointer", path, t.name);
    const std::size_t n = static_cast<std::size_t>(t.nbytes);
    write_from({{got.first, n}}, [&] { out.write(got.first, n); });
  }
  out.commit();
}

std::string serialize(const std::vector<TensorSource>& tensors, const Metadata& metadata, bool metadata_present) {
  HeaderPlan plan = plan_header(tensors, metadata, metadata_present);
  std::string out;
  out.reserve(static_cast<std::size_t>(plan.total_size()));
  for (const auto& b : gather(plan, tensors)) out.append(static_cast<const char*>(b.first), b.second);
  return out;
}

}  // namespace fastensors
