#include "fastensors/convert_file.hpp"
#include "fastensors/read_plan.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "format/checked_math_internal.h"

namespace fastensors {
namespace {

// plan_header checks that a tensor with bytes has a data pointer, but never
// reads it: the bytes are streamed later, chunk by chunk.
const unsigned char kNotRead = 0;

// How far the source is read ahead of the conversion.
constexpr std::uint64_t kReadAheadBytes = 256ull << 20;

std::uint64_t converted_nbytes(const TensorInfo& t, Dtype to) {
  std::uint64_t n;
  if (detail::mul_overflows(t.numel(), dtype_bits(to) / 8, &n)) {
    throw Error(ErrorCode::Overflow, "the converted size overflows 64 bits", {}, t.name);
  }
  return n;
}

// Two buffers and a writer thread: while the writer hands one buffer to
// write(2) (the kernel's copy into the page cache is the slowest step), this
// thread reads and converts the next chunk into the other.
class WritePipeline {
 public:
  WritePipeline(AtomicFile& out, std::size_t slot_bytes) : out_(out), written_(out.written()) {
    for (auto& s : slots_) s.buf.reset(new unsigned char[std::max<std::size_t>(slot_bytes, 8)]);
    writer_ = std::thread([this] { drain(); });
  }

  ~WritePipeline() {
    if (writer_.joinable()) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_ = true;  // abandoned (an exception on this thread): write nothing more
      }
      changed_.notify_all();
      writer_.join();
    }
  }

  WritePipeline(const WritePipeline&) = delete;
  WritePipeline& operator=(const WritePipeline&) = delete;

  // The next buffer to fill, once the writer is done with it.
  unsigned char* acquire() {
    std::unique_lock<std::mutex> lock(mutex_);
    Slot& s = slots_[next_fill_];
    changed_.wait(lock, [&] { return !s.full || error_; });
    if (error_) std::rethrow_exception(error_);
    return s.buf.get();
  }

  // Hands the buffer from acquire() to the writer.
  void publish(std::size_t size) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      Slot& s = slots_[next_fill_];
      s.size = size;
      s.full = true;
      next_fill_ ^= 1;
    }
    changed_.notify_all();
  }

  std::uint64_t written() const noexcept { return written_.load(std::memory_order_relaxed); }

  // Waits until everything published is written; rethrows a write error.
  void finish() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finishing_ = true;
    }
    changed_.notify_all();
    writer_.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Slot {
    std::unique_ptr<unsigned char[]> buf;
    std::size_t size = 0;
    bool full = false;
  };

  void drain() noexcept {
    std::size_t k = 0;
    for (;;) {
      Slot* s;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [&] { return stop_ || slots_[k].full || finishing_; });
        if (stop_ || !slots_[k].full) return;  // abandoned, or finished and drained
        s = &slots_[k];
      }
      try {
        out_.write(s->buf.get(), s->size);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = std::current_exception();
        changed_.notify_all();
        return;
      }
      written_.store(out_.written(), std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        s->full = false;
      }
      changed_.notify_all();
      k ^= 1;
    }
  }

  AtomicFile& out_;
  Slot slots_[2];
  std::size_t next_fill_ = 0;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::exception_ptr error_;
  bool stop_ = false;
  bool finishing_ = false;
  std::atomic<std::uint64_t> written_;
  std::thread writer_;
};

}  // namespace

