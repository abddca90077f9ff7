// The C API's library, dtype, file and checkpoint functions, over the C++ API.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "c_api/c_api_internal.h"
#include "fastensors/checkpoint.hpp"
#include "fastensors/file.hpp"
#include "fastensors/sigbus_guard.hpp"
#include "fastensors/version.hpp"

namespace fst = fastensors;
using fastensors::c_api::fail;
using fastensors::c_api::guarded;
using fastensors::c_api::need;

// The status values are the C++ codes plus one; keep them in step.
static_assert(FST_ERR_IO == static_cast<int>(fst::ErrorCode::Io) + 1, "status codes follow ErrorCode");
static_assert(FST_ERR_FILE_CHANGED == static_cast<int>(fst::ErrorCode::FileChanged) + 1, "status codes follow ErrorCode");
static_assert(FST_ERR_TENSOR_IN_MULTIPLE_SHARDS == static_cast<int>(fst::kLastErrorCode) + 1,
              "a new ErrorCode needs its FST_ERR_ value");
static_assert(FST_U64 == static_cast<int>(fst::Dtype::U64) && FST_F32 == static_cast<int>(fst::Dtype::F32),
              "fst_dtype follows Dtype");

struct fst_file {
  std::shared_ptr<fst::File> file;
  std::vector<std::string> names;  // sorted
};

struct fst_checkpoint {
  std::shared_ptr<fst::Checkpoint> ckpt;
  mutable std::mutex mutex;  // the caches below, filled on first use
  mutable std::optional<std::vector<std::string>> names;
  mutable std::optional<fst::Metadata> metadata;

  const std::vector<std::string>& keys() const {
    std::lock_guard<std::mutex> lock(mutex);
    if (!names) names = ckpt->keys();
    return *names;
  }
  const fst::Metadata& meta() const {
    std::lock_guard<std::mutex> lock(mutex);
    if (!metadata) metadata = ckpt->metadata();
    return *metadata;
  }
};

namespace fastensors::c_api {
namespace {

thread_local std::string t_last_error;

Registry<fst_file>& files() {
  static Registry<fst_file> r;
  return r;
}
Registry<fst_checkpoint>& checkpoints() {
  static Registry<fst_checkpoint> r;
  return r;
}

fst::Backend backend_arg(int backend) {
  if (backend == FST_BACKEND_MMAP) return fst::Backend::Mmap;
  if (backend == FST_BACKEND_PREAD) return fst::Backend::Pread;
  fail(FST_ERR_INVALID_ARGUMENT, "unknown backend " + std::to_string(backend) +
                                     " (FST_BACKEND_MMAP or FST_BACKEND_PREAD)");
}

void fill_info(const fst::TensorInfo& t, fst_tensor_info* out) {
  out->dtype = static_cast<fst_dtype>(t.dtype);
  out->ndim = t.shape.size();
  out->shape = t.shape.empty() ? nullptr : t.shape.data();
  out->nbytes = t.nbytes();
  out->begin = t.begin;
  out->end = t.end;
}

fst::Box box_arg(const fst::TensorInfo& t, size_t ndim, const uint64_t* start, const uint64_t* stop) {
  if (ndim == 0 && start == nullptr && stop == nullptr) return fst::whole_box(t);
  need(start, "start");
  need(stop, "stop");
  return fst::Box{std::vector<std::uint64_t>(start, start + ndim), std::vector<std::uint64_t>(stop, stop + ndim)};
}

// One read of a box: sizes checked here, so a short buffer is its own status.
void read_checked(const fst::File& file, const fst::TensorInfo& t, const fst::Box& box, int to, void* dst,
                  size_t dst_size) {
  const std::optional<fst::Dtype> target = target_arg(to);
  const std::uint64_t need_bytes = fst::box_bytes(t, box, target);
  if (dst_size < need_bytes) {
    fail(FST_ERR_BUFFER_TOO_SMALL, "the buffer holds " + std::to_string(dst_size) + " bytes; reading tensor '" +
                                       t.name + "' needs " + std::to_string(need_bytes));
  }
  if (need_bytes > 0) need(dst, "dst");
  fst::read_box(file, t, box, dst, dst_size, target);
}

template <class Pairs>
void metadata_at(const Pairs& meta, size_t i, const char** key, const char** value) {
  if (key == nullptr && value == nullptr) fail(FST_ERR_INVALID_ARGUMENT, "key and value are both NULL");
  if (i >= meta.size()) {
    fail(FST_ERR_INVALID_ARGUMENT,
         "metadata entry " + std::to_string(i) + " of " + std::to_string(meta.size()) + " entries");
  }
  if (key) *key = meta[i].first.c_str();
  if (value) *value = meta[i].second.c_str();
}

template <class Pairs>
void metadata_get(const Pairs& meta, const char* key, const char** value) {
  need(key, "key");
  need(value, "value");
  for (const auto& kv : meta) {
    if (kv.first == key) {
      *value = kv.second.c_str();
      return;
    }
  }
  *value = nullptr;
}

const char* name_at(const std::vector<std::string>& names, size_t i, const char* what) {
  if (i >= names.size()) {
    fail(FST_ERR_INVALID_ARGUMENT,
         std::string(what) + " " + std::to_string(i) + " of " + std::to_string(names.size()));
  }
  return names[i].c_str();
}

}  // namespace

void set_last_error(const char* message) noexcept {
  try {
    t_last_error = message;
  } catch (...) {
    t_last_error.clear();  // no memory for the message: an empty one
  }
}

Dtype dtype_arg(int code, const char* what) {
  if (code < 0 || code >= static_cast<int>(kDtypeCount)) {
    fail(FST_ERR_UNKNOWN_DTYPE, std::string(what) + ": " + std::to_string(code) + " is not an fst_dtype");
  }
  return static_cast<Dtype>(code);
}

std::optional<Dtype> target_arg(int code) {
  if (code == FST_DTYPE_STORED) return std::nullopt;
  return dtype_arg(code, "to");
}

}  // namespace fastensors::c_api

