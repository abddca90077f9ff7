// The read engine: executes a ReadPlan with a few worker threads, each
// issuing large requests, so the storage sees a deep queue instead of one
// page fault at a time. docs/read_engine.md has the design and measurements.
//
// A plan's entries become requests in plan order (the order the consumer
// wants them): consecutive entries of one file whose bytes are adjacent are
// joined (one preadv for reads; one populate for prefetches less than
// kPrefetchGap apart), and anything larger than request_bytes is split.
// Prefetch requests whose pages are all in the page cache are dropped before
// any thread starts, so a warm load costs one cachestat call per request.
#include "fastensors/read_plan.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "fastensors/error.hpp"
#include "io/mapping_guard_internal.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif

namespace fastensors {
namespace {

constexpr std::uint64_t kDefaultRequest = 8ull << 20;
constexpr std::uint64_t kMinRequest = 512ull << 10;
constexpr unsigned kDefaultThreads = 8;
constexpr unsigned kMaxThreads = 256;
// Prefetches closer than this are one request: reading the gap costs less
// than another round trip.
constexpr std::uint64_t kPrefetchGap = 64ull << 10;
constexpr std::size_t kMaxSegments = 512;  // iovecs per preadv, below IOV_MAX

std::uint64_t page_size() {
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

unsigned thread_count(unsigned asked) {
  if (asked != 0) return std::min(asked, kMaxThreads);
  if (const char* env = std::getenv("FASTENSORS_READ_THREADS")) {
    char* end = nullptr;
    const unsigned long n = std::strtoul(env, &end, 10);
    if (end != env && *end == '\0' && n > 0) return static_cast<unsigned>(std::min<unsigned long>(n, kMaxThreads));
  }
  return kDefaultThreads;
}

// Pages of [offset, offset + size) of `fd` in the page cache: cachestat(2)
// (Linux 6.5) counts them without touching the mapping; mincore(2) on the
// mapping otherwise. -1 when neither answers (treated as not cached).
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct CachestatRange {
  std::uint64_t off, len;
};
struct Cachestat {
  std::uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
std::atomic<bool> g_cachestat_works{true};

bool pages_cached(int fd, const std::uint8_t* map, std::uint64_t begin, std::uint64_t end) {
  const std::uint64_t page = page_size();
  const std::uint64_t pages = (end - begin + page - 1) / page;
  if (g_cachestat_works.load(std::memory_order_relaxed)) {
    CachestatRange range{begin, end - begin};
    Cachestat cs{};
    if (::syscall(__NR_cachestat, fd, &range, &cs, 0) == 0) return cs.nr_cache >= pages;
    if (errno == ENOSYS) g_cachestat_works.store(false, std::memory_order_relaxed);
  }
  if (map == nullptr) return false;
  std::vector<unsigned char> vec(static_cast<std::size_t>(pages));
  if (::mincore(const_cast<std::uint8_t*>(map) + begin, end - begin, vec.data()) != 0) return false;
  for (unsigned char v : vec) {
    if ((v & 1) == 0) return false;
  }
  return true;
}

// Whether a request's pages are cached, by probes: both checks cost time in
// proportion to the pages (a 2 GiB warm load spent 16 ms counting), so a long
// request is judged by kProbes runs of kProbePages pages spread over it,
// its first and last pages included. A request judged cached that is not
// quite is read by the consumer's own page faults: slower, never wrong.
constexpr std::uint64_t kProbes = 8;
constexpr std::uint64_t kProbePages = 4;

bool all_cached(int fd, const std::uint8_t* map, std::uint64_t begin, std::uint64_t end) {
  const std::uint64_t page = page_size();
  const std::uint64_t pages = (end - begin + page - 1) / page;
  if (pages <= kProbes * kProbePages * 2) return pages_cached(fd, map, begin, end);
  const std::uint64_t first = begin / page, last = (end - 1) / page;
  for (std::uint64_t k = 0; k < kProbes; ++k) {
    const std::uint64_t at_page = first + (last - kProbePages + 1 - first) * k / (kProbes - 1);
    const std::uint64_t b = std::max(begin, at_page * page);
    const std::uint64_t e = std::min(end, (at_page + kProbePages) * page);
    if (!pages_cached(fd, map, b, e)) return false;
  }
  return true;
}

std::string at(std::uint64_t offset) { return " at offset " + std::to_string(offset); }

}  // namespace

// -- the plan ------------------------------------------------------------------

std::size_t ReadPlan::read(std::shared_ptr<const File> file, std::uint64_t offset, std::uint64_t size, void* dst) {
  entries_.push_back(Entry{std::move(file), offset, size, dst});
  return entries_.size() - 1;
}

std::size_t ReadPlan::prefetch(std::shared_ptr<const File> file, std::uint64_t offset, std::uint64_t size) {
  entries_.push_back(Entry{std::move(file), offset, size, nullptr});
  return entries_.size() - 1;
}

// -- the job's state -----------------------------------------------------------

struct ReadJob::State {
  struct Segment {
    std::uint8_t* dst;
    std::uint64_t size;
  };
  struct Request {
    const File* file = nullptr;
    bool populate = false;
    std::uint64_t begin = 0, end = 0;  // absolute file offsets (populate: page aligned)
    std::vector<Segment> segments;     // reads: where the bytes go, in order
    std::vector<std::size_t> entries;  // entries with bytes in this request
    std::size_t first_entry = 0;
  };
  struct EntryState {
    std::size_t pending = 0;  // requests still to finish
    bool consumed = false;
    std::exception_ptr error;
  };

  std::vector<ReadPlan::Entry> plan;
  std::vector<Request> requests;
  std::vector<EntryState> entries;
  ReadOptions options;

  std::mutex mu;
  std::condition_variable cv;
  std::size_t next = 0;          // next request to start
  unsigned running = 0;          // workers still in their loop
  bool cancelled = false;
  std::exception_ptr first_error;
  std::uint64_t started_bytes = 0;
  std::uint64_t consumed_bytes = 0;
  std::size_t waited_upto = 0;   // entries below this were waited for (window)
  std::vector<std::thread> workers;

  std::atomic<std::uint64_t> n_requests{0}, n_read{0}, n_populated{0}, n_cached{0};

  void validate() const;
  void build();
  void drop_cached();
  void run_worker();
  void execute(const Request& r);
  void finish(const Request& r, std::exception_ptr error);
  bool may_start(const Request& r) const;
};

void ReadJob::State::validate() const {
  struct Range {
    std::uintptr_t begin, end;
    std::size_t entry;
  };
  std::vector<Range> dests;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const auto& e = plan[i];
    const std::string which = "read plan entry " + std::to_string(i);
    if (!e.file) throw Error(ErrorCode::InvalidArgument, which + ": no file");
    if (e.file->closed()) throw Error(ErrorCode::InvalidArgument, which + ": the file is closed", e.file->path());
    if (e.offset > e.file->file_size() || e.size > e.file->file_size() - e.offset) {
      throw Error(ErrorCode::InvalidArgument,
                  which + ": " + std::to_string(e.size) + " bytes" + at(e.offset) + " run past the end of the file (" +
                      std::to_string(e.file->file_size()) + " bytes)",
                  e.file->path());
    }
    if (e.size == 0) continue;
    std::uintptr_t d;
    if (e.dst != nullptr) {
      d = reinterpret_cast<std::uintptr_t>(e.dst);
    } else if (e.file->mapping() != nullptr) {
      d = reinterpret_cast<std::uintptr_t>(e.file->mapping() + e.offset);
    } else {
      throw Error(ErrorCode::InvalidArgument, which + ": a prefetch needs a mapped file (the mmap backend)",
                  e.file->path());
    }
    if (d + e.size < d) throw Error(ErrorCode::InvalidArgument, which + ": the destination wraps around memory");
    dests.push_back(Range{d, d + static_cast<std::uintptr_t>(e.size), i});
  }
  std::sort(dests.begin(), dests.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < dests.size(); ++i) {
    if (dests[i].begin < dests[i - 1].end) {
      const std::size_t a = std::min(dests[i - 1].entry, dests[i].entry), b = std::max(dests[i - 1].entry, dests[i].entry);
      throw Error(ErrorCode::InvalidArgument, "read plan entries " + std::to_string(a) + " and " + std::to_string(b) +
                                                  " have overlapping destinations: their bytes would corrupt each other");
    }
  }
}

void ReadJob::State::build() {
  std::uint64_t limit = options.request_bytes;
  if (limit == 0) {
    // Enough requests for every worker: a plan of one 8 MiB tensor (a
    // tensor-by-tensor loader) is read by all of them, not by one.
    std::uint64_t total = 0;
    for (const auto& e : plan) total += e.size;
    limit = std::clamp<std::uint64_t>(total / thread_count(options.threads), kMinRequest, kDefaultRequest);
  }
  const std::uint64_t page = page_size();
  limit = std::max(page, limit - limit % page);  // split points stay page aligned, as populate calls need
  entries.assign(plan.size(), EntryState{});
  constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  std::size_t open = kNone;  // the request the next entry may join (an index: requests grows)
  auto add_entry = [](Request& r, std::size_t i) {
    if (r.entries.empty() || r.entries.back() != i) r.entries.push_back(i);
  };
  auto start = [&](const File* f, bool populate, std::uint64_t b, std::size_t i) -> Request& {
    Request r;
    r.file = f;
    r.populate = populate;
    r.begin = r.end = b;
    r.first_entry = i;
    requests.push_back(std::move(r));
    open = requests.size() - 1;
    return requests.back();
  };
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const auto& e = plan[i];
    if (e.size == 0) continue;
    const File* f = e.file.get();
    const std::uint64_t end = e.offset + e.size;
    if (e.dst == nullptr) {
      // Prefetch: page-aligned; joined with the previous prefetch when it
      // starts within kPrefetchGap of its end; cut at `limit` bytes.
      std::uint64_t b = e.offset - e.offset % page;
      if (open != kNone) {
        Request& o = requests[open];
        const std::uint64_t cap = o.begin + limit;
        if (o.populate && o.file == f && b >= o.begin && b <= o.end + kPrefetchGap && b < cap) {
          o.end = std::max(o.end, std::min(end, cap));
          add_entry(o, i);
          b = std::max(b, o.end);
        }
      }
      while (b < end) {
        Request& r = start(f, true, b, i);
        r.end = std::min(end, b + limit);
        add_entry(r, i);
        b = r.end;
      }
      continue;
    }
    // Read: joined with the previous read when its bytes follow on; cut at
    // `limit` bytes and kMaxSegments destinations per request.
    auto* dst = static_cast<std::uint8_t*>(e.dst);
    std::uint64_t off = e.offset, left = e.size;
    while (left > 0) {
      bool joins = false;
      if (open != kNone) {
        const Request& o = requests[open];
        joins = !o.populate && o.file == f && o.end == off && o.end - o.begin < limit && o.segments.size() < kMaxSegments;
      }
      Request& r = joins ? requests[open] : start(f, false, off, i);
      const std::uint64_t take = std::min(left, limit - (r.end - r.begin));
      r.segments.push_back(State::Segment{dst, take});
      r.end += take;
      add_entry(r, i);
      dst += take;
      off += take;
      left -= take;
    }
  }
  for (const auto& r : requests) {
    for (std::size_t i : r.entries) ++entries[i].pending;
  }
}

void ReadJob::State::drop_cached() {
  std::vector<Request> kept;
  kept.reserve(requests.size());
  for (auto& r : requests) {
    if (r.populate && all_cached(r.file->descriptor(), r.file->mapping(), r.begin, r.end)) {
      n_cached += r.end - r.begin;
      for (std::size_t i : r.entries) --entries[i].pending;
      continue;
    }
    kept.push_back(std::move(r));
  }
  requests.swap(kept);
}

bool ReadJob::State::may_start(const Request& r) const {
  if (options.window_bytes == 0 || r.first_entry < waited_upto) return true;
  return started_bytes - std::min(started_bytes, consumed_bytes) < options.window_bytes;
}

void ReadJob::State::execute(const Request& r) {
  const File& f = *r.file;
  n_requests.fetch_add(1, std::memory_order_relaxed);
  if (r.populate) {
    auto* p = const_cast<std::uint8_t*>(f.mapping()) + r.begin;
    const std::size_t len = static_cast<std::size_t>(r.end - r.begin);
    // Ask for the whole range at once (readahead queues it), then map it in.
    ::madvise(p, len, MADV_WILLNEED);
    for (int attempt = 0;; ++attempt) {
      if (::madvise(p, len, MADV_POPULATE_READ) == 0) break;
      const int e = errno;
      if ((e == EINTR || e == EAGAIN) && attempt < 1000) continue;
      if (e == EFAULT) {
        throw Error(ErrorCode::FileChanged,
                    "the file shrank while it was being read (bytes" + at(r.begin) + " are gone); reopen it", f.path());
      }
      if (e == EINVAL) {  // a kernel before 5.14: touch one byte per page, guarded against SIGBUS
        detail::MappedReadGuard guard(p, f.path());
        volatile std::uint8_t sink = 0;
        for (std::size_t o = 0; o < len; o += page_size()) sink = static_cast<std::uint8_t>(sink + p[o]);
        guard.finish();
        break;
      }
      throw Error(ErrorCode::Io, std::string("reading ") + std::to_string(len) + " bytes" + at(r.begin) +
                                     " failed: " + std::strerror(e), f.path(), {}, e);
    }
    n_populated.fetch_add(r.end - r.begin, std::memory_order_relaxed);
    return;
  }
  std::vector<iovec> iov(r.segments.size());
  for (std::size_t i = 0; i < iov.size(); ++i) iov[i] = iovec{r.segments[i].dst, static_cast<std::size_t>(r.segments[i].size)};
  std::size_t first = 0;
  std::uint64_t off = r.begin;
  while (first < iov.size()) {
    const ssize_t n = ::preadv(f.descriptor(), iov.data() + first, static_cast<int>(iov.size() - first),
                               static_cast<off_t>(off));
    if (n < 0) {
      const int e = errno;
      if (e == EINTR) continue;
      throw Error(ErrorCode::Io, "reading " + std::to_string(r.end - off) + " bytes" + at(off) +
                                     " failed: " + std::strerror(e), f.path(), {}, e);
    }
    if (n == 0) {
      throw Error(ErrorCode::FileChanged,
                  "the file ended early" + at(off) + ": it was truncated while open; reopen it", f.path());
    }
    off += static_cast<std::uint64_t>(n);
    n_read.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
    // A short read: skip what arrived and go on from there.
    std::size_t got = static_cast<std::size_t>(n);
    while (first < iov.size() && got >= iov[first].iov_len) got -= iov[first++].iov_len;
    if (got > 0) {
      iov[first].iov_base = static_cast<std::uint8_t*>(iov[first].iov_base) + got;
      iov[first].iov_len -= got;
    }
  }
}

void ReadJob::State::finish(const Request& r, std::exception_ptr error) {
  std::lock_guard<std::mutex> lock(mu);
  for (std::size_t i : r.entries) {
    --entries[i].pending;
    if (error && !entries[i].error) entries[i].error = error;
  }
  if (error && !first_error) first_error = error;
  cv.notify_all();
}

void ReadJob::State::run_worker() {
  for (;;) {
    const Request* r = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return cancelled || first_error || next >= requests.size() || may_start(requests[next]); });
      if (cancelled || first_error || next >= requests.size()) break;
      r = &requests[next++];
      started_bytes += r->end - r->begin;
    }
    std::exception_ptr error;
    try {
      execute(*r);
    } catch (...) {
      error = std::current_exception();
    }
    finish(*r, error);
  }
  std::lock_guard<std::mutex> lock(mu);
  --running;
  cv.notify_all();
}

