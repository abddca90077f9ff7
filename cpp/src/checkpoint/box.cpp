// Reading an N-d box of a tensor: the box is cut into contiguous runs of the
// stored bytes (the longest the layout allows), read through read_ranges, and
// converted on the way when asked, a bounded chunk at a time.
#include <algorithm>
#include <string>
#include <vector>

#include "checkpoint/read_ranges_internal.h"
#include "fastensors/checkpoint.hpp"
#include "fastensors/convert.hpp"
#include "fastensors/error.hpp"

namespace fastensors {
namespace {

// Ranges handed to read_ranges at once, and the scratch of a conversion.
constexpr std::size_t kBatchRanges = 4096;
constexpr std::uint64_t kScratchBytes = std::uint64_t{32} << 20;

std::string box_text(const Box& box) {
  std::string out = "[";
  for (std::size_t i = 0; i < box.start.size() && i < box.stop.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(box.start[i]) + ":" + std::to_string(box.stop[i]);
  }
  return out + "]";
}

// The box as contiguous runs: `run_elems` elements each, at element offsets
// the callback receives in row-major order of the box.
struct Runs {
  std::uint64_t run_elems = 0;
  std::uint64_t count = 0;  // 0 for an empty box
};

Runs plan_runs(const TensorInfo& t, const Box& box) {
  const std::size_t n = t.shape.size();
  Runs r;
  std::uint64_t elems = 1;
  for (std::size_t i = 0; i < n; ++i) elems *= box.stop[i] - box.start[i];
  if (elems == 0) return r;
  // The full trailing axes join the first partial axis into one run.
  std::size_t j = n;
  std::uint64_t inner = 1;
  while (j > 0 && box.start[j - 1] == 0 && box.stop[j - 1] == t.shape[j - 1]) {
    inner *= t.shape[j - 1];
    --j;
  }
  r.run_elems = j == 0 ? inner : inner * (box.stop[j - 1] - box.start[j - 1]);
  r.count = elems / r.run_elems;
  return r;
}

template <class F>
void for_each_run(const TensorInfo& t, const Box& box, const Runs& runs, F&& f) {
  const std::size_t n = t.shape.size();
  std::vector<std::uint64_t> stride(n, 1);
  for (std::size_t i = n; i-- > 1;) stride[i - 1] = stride[i] * t.shape[i];
  // Axes before `outer` are iterated; the run covers the rest.
  std::size_t outer = n;
  std::uint64_t covered = 1;
  while (outer > 0 && covered < runs.run_elems) {
    covered *= box.stop[outer - 1] - box.start[outer - 1];
    --outer;
  }
  std::vector<std::uint64_t> idx(box.start.begin(), box.start.begin() + static_cast<std::ptrdiff_t>(outer));
  for (std::uint64_t k = 0; k < runs.count; ++k) {
    std::uint64_t off = 0;
    for (std::size_t i = 0; i < n; ++i) off += (i < outer ? idx[i] : box.start[i]) * stride[i];
    f(off);
    for (std::size_t i = outer; i-- > 0;) {  // odometer over the outer axes
      if (++idx[i] < box.stop[i]) break;
      idx[i] = box.start[i];
    }
  }
}

}  // namespace

Box whole_box(const TensorInfo& tensor) {
  return Box{std::vector<std::uint64_t>(tensor.shape.size(), 0), tensor.shape};
}

Box row_box(const TensorInfo& tensor, std::uint64_t begin, std::uint64_t end) {
  if (tensor.shape.empty()) {
    throw Error(ErrorCode::InvalidArgument, "a scalar tensor has no rows", {}, tensor.name);
  }
  Box box = whole_box(tensor);
  box.start[0] = begin;
  box.stop[0] = end;
  return box;
}

std::uint64_t box_bytes(const TensorInfo& t, const Box& box, std::optional<Dtype> to) {
  const std::size_t n = t.shape.size();
  if (box.start.size() != n || box.stop.size() != n) {
    const std::string axes = box.start.size() == box.stop.size()
                                 ? std::to_string(box.start.size()) + " axes"
                                 : std::to_string(box.start.size()) + " start and " + std::to_string(box.stop.size()) +
                                       " stop indices";
    throw Error(ErrorCode::InvalidArgument, "a box of " + axes + " for a tensor of " + std::to_string(n) + " axes",
                {}, t.name);
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (box.start[i] > box.stop[i] || box.stop[i] > t.shape[i]) {
      throw Error(ErrorCode::InvalidArgument,
                  "box " + box_text(box) + " does not fit axis " + std::to_string(i) + " of size " +
                      std::to_string(t.shape[i]),
                  {}, t.name);
    }
  }
  const Dtype out = to.value_or(t.dtype);
  if (out != t.dtype && !can_convert(t.dtype, out)) {
    throw Error(ErrorCode::UnsupportedConversion,
                "no conversion from " + std::string(dtype_name(t.dtype)) + " to " + std::string(dtype_name(out)), {},
                t.name);
  }
  if (out != t.dtype && dtype_bits(out) % 8 != 0) {
    throw Error(ErrorCode::UnsupportedConversion,
                "reads convert only to byte-sized dtypes, not " + std::string(dtype_name(out)), {}, t.name);
  }
  const Runs runs = plan_runs(t, box);
  if (runs.count == 0) return 0;
  // Sub-byte types: every run must start and end on a byte (bits fit: the
  // header validated numel * bits).
  const unsigned bits = dtype_bits(t.dtype);
  if (bits % 8 != 0) {
    bool aligned = (runs.run_elems * bits) % 8 == 0;
    if (aligned) for_each_run(t, box, runs, [&](std::uint64_t off) { aligned = aligned && (off * bits) % 8 == 0; });
    if (!aligned) {
      throw Error(ErrorCode::InvalidArgument,
                  "box " + box_text(box) + " of a " + std::string(dtype_name(t.dtype)) +
                      " tensor does not start and end on byte boundaries",
                  {}, t.name);
    }
  }
  return runs.count * runs.run_elems * dtype_bits(out) / 8;
}

void read_box(const File& file, const TensorInfo& t, const Box& box, void* dst, std::size_t dst_bytes,
              std::optional<Dtype> to) {
  const std::uint64_t need = box_bytes(t, box, to);
  if (dst_bytes < need) {
    throw Error(ErrorCode::SizeMismatch,
                "the destination holds " + std::to_string(dst_bytes) + " bytes; box " + box_text(box) + " needs " +
                    std::to_string(need),
                file.path(), t.name);
  }
  if (need == 0) return;
  if (dst == nullptr) throw Error(ErrorCode::InvalidArgument, "null destination", file.path(), t.name);
  const Runs runs = plan_runs(t, box);
  const unsigned bits = dtype_bits(t.dtype);
  const std::uint64_t run_bytes = runs.run_elems * bits / 8;
  auto* out = static_cast<std::uint8_t*>(dst);
  std::vector<detail::ByteRange> batch;

  const Dtype target = to.value_or(t.dtype);
  if (target == t.dtype) {
    for_each_run(t, box, runs, [&](std::uint64_t off) {
      batch.push_back({&file, &t, off * bits / 8, run_bytes, out});
      out += run_bytes;
      if (batch.size() == kBatchRanges) {
        detail::read_ranges(batch);
        batch.clear();
      }
    });
    detail::read_ranges(batch);
    return;
  }

  // Converting: stored bytes gather into a scratch buffer, then one
  // conversion per filled scratch. Pieces of a long run hold a multiple of 8
  // elements, so they start on a byte for every dtype.
  const unsigned out_bits = dtype_bits(target);
  const std::uint64_t total_src = runs.count * run_bytes;
  std::uint64_t cap = std::min(total_src, kScratchBytes);
  std::vector<std::uint8_t> scratch(static_cast<std::size_t>(cap));
  std::uint64_t filled = 0;
  auto flush = [&]() {
    detail::read_ranges(batch);
    batch.clear();
    const std::uint64_t elems = filled * 8 / bits;
    convert(t.dtype, scratch.data(), target, out, static_cast<std::size_t>(elems));
    out += elems * out_bits / 8;
    filled = 0;
  };
  const std::uint64_t piece_elems_max = std::max<std::uint64_t>(8, (cap * 8 / bits) / 8 * 8);
  for_each_run(t, box, runs, [&](std::uint64_t off) {
    std::uint64_t done = 0;
    while (done < runs.run_elems) {
      std::uint64_t piece = std::min(runs.run_elems - done, piece_elems_max);
      std::uint64_t piece_bytes = piece * bits / 8;
      if (filled + piece_bytes > cap) flush();
      if (piece_bytes > cap) {  // only for a scratch smaller than 8 elements
        scratch.resize(static_cast<std::size_t>(piece_bytes));
        cap = piece_bytes;
      }
      batch.push_back({&file, &t, (off + done) * bits / 8, piece_bytes, scratch.data() + filled});
      filled += piece_bytes;
      done += piece;
      if (batch.size() == kBatchRanges) flush();
    }
  });
  if (filled > 0) flush();
}

}  // namespace fastensors