using namespace fastensors::c_api;

extern "C" {

uint32_t fst_abi_version(void) { return FST_ABI_VERSION; }
const char* fst_version(void) { return fst::version(); }
const char* fst_last_error(void) { return t_last_error.c_str(); }

const char* fst_status_name(int status) {
  switch (status) {
    case FST_OK: return "FST_OK";
    case FST_ERR_BUFFER_TOO_SMALL: return "FST_ERR_BUFFER_TOO_SMALL";
    case FST_ERR_OUT_OF_MEMORY: return "FST_ERR_OUT_OF_MEMORY";
    case FST_ERR_CALLBACK: return "FST_ERR_CALLBACK";
    case FST_ERR_INTERNAL: return "FST_ERR_INTERNAL";
    default: break;
  }
  // FST_ERR_<the C++ code's name>: the same names the Python classes carry.
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (int c = 0; c <= static_cast<int>(fst::kLastErrorCode); ++c) {
      out.push_back("FST_ERR_" + std::string(fst::error_code_name(static_cast<fst::ErrorCode>(c))));
    }
    return out;
  }();
  if (status >= 1 && status <= static_cast<int>(names.size())) return names[static_cast<size_t>(status - 1)].c_str();
  return "FST_ERR_UNKNOWN";
}

void fst_set_sigbus_guard(int enabled) { fst::set_sigbus_guard(enabled != 0); }
int fst_sigbus_guard_enabled(void) { return fst::sigbus_guard_enabled() ? 1 : 0; }

const char* fst_dtype_name(int dtype) {
  if (dtype < 0 || dtype >= static_cast<int>(fst::kDtypeCount)) return nullptr;
  return fst::dtype_name(static_cast<fst::Dtype>(dtype)).data();  // names are NUL-terminated literals
}

fst_status fst_dtype_parse(const char* name, fst_dtype* out) {
  return guarded([&] {
    need(name, "name");
    need(out, "out");
    auto d = fst::parse_dtype(name);
    if (!d) fail(FST_ERR_UNKNOWN_DTYPE, "unknown dtype '" + std::string(name) + "'");
    *out = static_cast<fst_dtype>(*d);
  });
}

uint32_t fst_dtype_bits(int dtype) {
  if (dtype < 0 || dtype >= static_cast<int>(fst::kDtypeCount)) return 0;
  return fst::dtype_bits(static_cast<fst::Dtype>(dtype));
}

fst_status fst_tensor_bytes(int dtype, const uint64_t* shape, size_t ndim, uint64_t* out) {
  return guarded([&] {
    const fst::Dtype d = dtype_arg(dtype, "dtype");
    if (ndim > 0) need(shape, "shape");
    need(out, "out");
    std::uint64_t elems = 1;
    for (size_t i = 0; i < ndim; ++i) {
      if (__builtin_mul_overflow(elems, shape[i], &elems)) fail(FST_ERR_OVERFLOW, "the shape's size overflows 64 bits");
    }
    std::uint64_t bits = 0;
    if (__builtin_mul_overflow(elems, std::uint64_t{fst::dtype_bits(d)}, &bits)) {
      fail(FST_ERR_OVERFLOW, "the shape's size overflows 64 bits");
    }
    if (bits % 8 != 0) fail(FST_ERR_MISALIGNED_SUB_BYTE, "the values do not fill whole bytes");
    *out = bits / 8;
  });
}