// -- the job -------------------------------------------------------------------

ReadJob::ReadJob(ReadPlan plan, const ReadOptions& options) : state_(std::make_shared<State>()) {
  State& s = *state_;
  s.plan = plan.entries();
  s.options = options;
  s.validate();
  s.build();
  s.drop_cached();
  const unsigned n = static_cast<unsigned>(std::min<std::size_t>(thread_count(options.threads), s.requests.size()));
  s.workers.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    {
      std::lock_guard<std::mutex> lock(s.mu);
      ++s.running;
    }
    try {
      s.workers.emplace_back([st = state_] { st->run_worker(); });
    } catch (const std::system_error&) {
      // At the process's thread limit: the workers already started do all
      // the work (with none, this thread does).
      std::lock_guard<std::mutex> lock(s.mu);
      --s.running;
      break;
    }
  }
  if (s.workers.empty() && !s.requests.empty()) {
    // No thread could start: this one reads everything now, so nothing may
    // wait for a consumer that cannot run yet.
    s.options.window_bytes = 0;
    s.running = 1;
    s.run_worker();
  }
}

ReadJob::~ReadJob() {
  cancel();
  for (auto& t : state_->workers) {
    if (t.joinable()) t.join();
  }
}

void ReadJob::cancel() noexcept {
  std::lock_guard<std::mutex> lock(state_->mu);
  state_->cancelled = true;
  state_->cv.notify_all();
}

