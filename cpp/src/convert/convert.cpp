// The conversion dispatcher: builds one kernel table per level (the level
// itself is chosen by cpu/isa.cpp), validates pairs and sizes, and splits
// large buffers across OpenMP threads. Compiled for the baseline; only the
// files under convert/x86/ use wider instructions.
#include "fastensors/convert.hpp"

#include <algorithm>
#include <cstring>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#if defined(FASTENSORS_HAVE_OPENMP)
#include <omp.h>
#include <pthread.h>

#include <atomic>
#endif

#include "convert/convert_internal.h"
#include "cpu/isa_internal.h"
#include "fastensors/error.hpp"
#include "format/checked_math_internal.h"
#include "io/mapping_guard_internal.h"

namespace fastensors {
namespace {

// Threads take blocks of the buffer from a shared counter (dynamic
// scheduling), so a thread that loses its CPU to another process delays only
// its current block, not a fixed half of the work. Blocks are multiples of 64
// elements, so threads never write the same cache line, and there are about
// kBlocksPerThread of them per thread, each at least kMinBlockElements.
constexpr std::size_t kSplitAlign = 64;
constexpr std::size_t kBlocksPerThread = 16;
constexpr std::size_t kMinBlockElements = std::size_t{1} << 16;

struct Tables {
  detail::KernelTable level[kIsaCount];

