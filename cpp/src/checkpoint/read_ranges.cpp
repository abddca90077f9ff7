// A checkpoint's tensor bytes, read by the parallel read engine: every range
// becomes one entry of a single plan (neighbours joined, large ones split).
#include "checkpoint/read_ranges_internal.h"

#include <memory>
#include <string>

#include "fastensors/error.hpp"
#include "fastensors/read_plan.hpp"

namespace fastensors::detail {

std::shared_ptr<const File> borrowed(const File* file) {
  // The plan runs and is waited for inside the caller's call, while the
  // checkpoint holds its shards: a non-owning pointer is enough.
  return std::shared_ptr<const File>(std::shared_ptr<const File>(), file);
}

void read_ranges(const std::vector<ByteRange>& ranges) {
  ReadPlan plan;
  for (const ByteRange& r : ranges) {
    const TensorInfo& t = *r.tensor;
    if (r.offset > t.nbytes() || r.size > t.nbytes() - r.offset) {
      throw Error(ErrorCode::InvalidArgument,
                  "read of " + std::to_string(r.size) + " bytes at " + std::to_string(r.offset) +
                      " is outside the tensor",
                  r.file->path(), t.name);
    }
    if (r.size == 0) continue;
    plan.read(borrowed(r.file), r.file->header().data_start + t.begin + r.offset, r.size, r.dst);
  }
  if (!plan.empty()) execute(std::move(plan));
}

}  // namespace fastensors::detail
