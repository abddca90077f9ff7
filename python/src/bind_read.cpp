// The read engine: ReadPlan (entries of open Files), ReadJob (a plan being
// executed; every wait releases the GIL) and ReadStats.
#include <memory>
#include <string>
#include <vector>

#include <nanobind/stl/string.h>

#include "bind_common.h"

namespace fastensors_py {
namespace {

using namespace nb::literals;

// A plan and the arrays its reads land in: an ndarray handle keeps its
// Python array alive, so the memory stays valid until the job is gone.
struct PyReadPlan {
  fst::ReadPlan plan;
  std::vector<OutBytes> keep;
};

// Shared: a thread waiting on the job (GIL released) holds its own
// reference, so close() from another thread never frees it under the wait.
// `keep` is declared first so that it is destroyed last, after the job has
// joined its workers.
struct PyReadJob {
  std::vector<OutBytes> keep;
  std::shared_ptr<fst::ReadJob> job;

  std::shared_ptr<fst::ReadJob> get() const {
    if (!job) throw fst::Error(fst::ErrorCode::InvalidArgument, "the read job was closed");
    return job;
  }
};

}  // namespace

void init_read(nb::module_& m) {
  nb::class_<fst::ReadStats>(m, "ReadStats")
      .def_ro("requests", &fst::ReadStats::requests, "read and populate calls issued")
      .def_ro("bytes_read", &fst::ReadStats::bytes_read, "bytes copied into destinations")
      .def_ro("bytes_populated", &fst::ReadStats::bytes_populated, "mapped bytes made resident")
      .def_ro("bytes_cached", &fst::ReadStats::bytes_cached, "prefetched bytes found cached (no I/O)")
      .def("__repr__", [](const fst::ReadStats& s) -> std::string {
        return "ReadStats(requests=" + std::to_string(s.requests) + ", bytes_read=" + std::to_string(s.bytes_read) +
               ", bytes_populated=" + std::to_string(s.bytes_populated) +
               ", bytes_cached=" + std::to_string(s.bytes_cached) + ")";
      });

  nb::class_<PyReadPlan>(m, "ReadPlan")
      .def(nb::init<>())
      .def("read", [](PyReadPlan& p, const PyFile& f, std::uint64_t offset, OutBytes out) {
            p.keep.push_back(out);
            return p.plan.read(f.file, offset, out.shape(0), out.data());
          }, "file"_a, "offset"_a, nb::arg("out").noconvert(),
          "Read len(out) bytes at absolute `offset` of `file` into the uint8 array `out`. Returns the entry's index.")
      .def("prefetch", [](PyReadPlan& p, const PyFile& f, std::uint64_t offset, std::uint64_t size) {
            return p.plan.prefetch(f.file, offset, size);
          }, "file"_a, "offset"_a, "size"_a,
          "Make `size` mapped bytes at absolute `offset` of `file` resident (mmap backend). Returns the index.")
      .def("__len__", [](const PyReadPlan& p) { return p.plan.size(); });

  nb::class_<PyReadJob>(m, "ReadJob")
      .def("__init__", [](PyReadJob* self, PyReadPlan& plan, unsigned threads, std::uint64_t request_bytes,
                          std::uint64_t window_bytes) {
            fst::ReadOptions opts;
            opts.threads = threads;
            opts.request_bytes = request_bytes;
            opts.window_bytes = window_bytes;
            std::shared_ptr<fst::ReadJob> job;
            {
              nb::gil_scoped_release release;
              job = std::make_shared<fst::ReadJob>(std::move(plan.plan), opts);
            }
            plan.plan = fst::ReadPlan();
            new (self) PyReadJob{std::move(plan.keep), std::move(job)};
            plan.keep.clear();
          }, "plan"_a, "threads"_a = 0, "request_bytes"_a = 0, "window_bytes"_a = 0,
          "Check `plan` (InvalidArgument when an entry is out of range or destinations overlap) and start "
          "reading it; the plan is left empty.")
      .def("wait", [](PyReadJob& j) {
            std::shared_ptr<fst::ReadJob> job = j.get();
            nb::gil_scoped_release release;
            job->wait();
          }, "Block until every entry is read; raises the first error (Io, FileChanged).")
      .def("wait_entry", [](PyReadJob& j, std::size_t index) {
            std::shared_ptr<fst::ReadJob> job = j.get();
            nb::gil_scoped_release release;
            job->wait_entry(index);
          }, "index"_a, "Block until entry `index` is read; raises an error that hit it.")
      .def("cancel", [](PyReadJob& j) { j.get()->cancel(); }, "Stop issuing requests.")
      .def("close", [](PyReadJob& j) {
            std::shared_ptr<fst::ReadJob> job = std::move(j.job);
            if (!job) return;
            job->cancel();
            {
              nb::gil_scoped_release release;
              try {
                job->wait();  // returns once no worker writes into `keep` any more
              } catch (const std::exception&) {
                // the job's own error or its cancellation: nobody asked for the bytes now
              }
              job.reset();
            }
            j.keep.clear();
          }, "Cancel what is left, wait for the workers and drop the destinations.")
      .def_prop_ro("done", [](PyReadJob& j) { return !j.job || j.job->done(); })
      .def("stats", [](PyReadJob& j) { return j.get()->stats(); });
}

}  // namespace fastensors_py