// ---- files ----

fst_status fst_file_open(const char* path, int backend, fst_file** out) {
  return guarded([&] {
    need(path, "path");
    need(out, "out");
    auto h = std::make_unique<fst_file>();
    h->file = fst::File::open(path, backend_arg(backend));
    h->names = h->file->keys();
    files().add(h.get());
    *out = h.release();
  });
}

void fst_file_close(fst_file* file) {
  if (file != nullptr && files().remove(file)) delete file;
}

fst_status fst_file_count(const fst_file* file, size_t* out) {
  return guarded([&] {
    files().check(file, "file");
    need(out, "out");
    *out = file->names.size();
  });
}

fst_status fst_file_name(const fst_file* file, size_t i, const char** out) {
  return guarded([&] {
    files().check(file, "file");
    need(out, "out");
    *out = name_at(file->names, i, "tensor");
  });
}

fst_status fst_file_info(const fst_file* file, const char* name, fst_tensor_info* out) {
  return guarded([&] {
    files().check(file, "file");
    need(name, "name");
    need(out, "out");
    fill_info(file->file->info(name), out);
  });
}

fst_status fst_file_metadata_count(const fst_file* file, size_t* out) {
  return guarded([&] {
    files().check(file, "file");
    need(out, "out");
    *out = file->file->metadata().size();
  });
}

fst_status fst_file_metadata_at(const fst_file* file, size_t i, const char** key, const char** value) {
  return guarded([&] {
    files().check(file, "file");
    metadata_at(file->file->metadata(), i, key, value);
  });
}

fst_status fst_file_metadata_get(const fst_file* file, const char* key, const char** value) {
  return guarded([&] {
    files().check(file, "file");
    metadata_get(file->file->metadata(), key, value);
  });
}

fst_status fst_file_data(const fst_file* file, const char* name, const void** out) {
  return guarded([&] {
    files().check(file, "file");
    need(name, "name");
    need(out, "out");
    const fst::TensorInfo& t = file->file->info(name);
    if (file->file->backend() != fst::Backend::Mmap) {
      fail(FST_ERR_INVALID_ARGUMENT, "the pread backend has no mapping (tensor '" + t.name + "')");
    }
    *out = file->file->data(t);
  });
}

fst_status fst_file_read(const fst_file* file, const char* name, int to, void* dst, size_t dst_size) {
  return guarded([&] {
    files().check(file, "file");
    need(name, "name");
    const fst::TensorInfo& t = file->file->info(name);
    read_checked(*file->file, t, fst::whole_box(t), to, dst, dst_size);
  });
}

fst_status fst_file_read_rows(const fst_file* file, const char* name, uint64_t row_begin, uint64_t row_end, int to,
                              void* dst, size_t dst_size) {
  return guarded([&] {
    files().check(file, "file");
    need(name, "name");
    const fst::TensorInfo& t = file->file->info(name);
    read_checked(*file->file, t, fst::row_box(t, row_begin, row_end), to, dst, dst_size);
  });
}

fst_status fst_file_read_box(const fst_file* file, const char* name, size_t ndim, const uint64_t* start,
                             const uint64_t* stop, int to, void* dst, size_t dst_size) {
  return guarded([&] {
    files().check(file, "file");
    need(name, "name");
    const fst::TensorInfo& t = file->file->info(name);
    read_checked(*file->file, t, box_arg(t, ndim, start, stop), to, dst, dst_size);
  });
}

fst_status fst_file_read_size(const fst_file* file, const char* name, size_t ndim, const uint64_t* start,
                              const uint64_t* stop, int to, uint64_t* out) {
  return guarded([&] {
    files().check(file, "file");
    need(name, "name");
    need(out, "out");
    const fst::TensorInfo& t = file->file->info(name);
    *out = fst::box_bytes(t, box_arg(t, ndim, start, stop), target_arg(to));
  });
}

// ---- checkpoints ----

fst_status fst_checkpoint_open(const char* path, int backend, fst_checkpoint** out) {
  return guarded([&] {
    need(path, "path");
    need(out, "out");
    auto h = std::make_unique<fst_checkpoint>();
    h->ckpt = fst::Checkpoint::open(path, backend_arg(backend));
    checkpoints().add(h.get());
    *out = h.release();
  });
}

void fst_checkpoint_close(fst_checkpoint* ckpt) {
  if (ckpt != nullptr && checkpoints().remove(ckpt)) delete ckpt;
}

fst_status fst_checkpoint_verify(const fst_checkpoint* ckpt) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    ckpt->ckpt->verify();
  });
}

