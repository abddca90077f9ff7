// Reads from a file mapping that survive the file being truncated underneath.
//
// A mapped page past the end of a shrunken file raises SIGBUS on access,
// which would kill the process. Every mapping File makes is registered here;
// while a MappedReadGuard is open on it (the library's own copies,
// conversions, quantization and writes from it), a SIGBUS inside it is caught
// on whatever thread it happens (OpenMP workers included): the faulting page
// is replaced by a page of zeros so the instruction completes, the mapping is
// marked changed, and the guard's finish() throws FileChanged. Faults
// anywhere else, or in a mapping no guard is reading, go to the handler that
// was installed before (by default: the process dies, as without fastensors).
// Size checks (fstat) before and after the work catch a shrink that only cut
// the last, partial page, which reads zeros instead of faulting.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <optional>
#include <string>

namespace fastensors::detail {

// Registers [base, base + size) mapped from `fd` (of `file_size` bytes at
// mapping time). Returns a handle for unregister_mapping, or -1 when the
// table is full (the mapping is then read unguarded). Installs the SIGBUS
// handler on first use.
int register_mapping(const void* base, std::size_t size, int fd, std::uint64_t file_size) noexcept;
void unregister_mapping(int handle) noexcept;

class MappedReadGuard {
 public:
  // `src` is any address the work will read; when it lies in a registered
  // mapping that mapping is guarded until destruction. Throws FileChanged at
  // once when the file already shrank. `path` labels the error.
  explicit MappedReadGuard(const void* src, const std::string& path = {});
  ~MappedReadGuard();
  MappedReadGuard(const MappedReadGuard&) = delete;
  MappedReadGuard& operator=(const MappedReadGuard&) = delete;

  // Throws FileChanged when the mapping faulted or the file shrank while the
  // guard was open: the work's output must then be discarded.
  void finish() const;

 private:
  void check() const;
  int slot_ = -1;
  std::string path_;
};

// Guards the inputs of one kernel call for the whole scope, with finish() on
// the normal way out: a kernel with several inputs and early returns needs
// one line. The destructor throws (only when no exception is already in
// flight), which is what lets the check run after every return statement.
class GuardedInputs {
 public:
  GuardedInputs(std::initializer_list<const void*> inputs) {
    std::size_t i = 0;
    for (const void* p : inputs) {
      if (i < kMax && p != nullptr) guards_[i++].emplace(p);
    }
  }
  ~GuardedInputs() noexcept(false) {
    if (std::uncaught_exceptions() > in_flight_) return;
    for (const auto& g : guards_) {
      if (g) g->finish();
    }
  }
  GuardedInputs(const GuardedInputs&) = delete;
  GuardedInputs& operator=(const GuardedInputs&) = delete;

 private:
  static constexpr std::size_t kMax = 3;
  std::optional<MappedReadGuard> guards_[kMax];
  int in_flight_ = std::uncaught_exceptions();
};

}  // namespace fastensors::detail