bool ReadJob::done() const noexcept {
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->running == 0;
}

namespace {
[[noreturn]] void throw_unfinished() {
  throw Error(ErrorCode::InvalidArgument, "the read job was cancelled before this entry was read");
}
}  // namespace

void ReadJob::wait() {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  s.waited_upto = s.entries.size();
  s.cv.notify_all();
  s.cv.wait(lock, [&] { return s.running == 0; });
  if (s.first_error) std::rethrow_exception(s.first_error);
  for (const auto& e : s.entries) {
    if (e.pending != 0) throw_unfinished();
  }
  // The bytes are in place; they are the file's only if nobody wrote to it
  // meanwhile (one fstat per file).
  const File* last = nullptr;
  for (const auto& e : s.plan) {
    if (e.file.get() != last) e.file->check_unchanged();
    last = e.file.get();
  }
}

void ReadJob::wait_entry(std::size_t index) {
  State& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  if (index >= s.entries.size()) {
    throw Error(ErrorCode::InvalidArgument, "read plan entry " + std::to_string(index) + " does not exist (the plan has " +
                                                std::to_string(s.entries.size()) + ")");
  }
  // Entries up to this one are behind the consumer: they leave the window.
  for (std::size_t i = s.waited_upto; i <= index; ++i) {
    if (!s.entries[i].consumed) {
      s.entries[i].consumed = true;
      s.consumed_bytes += s.plan[i].size;
    }
  }
  s.waited_upto = std::max(s.waited_upto, index + 1);
  s.cv.notify_all();
  auto& e = s.entries[index];
  s.cv.wait(lock, [&] { return e.pending == 0 || e.error || s.running == 0; });
  if (e.error) std::rethrow_exception(e.error);
  if (e.pending == 0) {
    s.plan[index].file->check_unchanged();
    return;
  }
  if (s.first_error) std::rethrow_exception(s.first_error);
  throw_unfinished();
}

ReadStats ReadJob::stats() const noexcept {
  const State& s = *state_;
  return ReadStats{s.n_requests.load(), s.n_read.load(), s.n_populated.load(), s.n_cached.load()};
}

ReadStats execute(ReadPlan plan, const ReadOptions& options) {
  ReadJob job(std::move(plan), options);
  job.wait();
  return job.stats();
}

}  // namespace fastensors