fst_status fst_checkpoint_is_sharded(const fst_checkpoint* ckpt, int* out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(out, "out");
    *out = ckpt->ckpt->sharded() ? 1 : 0;
  });
}

fst_status fst_checkpoint_count(const fst_checkpoint* ckpt, size_t* out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(out, "out");
    *out = ckpt->keys().size();
  });
}

fst_status fst_checkpoint_name(const fst_checkpoint* ckpt, size_t i, const char** out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(out, "out");
    *out = name_at(ckpt->keys(), i, "tensor");
  });
}

fst_status fst_checkpoint_file_count(const fst_checkpoint* ckpt, size_t* out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(out, "out");
    *out = ckpt->ckpt->files().size();
  });
}

fst_status fst_checkpoint_file_name(const fst_checkpoint* ckpt, size_t i, const char** out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(out, "out");
    *out = name_at(ckpt->ckpt->files(), i, "file");
  });
}

fst_status fst_checkpoint_file_of(const fst_checkpoint* ckpt, const char* name, const char** out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(name, "name");
    need(out, "out");
    *out = ckpt->ckpt->file_of(name).c_str();
  });
}

fst_status fst_checkpoint_info(const fst_checkpoint* ckpt, const char* name, fst_tensor_info* out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(name, "name");
    need(out, "out");
    fill_info(ckpt->ckpt->info(name), out);
  });
}

fst_status fst_checkpoint_metadata_count(const fst_checkpoint* ckpt, size_t* out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(out, "out");
    *out = ckpt->meta().size();
  });
}

fst_status fst_checkpoint_metadata_at(const fst_checkpoint* ckpt, size_t i, const char** key, const char** value) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    metadata_at(ckpt->meta(), i, key, value);
  });
}

fst_status fst_checkpoint_metadata_get(const fst_checkpoint* ckpt, const char* key, const char** value) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    metadata_get(ckpt->meta(), key, value);
  });
}

fst_status fst_checkpoint_data(const fst_checkpoint* ckpt, const char* name, const void** out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(name, "name");
    need(out, "out");
    if (ckpt->ckpt->backend() != fst::Backend::Mmap) {
      fail(FST_ERR_INVALID_ARGUMENT, "the pread backend has no mapping (tensor '" + std::string(name) + "')");
    }
    *out = ckpt->ckpt->data(name);
  });
}

fst_status fst_checkpoint_read(const fst_checkpoint* ckpt, const char* name, int to, void* dst, size_t dst_size) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(name, "name");
    const fst::File& file = ckpt->ckpt->shard_of(name);
    const fst::TensorInfo& t = file.info(name);
    read_checked(file, t, fst::whole_box(t), to, dst, dst_size);
  });
}

fst_status fst_checkpoint_read_rows(const fst_checkpoint* ckpt, const char* name, uint64_t row_begin,
                                    uint64_t row_end, int to, void* dst, size_t dst_size) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(name, "name");
    const fst::File& file = ckpt->ckpt->shard_of(name);
    const fst::TensorInfo& t = file.info(name);
    read_checked(file, t, fst::row_box(t, row_begin, row_end), to, dst, dst_size);
  });
}

fst_status fst_checkpoint_read_box(const fst_checkpoint* ckpt, const char* name, size_t ndim, const uint64_t* start,
                                   const uint64_t* stop, int to, void* dst, size_t dst_size) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(name, "name");
    const fst::File& file = ckpt->ckpt->shard_of(name);
    const fst::TensorInfo& t = file.info(name);
    read_checked(file, t, box_arg(t, ndim, start, stop), to, dst, dst_size);
  });
}

fst_status fst_checkpoint_read_size(const fst_checkpoint* ckpt, const char* name, size_t ndim, const uint64_t* start,
                                    const uint64_t* stop, int to, uint64_t* out) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    need(name, "name");
    need(out, "out");
    const fst::TensorInfo& t = ckpt->ckpt->info(name);
    *out = fst::box_bytes(t, box_arg(t, ndim, start, stop), target_arg(to));
  });
}

fst_status fst_checkpoint_prefetch(const fst_checkpoint* ckpt, const char* const* names, size_t count) {
  return guarded([&] {
    checkpoints().check(ckpt, "checkpoint");
    if (count > 0) need(names, "names");
    std::vector<std::string> list;
    list.reserve(count);
    for (size_t i = 0; i < count; ++i) {
      if (names[i] == nullptr) fail(FST_ERR_INVALID_ARGUMENT, "names[" + std::to_string(i) + "] is NULL");
      list.emplace_back(names[i]);
    }
    ckpt->ckpt->prefetch(list);
  });
}

}  // extern "C"
