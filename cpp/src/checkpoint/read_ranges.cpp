#include "checkpoint/read_ranges_internal.h"

namespace fastensors::detail {

void read_ranges(const std::vector<ByteRange>& ranges) {
  for (const ByteRange& r : ranges) r.file->read(*r.tensor, r.offset, r.dst, r.size);
}

}  // namespace fastensors::detail
