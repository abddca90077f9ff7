#include "io/mapping_guard_internal.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "fastensors/error.hpp"
#include "fastensors/sigbus_guard.hpp"

// The build's default for the guard (CMake option FASTENSORS_SIGBUS_GUARD).
#ifndef FASTENSORS_SIGBUS_GUARD_DEFAULT
#define FASTENSORS_SIGBUS_GUARD_DEFAULT 1
#endif

namespace fastensors::detail {
namespace {

// A fixed table, so the signal handler reads it without locks or allocation.
constexpr int kSlots = 4096;

enum State : int { kFree = 0, kBusy = 1, kLive = 2 };

struct Slot {
  std::atomic<int> state{kFree};
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::uintptr_t> end{0};
  std::atomic<int> readers{0};      // open guards
  std::atomic<bool> faulted{false}; // a page was replaced: the data is gone
  int fd = -1;
  std::uint64_t file_size = 0;
};

Slot g_slots[kSlots];
std::atomic<int> g_used{0};  // every live slot is below this index
std::uintptr_t g_page = 4096;
struct sigaction g_previous;
std::once_flag g_installed;
std::atomic<bool> g_handler_installed{false};
// -1: not decided yet (the environment, then the build default, decide).
std::atomic<int> g_enabled{-1};

bool guard_enabled() noexcept {
  int state = g_enabled.load(std::memory_order_acquire);
  if (state < 0) {
    const char* env = std::getenv("FASTENSORS_SIGBUS_GUARD");
    int decided = FASTENSORS_SIGBUS_GUARD_DEFAULT;
    if (env != nullptr && (std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0)) decided = env[0] - '0';
    // A concurrent set_sigbus_guard wins over the default.
    g_enabled.compare_exchange_strong(state, decided, std::memory_order_acq_rel);
    state = g_enabled.load(std::memory_order_acquire);
  }
  return state == 1;
}

// Hands a signal the guard does not own to whoever had it before.
void chain(int sig, siginfo_t* info, void* context) {
  const struct sigaction& prev = g_previous;
  if ((prev.sa_flags & SA_SIGINFO) != 0 && prev.sa_sigaction != nullptr) {
    prev.sa_sigaction(sig, info, context);
    return;
  }
  if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    prev.sa_handler(sig);
    return;
  }
  const bool from_kernel = info != nullptr && info->si_code > 0;
  if (prev.sa_handler == SIG_IGN && !from_kernel) return;
  // Default action: restore it and let the fault recur (or re-raise a sent
  // signal), so the process ends exactly as it would have without us.
  struct sigaction dfl = {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
  if (!from_kernel) raise(sig);
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  if (info != nullptr && info->si_code > 0) {
    const auto addr = reinterpret_cast<std::uintptr_t>(info->si_addr);
    const int used = g_used.load(std::memory_order_acquire);
    for (int i = 0; i < used; ++i) {
      Slot& s = g_slots[i];
      if (s.state.load(std::memory_order_acquire) != kLive || s.readers.load(std::memory_order_acquire) == 0) continue;
      if (addr < s.begin.load(std::memory_order_relaxed) || addr >= s.end.load(std::memory_order_relaxed)) continue;
      // mmap is a plain system call; a zero page lets the faulting read finish.
      void* page = reinterpret_cast<void*>(addr & ~(g_page - 1));
      void* got = ::mmap(page, g_page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
      if (got == page) {
        s.faulted.store(true, std::memory_order_release);
        errno = saved_errno;
        return;
      }
      break;
    }
  }
  errno = saved_errno;
  chain(sig, info, context);
}

void install() {
  g_page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  struct sigaction sa = {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &g_previous);
  g_handler_installed.store(true, std::memory_order_release);
}

int find_slot(const void* p) noexcept {
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  const int used = g_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    const Slot& s = g_slots[i];
    if (s.state.load(std::memory_order_acquire) == kLive && addr >= s.begin.load(std::memory_order_relaxed) &&
        addr < s.end.load(std::memory_order_relaxed)) {
      return i;
    }
  }
  return -1;
}

}  // namespace

int register_mapping(const void* base, std::size_t size, int fd, std::uint64_t file_size) noexcept {
  if (size == 0 || !guard_enabled()) return -1;
  std::call_once(g_installed, install);
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    int expected = kFree;
    if (!s.state.compare_exchange_strong(expected, kBusy, std::memory_order_acq_rel)) continue;
    s.fd = fd;
    s.file_size = file_size;
    s.readers.store(0, std::memory_order_relaxed);
    s.faulted.store(false, std::memory_order_relaxed);
    s.begin.store(reinterpret_cast<std::uintptr_t>(base), std::memory_order_relaxed);
    s.end.store(reinterpret_cast<std::uintptr_t>(base) + size, std::memory_order_relaxed);
    s.state.store(kLive, std::memory_order_release);
    int used = g_used.load(std::memory_order_relaxed);
    while (used < i + 1 && !g_used.compare_exchange_weak(used, i + 1, std::memory_order_acq_rel)) {
    }
    return i;
  }
  return -1;
}

void unregister_mapping(int handle) noexcept {
  if (handle < 0 || handle >= kSlots) return;
  Slot& s = g_slots[handle];
  s.state.store(kBusy, std::memory_order_release);
  s.begin.store(0, std::memory_order_relaxed);
  s.end.store(0, std::memory_order_relaxed);
  s.fd = -1;
  s.state.store(kFree, std::memory_order_release);
}

MappedReadGuard::MappedReadGuard(const void* src, const std::string& path) : path_(path) {
  slot_ = find_slot(src);
  if (slot_ < 0) return;
  g_slots[slot_].readers.fetch_add(1, std::memory_order_acq_rel);
  try {
    check();
  } catch (...) {
    g_slots[slot_].readers.fetch_sub(1, std::memory_order_acq_rel);
    throw;
  }
}

MappedReadGuard::~MappedReadGuard() {
  if (slot_ >= 0) g_slots[slot_].readers.fetch_sub(1, std::memory_order_acq_rel);
}

void MappedReadGuard::finish() const {
  if (slot_ >= 0) check();
}

void MappedReadGuard::check() const {
  Slot& s = g_slots[slot_];
  struct stat st;
  const bool shrank = ::fstat(s.fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) < s.file_size;
  if (shrank) s.faulted.store(true, std::memory_order_release);
  if (s.faulted.load(std::memory_order_acquire)) {
    throw Error(ErrorCode::FileChanged,
                "the file was truncated or replaced in place while mapped (" +
                    (shrank ? std::to_string(st.st_size) + " bytes now, " + std::to_string(s.file_size) + " when opened"
                            : std::string("a read past its new end")) +
                    "); reopen it",
                path_);
  }
}

}  // namespace fastensors::detail

namespace fastensors {

void set_sigbus_guard(bool enabled) noexcept { detail::g_enabled.store(enabled ? 1 : 0, std::memory_order_release); }
bool sigbus_guard_enabled() noexcept { return detail::guard_enabled(); }
bool sigbus_guard_installed() noexcept { return detail::g_handler_installed.load(std::memory_order_acquire); }

}  // namespace fastensors
