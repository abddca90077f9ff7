// Prints each tensor of a checkpoint (a safetensors file, a directory or an
// index with its shards): name, dtype and shape, then the metadata.
#include <fastensors/fastensors.hpp>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT (file, directory or index)\n", argv[0]);
    return 2;
  }
  try {
    auto ckpt = fastensors::Checkpoint::open(argv[1]);
    for (const auto& name : ckpt->keys()) {
      const auto& t = ckpt->info(name);
      std::string shape = "[";
      for (std::size_t i = 0; i < t.shape.size(); ++i) {
        if (i) shape += ", ";
        shape += std::to_string(t.shape[i]);
      }
      shape += "]";
      std::printf("%s\t%s\t%s\n", name.c_str(), std::string(fastensors::dtype_name(t.dtype)).c_str(), shape.c_str());
    }
    for (const auto& kv : ckpt->metadata()) std::printf("# %s = %s\n", kv.first.c_str(), kv.second.c_str());
  } catch (const fastensors::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
