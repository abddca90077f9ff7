// Loads every tensor of a checkpoint into one caller buffer through the C++
// Checkpoint and prints {"seconds": ..., "bytes": ...}, timed like load_c.
//   load_cpp CHECKPOINT [mmap|pread] [stored|f32|bf16]
#include <fastensors/fastensors.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

namespace fst = fastensors;

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const fst::Backend backend = argc > 2 && std::strcmp(argv[2], "pread") == 0 ? fst::Backend::Pread : fst::Backend::Mmap;
  std::optional<fst::Dtype> to;
  if (argc > 3 && std::strcmp(argv[3], "f32") == 0) to = fst::Dtype::F32;
  if (argc > 3 && std::strcmp(argv[3], "bf16") == 0) to = fst::Dtype::BF16;
  const char* env = std::getenv("LOAD_ARENA_BYTES");
  const std::uint64_t size = env ? std::strtoull(env, nullptr, 10) : 0;
  std::vector<unsigned char> arena(size, 1);  // allocated and touched before timing
  try {
    const auto t0 = std::chrono::steady_clock::now();
    auto c = fst::Checkpoint::open(argv[1], backend);
    std::uint64_t total = 0;
    for (const auto& name : c->keys()) {
      const fst::TensorInfo& t = c->info(name);
      const std::uint64_t need = fst::box_bytes(t, fst::whole_box(t), to);
      if (total + need > size) {
        std::fprintf(stderr, "LOAD_ARENA_BYTES=%llu is too small\n", static_cast<unsigned long long>(size));
        return 1;
      }
      c->read(name, arena.data() + total, need, to);
      total += need;
    }
    c->close();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("{\"seconds\": %.6f, \"bytes\": %llu, \"check\": %u}\n", s, static_cast<unsigned long long>(total),
                static_cast<unsigned>(arena[total / 2]));
  } catch (const fst::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