  Tables() {
    detail::add_scalar_kernels(level[0]);
    level[1] = level[0];
#if defined(FASTENSORS_HAVE_AVX2_KERNELS)
    detail::add_avx2_kernels(level[1]);
#endif
    level[2] = level[1];
#if defined(FASTENSORS_HAVE_AVX512_KERNELS)
    detail::add_avx512_kernels(level[2]);
#endif
    level[3] = level[2];
#if defined(FASTENSORS_HAVE_AVX512BF16_KERNELS)
    detail::add_avx512bf16_kernels(level[3]);
#endif
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

// The kernels assume the default floating-point environment: round to
// nearest even, no flush-to-zero, no denormals-are-zero. A caller's other
// settings (some libraries set FTZ/DAZ) would otherwise change results.
class DefaultFpEnv {
 public:
#if defined(__x86_64__) || defined(__i386__)
  DefaultFpEnv() noexcept : saved_(_mm_getcsr()) { _mm_setcsr(0x1F80); }
  // Restoring also drops the exception flags the conversion raised
  // (overflow, inexact): conversions report nothing through them.
  ~DefaultFpEnv() { _mm_setcsr(saved_); }

 private:
  unsigned saved_;
#else
  DefaultFpEnv() noexcept = default;
#endif
};

#if defined(FASTENSORS_HAVE_OPENMP)
// GNU OpenMP is not fork-safe: in a child forked after the parent ran a
// parallel region, the next region waits forever for the parent's threads.
// A child of such a parent converts on one thread instead (as PyTorch does).
std::atomic<bool> g_openmp_used{false};
std::atomic<bool> g_openmp_unusable{false};

void after_fork_in_child() {
  if (g_openmp_used.load(std::memory_order_relaxed)) g_openmp_unusable.store(true, std::memory_order_relaxed);
}

bool openmp_usable() {
  static const bool registered = ::pthread_atfork(nullptr, nullptr, after_fork_in_child) == 0;
  return registered && !g_openmp_unusable.load(std::memory_order_relaxed);
}
#endif

int thread_count(const ConvertOptions& options, std::size_t bytes) {
#if defined(FASTENSORS_HAVE_OPENMP)
  if (bytes < kParallelThresholdBytes || !openmp_usable()) return 1;
  int n = options.threads > 0 ? options.threads : omp_get_max_threads();
  return std::max(n, 1);
#else
  (void)options;
  (void)bytes;
  return 1;
#endif
}

detail::ConvertKernel kernel_for(Dtype from, Dtype to, const ConvertOptions& options) {
  if (!can_convert(from, to)) {
    throw Error(ErrorCode::UnsupportedConversion,
                "cannot convert " + std::string(dtype_name(from)) + " to " + std::string(dtype_name(to)) +
                    " (see docs/dtypes.md for the supported pairs)");
  }
  Isa isa = options.isa ? *options.isa : active_isa();
  detail::require_isa(isa);
  return tables().level[static_cast<std::size_t>(isa)].at(from, to);
}

// Elements per block when `threads` threads share `count` elements.
std::size_t block_size(std::size_t count, int threads) {
  std::size_t per = count / (static_cast<std::size_t>(threads) * kBlocksPerThread);
  per = std::max(per, kMinBlockElements);
  return (per + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
}

// Runs body(begin, end) over [0, count) in blocks on `threads` threads, each
// under the default floating-point environment.
template <class Body>
void parallel_blocks(std::size_t count, int threads, const Body& body) {
  const std::size_t block = block_size(count, threads);
  const auto blocks = static_cast<std::int64_t>((count + block - 1) / block);
#if defined(FASTENSORS_HAVE_OPENMP)
  g_openmp_used.store(true, std::memory_order_relaxed);
#pragma omp parallel num_threads(threads)
  {
    DefaultFpEnv env;
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::size_t begin = static_cast<std::size_t>(b) * block;
      body(begin, std::min(count, begin + block));
    }
  }
#else
  (void)threads;
  DefaultFpEnv env;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::size_t begin = static_cast<std::size_t>(b) * block;
    body(begin, std::min(count, begin + block));
  }
#endif
}

}  // namespace

bool can_convert(Dtype from, Dtype to) noexcept {
  return tables().level[0].at(from, to) != nullptr;
}

void convert(Dtype from, const void* src, Dtype to, void* dst, std::size_t count, const ConvertOptions& options) {
  const detail::ConvertKernel kernel = kernel_for(from, to, options);
  if (count == 0) return;
  const detail::GuardedInputs guard{src};  // a truncated mapped file: FileChanged, not SIGBUS
  const std::size_t in = dtype_bits(from) / 8;
  const std::size_t out = dtype_bits(to) / 8;
  const bool stream = options.stream ? *options.stream : count * out >= kStreamThresholdBytes;
  const int threads = thread_count(options, count * (in + out));
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  if (threads <= 1) {
    DefaultFpEnv env;
    kernel(s, d, count, stream);
    return;
  }
  parallel_blocks(count, threads, [&](std::size_t begin, std::size_t end) {
    kernel(s + begin * in, d + begin * out, end - begin, stream);
  });
}

void convert_bytes(Dtype from, const void* src, std::size_t src_bytes, Dtype to, void* dst, std::size_t dst_bytes,
                   const ConvertOptions& options) {
  const std::size_t in = dtype_bits(from) / 8;
  const std::size_t out = dtype_bits(to) / 8;
  if (in == 0 || out == 0) kernel_for(from, to, options);  // sub-byte: throws UnsupportedConversion
  if (src_bytes % in != 0 || dst_bytes % out != 0 || src_bytes / in != dst_bytes / out) {
    throw Error(ErrorCode::SizeMismatch,
                std::to_string(src_bytes) + " bytes of " + std::string(dtype_name(from)) + " and " +
                    std::to_string(dst_bytes) + " bytes of " + std::string(dtype_name(to)) +
                    " are not the same number of elements");
  }
  convert(from, src, to, dst, src_bytes / in, options);
}

namespace {

// Converts flat elements [begin, end) of a strided array into dst[begin, end).
void strided_range(detail::ConvertKernel kernel, const unsigned char* src, const std::vector<std::int64_t>& shape,
                   const std::vector<std::int64_t>& strides, std::size_t in, std::size_t out, unsigned char* dst,
                   std::size_t begin, std::size_t end) {
  const std::size_t nd = shape.size();
  const auto inner = static_cast<std::size_t>(shape[nd - 1]);
  const std::int64_t inner_stride = strides[nd - 1];
  const bool contiguous_rows = inner_stride == static_cast<std::int64_t>(in);
  constexpr std::size_t kBlock = 2048;
  alignas(64) unsigned char gathered[kBlock * 8];

  std::size_t idx = begin;
  while (idx < end) {
    std::size_t row = idx / inner;
    const std::size_t col = idx % inner;
    // Address of element [row..., col]: decompose the row over the outer axes.
    std::int64_t offset = static_cast<std::int64_t>(col) * inner_stride;
    for (std::size_t ax = nd - 1; ax-- > 0;) {
      const auto dim = static_cast<std::size_t>(shape[ax]);
      offset += static_cast<std::int64_t>(row % dim) * strides[ax];
      row /= dim;
    }
    const unsigned char* p = src + offset;
    const std::size_t run = std::min(inner - col, end - idx);
    if (contiguous_rows) {
      kernel(p, dst + idx * out, run, false);
    } else {
      for (std::size_t done = 0; done < run;) {
        const std::size_t m = std::min(kBlock, run - done);
        for (std::size_t k = 0; k < m; ++k) {
          std::memcpy(gathered + k * in, p + static_cast<std::int64_t>(done + k) * inner_stride, in);
        }
        kernel(gathered, dst + (idx + done) * out, m, false);
        done += m;
      }
    }
    idx += run;
  }
}

}  // namespace

void convert_strided(Dtype from, const void* src, const std::vector<std::int64_t>& shape,
                     const std::vector<std::int64_t>& src_strides, Dtype to, void* dst, std::size_t dst_bytes,
                     const ConvertOptions& options) {
  const detail::ConvertKernel kernel = kernel_for(from, to, options);
  if (shape.size() != src_strides.size()) {
    throw Error(ErrorCode::InvalidArgument, "shape and strides have different lengths");
  }
  std::uint64_t count = 1;
  for (auto d : shape) {
    if (d < 0) throw Error(ErrorCode::InvalidArgument, "negative dimension");
    if (detail::mul_overflows(count, static_cast<std::uint64_t>(d), &count)) {
      throw Error(ErrorCode::Overflow, "the number of elements overflows 64 bits");
    }
  }
  const std::size_t in = dtype_bits(from) / 8;
  const std::size_t out = dtype_bits(to) / 8;
  if (count * out != dst_bytes) {
    throw Error(ErrorCode::SizeMismatch, std::to_string(count) + " elements of " + std::string(dtype_name(to)) +
                                             " need " + std::to_string(count * out) + " bytes, the output has " +
                                             std::to_string(dst_bytes));
  }
  if (count == 0) return;
  const detail::GuardedInputs guard{src};

  // Contiguous after all: the flat path (with streaming stores and threads).
  bool contiguous = true;
  std::int64_t expect = static_cast<std::int64_t>(in);
  for (std::size_t ax = shape.size(); ax-- > 0;) {
    if (shape[ax] != 1 && src_strides[ax] != expect) contiguous = false;
    expect *= shape[ax];
  }
  if (contiguous) {
    convert(from, src, to, dst, count, options);
    return;
  }
  // Rank 0 cannot reach here (a scalar is contiguous).
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  const int threads = thread_count(options, count * (in + out));
  if (threads <= 1) {
    DefaultFpEnv env;
    strided_range(kernel, s, shape, src_strides, in, out, d, 0, count);
    return;
  }
  parallel_blocks(count, threads, [&](std::size_t begin, std::size_t end) {
    strided_range(kernel, s, shape, src_strides, in, out, d, begin, end);
  });
}

}  // namespace fastensors

namespace fastensors::detail {

void set_copy_kernels(KernelTable& table, const ConvertKernel (&copies)[4]) noexcept {
  for (std::size_t i = 0; i < kDtypeCount; ++i) {
    const Dtype d = all_dtypes()[i];
    switch (dtype_bits(d)) {
      case 8: table.at(d, d) = copies[0]; break;
      case 16: table.at(d, d) = copies[1]; break;
      case 32: table.at(d, d) = copies[2]; break;
      case 64: table.at(d, d) = copies[3]; break;
      default: break;
    }
  }
}

ConvertKernel level_kernel(Isa isa, Dtype from, Dtype to) noexcept {
  if (!isa_supported(isa)) isa = Isa::Scalar;
  return tables().level[static_cast<std::size_t>(isa)].at(from, to);
}

}  // namespace fastensors::detail