FileConversionResult convert_file(const std::string& src, const std::string& dst,
                                  const std::vector<std::pair<std::string, Dtype>>& targets,
                                  const FileConversionOptions& options) {
  // Mapped, so that the read engine can make the next tensors resident while
  // this one is converted (parallel requests, a bounded window ahead); each
  // tensor's pages leave the resident set once it is written.
  std::shared_ptr<File> in = File::open(src, Backend::Mmap);
  const Header& header = in->header();

  std::vector<Dtype> to(header.tensors.size());
  for (std::size_t i = 0; i < header.tensors.size(); ++i) to[i] = header.tensors[i].dtype;
  for (const auto& [name, dtype] : targets) {
    const TensorInfo* t = header.find(name);
    if (t == nullptr) throw Error(ErrorCode::TensorNotFound, "no such tensor to convert", src, name);
    const std::size_t i = static_cast<std::size_t>(&header.at(name) - header.tensors.data());
    if (t->dtype != dtype && !can_convert(t->dtype, dtype)) {
      throw Error(ErrorCode::UnsupportedConversion,
                  "cannot convert " + std::string(dtype_name(t->dtype)) + " to " + std::string(dtype_name(dtype)) +
                      " (see docs/dtypes.md for the supported pairs)",
                  src, name);
    }
    to[i] = dtype;
  }

  std::vector<TensorSource> sources(header.tensors.size());
  FileConversionResult result;
  std::uint64_t largest_in = 0;
  std::size_t widest_ratio = 1;
  for (std::size_t i = 0; i < header.tensors.size(); ++i) {
    const TensorInfo& t = header.tensors[i];
    TensorSource& s = sources[i];
    s.name = t.name;
    s.dtype = to[i];
    s.shape = t.shape;
    s.nbytes = to[i] == t.dtype ? t.nbytes() : converted_nbytes(t, to[i]);
    s.data = s.nbytes ? &kNotRead : nullptr;
    largest_in = std::max(largest_in, t.nbytes());
    if (to[i] != t.dtype) {
      ++result.converted;
      widest_ratio = std::max<std::size_t>(widest_ratio, (dtype_bits(to[i]) + dtype_bits(t.dtype) - 1) / dtype_bits(t.dtype));
    } else {
      ++result.copied;
    }
  }
  const HeaderPlan plan = plan_header(sources, header.metadata, header.has_metadata);
  result.file_size = plan.total_size();
  result.data_size = plan.data_size;

  // Chunks hold whole elements of every dtype (widths divide 8).
  std::size_t chunk = std::max<std::size_t>(options.chunk_bytes / 8 * 8, 8);
  chunk = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, (largest_in + 7) / 8 * 8));
  chunk = std::max<std::size_t>(chunk, 8);
  std::unique_ptr<unsigned char[]> in_buf(result.converted ? new unsigned char[chunk] : nullptr);

  // The output buffers are read right back by write(): keep them in the
  // caches. One thread converts: the other core is writing.
  ConvertOptions convert_options = options.convert;
  if (!convert_options.stream) convert_options.stream = false;
  if (convert_options.threads == 0) convert_options.threads = 1;

  AtomicFile out(dst, options.write);
  out.write(plan.bytes.data(), plan.bytes.size());
  if (options.progress) options.progress(out.written(), result.file_size);
  ReadPlan ahead;
  std::vector<std::size_t> entry(header.tensors.size());
  for (std::size_t idx : plan.order) {
    const TensorInfo& t = header.tensors[idx];
    entry[idx] = ahead.prefetch(in, header.data_start + t.begin, t.nbytes());
  }
  ReadOptions read_options;
  read_options.window_bytes = kReadAheadBytes;
  ReadJob reading(std::move(ahead), read_options);
  {
    WritePipeline pipe(out, chunk * widest_ratio);
    for (std::size_t idx : plan.order) {
      const TensorInfo& t = header.tensors[idx];
      reading.wait_entry(entry[idx]);
      const Dtype target = to[idx];
      const std::size_t in_width = dtype_bits(t.dtype) / 8;
      const std::size_t out_width = dtype_bits(target) / 8;
      const std::uint64_t total = t.nbytes();
      for (std::uint64_t offset = 0; offset < total;) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, total - offset));
        unsigned char* slot = pipe.acquire();
        if (target == t.dtype) {
          in->read(t, offset, slot, n);
          pipe.publish(n);
        } else {
          in->read(t, offset, in_buf.get(), n);
          const std::size_t count = n / in_width;
          convert(t.dtype, in_buf.get(), target, slot, count, convert_options);
          pipe.publish(count * out_width);
        }
        offset += n;
        if (options.progress) options.progress(pipe.written(), result.file_size);
      }
      in->release(t);
    }
    pipe.finish();
  }
  if (options.progress) options.progress(out.written(), result.file_size);
  if (out.written() != result.file_size) {
    throw Error(ErrorCode::Io, "wrote " + std::to_string(out.written()) + " bytes, planned " +
                                   std::to_string(result.file_size), dst);
  }
  out.commit();
  return result;
}

}  // namespace fastensors
