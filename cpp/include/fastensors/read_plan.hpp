// The parallel read engine: a read plan lists byte ranges of open files and
// where their bytes go; a job executes it with enough requests in flight to
// keep the storage busy. docs/read_engine.md describes the design.
//
//   fastensors::ReadPlan plan;
//   plan.read(file, offset, size, dst);      // pread into caller memory
//   plan.prefetch(file, offset, size);       // make mapped bytes resident
//   fastensors::ReadJob job(std::move(plan));
//   job.wait();                              // or wait_entry(i), one by one
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "fastensors/export.hpp"
#include "fastensors/file.hpp"

FASTENSORS_EXPORT_BEGIN
namespace fastensors {

struct ReadOptions {
  // Worker threads of a job; 0 takes FASTENSORS_READ_THREADS from the
  // environment, else 8 (enough requests to keep an NVMe queue busy while
  // few enough to be cheap on a small machine).
  unsigned threads = 0;
  // Larger ranges are split into requests of this many bytes, so one large
  // tensor is read by every worker at once. 0: the plan's bytes divided
  // among the workers, between 512 KiB and 8 MiB.
  std::uint64_t request_bytes = 0;
  // How far the job may run ahead of its consumer, in bytes (0: no bound):
  // a request starts only while the bytes of the requests started, less
  // those of the entries the consumer has waited for, stay within this. For
  // read-ahead over checkpoints larger than memory.
  std::uint64_t window_bytes = 0;
};

// What a job did, for tests and benchmarks.
struct ReadStats {
  std::uint64_t requests = 0;        // pread/preadv/populate calls issued
  std::uint64_t bytes_read = 0;      // bytes copied into destinations
  std::uint64_t bytes_populated = 0; // mapped bytes made resident
  std::uint64_t bytes_cached = 0;    // prefetched bytes found already cached (skipped)
};

class ReadPlan {
 public:
  // Copies `size` bytes at absolute `offset` of `file` into `dst` (pread,
  // either backend). `dst` must stay valid until the job has finished.
  // Returns the entry's index (for ReadJob::wait_entry).
  std::size_t read(std::shared_ptr<const File> file, std::uint64_t offset, std::uint64_t size, void* dst);

  // Makes `size` mapped bytes at absolute `offset` of `file` resident, so
  // zero-copy views of them are read without page faults to storage (mmap
  // backend only). Already cached pages cost a residency check, no I/O.
  std::size_t prefetch(std::shared_ptr<const File> file, std::uint64_t offset, std::uint64_t size);

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }

  struct Entry {
    std::shared_ptr<const File> file;
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
    void* dst = nullptr;  // null: a prefetch of the mapping
  };
  const std::vector<Entry>& entries() const noexcept { return entries_; }

 private:
  std::vector<Entry> entries_;
};

// A plan being executed. The constructor checks the whole plan and throws
// InvalidArgument (nothing is read) when an entry is out of its file's range,
// a file is closed, a read has no destination, a prefetch names a file that
// is not mapped, or two entries' destinations overlap (a prefetch's
// destination is its mapped range). Errors while reading are kept and thrown
// by wait()/wait_entry(): Io (naming the file, the offset and errno) and
// FileChanged (the file shrank: a short read, or a populate past its end,
// never a SIGBUS).
class ReadJob {
 public:
  explicit ReadJob(ReadPlan plan, const ReadOptions& options = {});
  // Cancels what has not started and waits for the workers.
  ~ReadJob();
  ReadJob(const ReadJob&) = delete;
  ReadJob& operator=(const ReadJob&) = delete;

  // Blocks until every entry is done; rethrows the first error.
  void wait();
  // Blocks until entry `index` is done (its bytes are in place); rethrows
  // an error that hit it, or the job's first error. Marks the entry consumed
  // for the read-ahead window.
  void wait_entry(std::size_t index);
  // Stops issuing requests; entries not done then fail with an error saying
  // the job was cancelled. Returns at once; the destructor joins.
  void cancel() noexcept;
  bool done() const noexcept;
  ReadStats stats() const noexcept;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

// Submits `plan` and waits for it.
ReadStats execute(ReadPlan plan, const ReadOptions& options = {});

}  // namespace fastensors
FASTENSORS_EXPORT_END
