// What every C API function shares: the exception barrier that turns any
// C++ failure into a status and the thread's last-error message, argument
// checks, and the registry of live handles (so a closed or foreign handle is
// an error, not a use after free).
#pragma once

#include <mutex>
#include <new>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_set>
#include <utility>

#include "fastensors/dtype.hpp"
#include "fastensors/error.hpp"
#include "fastensors/fastensors.h"

namespace fastensors::c_api {

// A failure the C layer itself reports.
struct Failure {
  fst_status status;
  std::string message;
};

[[noreturn]] inline void fail(fst_status status, std::string message) { throw Failure{status, std::move(message)}; }

void set_last_error(const char* message) noexcept;

template <class F>
fst_status guarded(F&& body) noexcept {
  try {
    body();
    return FST_OK;
  } catch (const Failure& f) {
    set_last_error(f.message.c_str());
    return f.status;
  } catch (const Error& e) {
    set_last_error(e.what());
    return static_cast<fst_status>(static_cast<int>(e.code()) + 1);
  } catch (const std::bad_alloc&) {
    set_last_error("out of memory");
    return FST_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error(e.what());
    return FST_ERR_INTERNAL;
  } catch (...) {
    set_last_error("unknown internal error");
    return FST_ERR_INTERNAL;
  }
}

template <class T>
void need(const T* p, const char* what) {
  if (p == nullptr) fail(FST_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

Dtype dtype_arg(int code, const char* what);
// FST_DTYPE_STORED -> empty.
std::optional<Dtype> target_arg(int code);

// Live handles of one type.
template <class H>
class Registry {
 public:
  void add(const H* h) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    live_.insert(h);
  }
  bool remove(const H* h) {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    return live_.erase(h) != 0;
  }
  void check(const H* h, const char* what) const {
    if (h == nullptr) fail(FST_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
    std::shared_lock<std::shared_mutex> lock(mutex_);
    if (live_.count(h) == 0) fail(FST_ERR_INVALID_ARGUMENT, std::string(what) + " is closed or not a handle");
  }

 private:
  mutable std::shared_mutex mutex_;
  std::unordered_set<const H*> live_;
};

}  // namespace fastensors::c_api
