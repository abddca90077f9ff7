/* Loads every tensor of a checkpoint into one caller buffer through the C
 * API and prints {"seconds": ..., "bytes": ...}: the open, the index and
 * shard checks and every read, timed with CLOCK_MONOTONIC.
 *   load_c CHECKPOINT [mmap|pread] [stored|f32|bf16] */
#define _POSIX_C_SOURCE 200809L
#include <fastensors/fastensors.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int die(const char* what, fst_status s) {
  fprintf(stderr, "%s: %s: %s\n", what, fst_status_name(s), fst_last_error());
  return 1;
}

int main(int argc, char** argv) {
  int backend = FST_BACKEND_MMAP, to = FST_DTYPE_STORED;
  fst_checkpoint* c = NULL;
  fst_status s;
  size_t n = 0, i;
  uint64_t total = 0, size = 0;
  unsigned char* arena;
  double t0, t1;
  if (argc < 2) return 2;
  if (argc > 2 && strcmp(argv[2], "pread") == 0) backend = FST_BACKEND_PREAD;
  if (argc > 3 && strcmp(argv[3], "f32") == 0) to = FST_F32;
  if (argc > 3 && strcmp(argv[3], "bf16") == 0) to = FST_BF16;
  /* The destination is allocated and touched before timing (an engine's
   * weights live in memory it owns already). */
  {
    const char* env = getenv("LOAD_ARENA_BYTES");
    size = env ? strtoull(env, NULL, 10) : 0;
  }
  arena = malloc(size ? size : 1);
  if (arena == NULL) return 1;
  memset(arena, 1, size);
  t0 = now();
  if ((s = fst_checkpoint_open(argv[1], backend, &c)) != FST_OK) return die("open", s);
  if ((s = fst_checkpoint_count(c, &n)) != FST_OK) return die("count", s);
  for (i = 0; i < n; ++i) {
    const char* name;
    uint64_t need = 0;
    if ((s = fst_checkpoint_name(c, i, &name)) != FST_OK) return die("name", s);
    if ((s = fst_checkpoint_read_size(c, name, 0, NULL, NULL, to, &need)) != FST_OK) return die("size", s);
    if (total + need > size) {
      fprintf(stderr, "LOAD_ARENA_BYTES=%llu is too small\n", (unsigned long long)size);
      return 1;
    }
    if ((s = fst_checkpoint_read(c, name, to, arena + total, (size_t)need)) != FST_OK) return die("read", s);
    total += need;
  }
  fst_checkpoint_close(c);
  t1 = now();
  printf("{\"seconds\": %.6f, \"bytes\": %llu, \"check\": %u}\n", t1 - t0, (unsigned long long)total,
         (unsigned)arena[total / 2]);
  free(arena);
  return 0;
}
