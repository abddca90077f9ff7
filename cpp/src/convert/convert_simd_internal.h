// Private to the library: the loop every SIMD kernel shares. Internal
// linkage for the same reason as convert_scalar_internal.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include <immintrin.h>

namespace fastensors::detail {
namespace {

// Runs Op over `n` elements. Op provides:
//   kIn, kOut   bytes per input and output element
//   kStep       elements per block; kStep * kOut is a multiple of kAlign
//   kAlign      the width of its stores
//   block<Stream>(src, dst)  one block; aligned stores when Stream
//   scalar(src, dst, n)      the reference loop, for the head and the tail
// With `stream`, the head is converted element by element until the output
// is aligned, the blocks use non-temporal stores, and a fence orders them
// before the return.
// How far ahead of the block being converted its input is prefetched. One
// core's streaming read rate is limited by how many cache misses it keeps in
// flight; asking for lines 2 KiB ahead (beyond what the hardware prefetcher
// has requested) raises it, which is what the narrowing kernels, reading two
// to eight times what they write, are bound by on one core.
constexpr std::size_t kPrefetchDistance = 2048;

template <class Op>
inline void prefetch_block(const unsigned char* s) noexcept {
  for (std::size_t off = 0; off < Op::kStep * Op::kIn; off += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(s + kPrefetchDistance + off), _MM_HINT_T0);
  }
}

template <class Op>
inline void run_blocks(const void* src, void* dst, std::size_t n, bool stream) noexcept {
  static_assert((Op::kStep * Op::kOut) % Op::kAlign == 0, "a block must keep the output aligned");
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  std::size_t i = 0;
  const auto addr = reinterpret_cast<std::uintptr_t>(d);
  if (stream && addr % Op::kOut == 0) {
    const std::size_t mis = addr % Op::kAlign;
    std::size_t head = mis ? (Op::kAlign - mis) / Op::kOut : 0;
    if (head > n) head = n;
    Op::scalar(s, d, head);
    i = head;
    for (; i + Op::kStep <= n; i += Op::kStep) {
      prefetch_block<Op>(s + i * Op::kIn);
      Op::template block<true>(s + i * Op::kIn, d + i * Op::kOut);
    }
    _mm_sfence();
  } else {
    for (; i + Op::kStep <= n; i += Op::kStep) {
      prefetch_block<Op>(s + i * Op::kIn);
      Op::template block<false>(s + i * Op::kIn, d + i * Op::kOut);
    }
  }
  Op::scalar(s + i * Op::kIn, d + i * Op::kOut, n - i);
}

template <class Op>
inline void kernel(const void* src, void* dst, std::size_t n, bool stream) noexcept {
  run_blocks<Op>(src, dst, n, stream);
}

}  // namespace
}  // namespace fastensors::detail
