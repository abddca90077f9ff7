/* The C API from C (compiled as C99 with -Wpedantic -Werror): every entry,
 * on files it writes itself, and hostile arguments (NULL pointers, short
 * buffers, bad codes, closed handles), which must return errors. */
#define _POSIX_C_SOURCE 200809L
#include <fastensors/fastensors.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                       \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                         \
    }                                                                     \
  } while (0)
#define OK(call) CHECK_STATUS(call, FST_OK)
#define CHECK_STATUS(call, want)                                                         \
  do {                                                                                   \
    int got_ = (call);                                                                   \
    if (got_ != (want)) {                                                                \
      fprintf(stderr, "%s:%d: %s returned %s, want %s (%s)\n", __FILE__, __LINE__, #call, \
              fst_status_name(got_), fst_status_name(want), fst_last_error());           \
      ++failures;                                                                        \
    }                                                                                    \
  } while (0)

static char dir[64];

static void path_in(char* out, size_t size, const char* name) { snprintf(out, size, "%s/%s", dir, name); }

/* w: F32 [4, 6] = 0..23; ids: I64 [5] = 10..14; h: F16 [2, 2]. */
static float w[24];
static int64_t ids[5];
static const uint16_t h[4] = {0x3C00, 0x4000, 0xC000, 0x0000}; /* 1, 2, -2, 0 */

static void write_sample(const char* path, int with_ids) {
  uint64_t w_shape[2] = {4, 6}, ids_shape[1] = {5}, h_shape[2] = {2, 2};
  fst_tensor_desc t[3];
  const char* keys[2] = {"format", "owner"};
  const char* values[2] = {"pt", "c test"};
  size_t n = 0;
  t[n].name = "w"; t[n].dtype = FST_F32; t[n].ndim = 2; t[n].shape = w_shape; t[n].data = w; t[n].nbytes = sizeof w; ++n;
  t[n].name = "h"; t[n].dtype = FST_F16; t[n].ndim = 2; t[n].shape = h_shape; t[n].data = h; t[n].nbytes = sizeof h; ++n;
  if (with_ids) {
    t[n].name = "ids"; t[n].dtype = FST_I64; t[n].ndim = 1; t[n].shape = ids_shape; t[n].data = ids; t[n].nbytes = sizeof ids; ++n;
  }
  OK(fst_write_file(path, t, n, keys, values, 2, FST_WRITE_NO_FSYNC));
}

static void test_library(void) {
  fst_dtype d;
  uint64_t shape[2] = {3, 5}, bytes = 0;
  CHECK(fst_abi_version() == FST_ABI_VERSION);
  CHECK(strcmp(fst_version(), FASTENSORS_TEST_VERSION) == 0);
  CHECK(strcmp(fst_status_name(FST_OK), "FST_OK") == 0);
  CHECK(strcmp(fst_status_name(FST_ERR_INVALID_INDEX), "FST_ERR_InvalidIndex") == 0);
  CHECK(strcmp(fst_status_name(FST_ERR_BUFFER_TOO_SMALL), "FST_ERR_BUFFER_TOO_SMALL") == 0);
  CHECK(strcmp(fst_status_name(-7), "FST_ERR_UNKNOWN") == 0);
  CHECK(strcmp(fst_dtype_name(FST_BF16), "BF16") == 0);
  CHECK(fst_dtype_name(22) == NULL && fst_dtype_name(-1) == NULL);
  CHECK(fst_dtype_bits(FST_F4) == 4 && fst_dtype_bits(FST_C64) == 64 && fst_dtype_bits(99) == 0);
  OK(fst_dtype_parse("F8_E4M3", &d));
  CHECK(d == FST_F8_E4M3);
  CHECK_STATUS(fst_dtype_parse("f32", &d), FST_ERR_UNKNOWN_DTYPE);
  CHECK(strstr(fst_last_error(), "f32") != NULL);
  CHECK_STATUS(fst_dtype_parse(NULL, &d), FST_ERR_INVALID_ARGUMENT);
  OK(fst_tensor_bytes(FST_BF16, shape, 2, &bytes));
  CHECK(bytes == 30);
  shape[1] = 3;
  CHECK_STATUS(fst_tensor_bytes(FST_F4, shape, 2, &bytes), FST_ERR_MISALIGNED_SUB_BYTE);
  shape[0] = UINT64_MAX;
  CHECK_STATUS(fst_tensor_bytes(FST_F32, shape, 2, &bytes), FST_ERR_OVERFLOW);
  CHECK_STATUS(fst_tensor_bytes(FST_F32, NULL, 2, &bytes), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_tensor_bytes(40, shape, 0, &bytes), FST_ERR_UNKNOWN_DTYPE);
  /* The SIGBUS guard's switch reads back what was set (sigbus_switch_test
   * covers what it does); left on, the default. */
  fst_set_sigbus_guard(0);
  CHECK(fst_sigbus_guard_enabled() == 0);
  fst_set_sigbus_guard(7);
  CHECK(fst_sigbus_guard_enabled() == 1);
}

static void test_file(int backend) {
  char path[128];
  fst_file* f = NULL;
  size_t n = 0, i;
  const char *name, *key, *value;
  fst_tensor_info info;
  float out[24], rows[12], box[4];
  uint16_t out16[24];
  uint64_t start[2] = {1, 2}, stop[2] = {3, 4}, need = 0;
  path_in(path, sizeof path, "one.safetensors");
  write_sample(path, 1);
  OK(fst_file_open(path, backend, &f));
  OK(fst_file_count(f, &n));
  CHECK(n == 3);
  OK(fst_file_name(f, 0, &name));
  CHECK(strcmp(name, "h") == 0);
  OK(fst_file_name(f, 2, &name));
  CHECK(strcmp(name, "w") == 0);
  CHECK_STATUS(fst_file_name(f, 3, &name), FST_ERR_INVALID_ARGUMENT);
  OK(fst_file_info(f, "w", &info));
  CHECK(info.dtype == FST_F32 && info.ndim == 2 && info.shape[0] == 4 && info.shape[1] == 6 && info.nbytes == 96);
  CHECK(info.begin == 40 && info.end == 136); /* the reference's order: I64, then F32, then F16 */
  OK(fst_file_info(f, "ids", &info));
  CHECK(info.dtype == FST_I64 && info.ndim == 1 && info.nbytes == 40);
  CHECK_STATUS(fst_file_info(f, "nope", &info), FST_ERR_TENSOR_NOT_FOUND);
  CHECK(strstr(fst_last_error(), "nope") != NULL);

  OK(fst_file_metadata_count(f, &n));
  CHECK(n == 2);
  OK(fst_file_metadata_at(f, 1, &key, &value));
  CHECK(strcmp(key, "owner") == 0 && strcmp(value, "c test") == 0);
  OK(fst_file_metadata_get(f, "format", &value));
  CHECK(value != NULL && strcmp(value, "pt") == 0);
  OK(fst_file_metadata_get(f, "absent", &value));
  CHECK(value == NULL);
  CHECK_STATUS(fst_file_metadata_at(f, 2, &key, &value), FST_ERR_INVALID_ARGUMENT);

  OK(fst_file_read(f, "w", FST_DTYPE_STORED, out, sizeof out));
  for (i = 0; i < 24; ++i) CHECK(out[i] == w[i]);
  {
    int64_t got[5];
    OK(fst_file_read(f, "ids", FST_DTYPE_STORED, got, sizeof got));
    for (i = 0; i < 5; ++i) CHECK(got[i] == ids[i]);
  }
  /* Rows 1..3 of w, then the box [1:3, 2:4]. */
  OK(fst_file_read_rows(f, "w", 1, 3, FST_DTYPE_STORED, rows, sizeof rows));
  for (i = 0; i < 12; ++i) CHECK(rows[i] == w[6 + i]);
  OK(fst_file_read_size(f, "w", 2, start, stop, FST_DTYPE_STORED, &need));
  CHECK(need == 16);
  OK(fst_file_read_box(f, "w", 2, start, stop, FST_DTYPE_STORED, box, sizeof box));
  CHECK(box[0] == w[8] && box[1] == w[9] && box[2] == w[14] && box[3] == w[15]);
  /* Converted: F32 -> F16 (small integers are exact), F16 -> F32. */
  OK(fst_file_read(f, "w", FST_F16, out16, sizeof out16));
  CHECK(out16[0] == 0x0000 && out16[1] == 0x3C00 && out16[2] == 0x4000 && out16[23] == 0x4DC0); /* 23 */
  OK(fst_file_read(f, "h", FST_F32, out, 4 * sizeof(float)));
  CHECK(out[0] == 1.0f && out[1] == 2.0f && out[2] == -2.0f && out[3] == 0.0f);
  OK(fst_file_read_size(f, "w", 0, NULL, NULL, FST_BF16, &need));
  CHECK(need == 48);

  /* Hostile: short buffers, bad boxes, bad codes, NULLs. */
  CHECK_STATUS(fst_file_read(f, "w", FST_DTYPE_STORED, out, sizeof out - 1), FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_file_read(f, "w", FST_DTYPE_STORED, NULL, sizeof out), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_read(f, "w", 77, out, sizeof out), FST_ERR_UNKNOWN_DTYPE);
  OK(fst_file_read(f, "ids", FST_F32, out, 5 * sizeof(float))); /* integers -> F32 */
  CHECK(out[0] == 10.0f && out[4] == 14.0f);
  CHECK_STATUS(fst_file_read(f, "w", FST_F4, out, sizeof out), FST_ERR_UNSUPPORTED_CONVERSION);
  CHECK_STATUS(fst_file_read_rows(f, "w", 3, 5, FST_DTYPE_STORED, rows, sizeof rows), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_read_rows(f, "w", 3, 2, FST_DTYPE_STORED, rows, sizeof rows), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_read_box(f, "w", 1, start, stop, FST_DTYPE_STORED, box, sizeof box), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_read_box(f, "w", 2, NULL, stop, FST_DTYPE_STORED, box, sizeof box), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_read_box(f, "w", 2, start, stop, FST_DTYPE_STORED, box, 15), FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_file_read(f, NULL, FST_DTYPE_STORED, out, sizeof out), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_count(f, NULL), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_metadata_at(f, 0, NULL, NULL), FST_ERR_INVALID_ARGUMENT);

  {
    const void* data = NULL;
    if (backend == FST_BACKEND_MMAP) {
      OK(fst_file_data(f, "w", &data));
      CHECK(data != NULL && memcmp(data, w, sizeof w) == 0);
    } else {
      CHECK_STATUS(fst_file_data(f, "w", &data), FST_ERR_INVALID_ARGUMENT);
    }
  }
  fst_file_close(f);
  /* A closed handle is an error, not a use after free; closing twice is harmless. */
  CHECK_STATUS(fst_file_count(f, &n), FST_ERR_INVALID_ARGUMENT);
  CHECK(strstr(fst_last_error(), "closed") != NULL);
  fst_file_close(f);
  fst_file_close(NULL);
  CHECK_STATUS(fst_file_count(NULL, &n), FST_ERR_INVALID_ARGUMENT);

  /* Opening: missing files, bad backends, a file that is not safetensors. */
  f = NULL;
  path_in(path, sizeof path, "missing.safetensors");
  CHECK_STATUS(fst_file_open(path, backend, &f), FST_ERR_FILE_NOT_FOUND);
  CHECK(f == NULL);
  CHECK_STATUS(fst_file_open(path, 5, &f), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_open(NULL, backend, &f), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_file_open(dir, backend, &f), FST_ERR_IO);
  {
    FILE* junk;
    path_in(path, sizeof path, "junk.safetensors");
    junk = fopen(path, "wb");
    fwrite("\x64\0\0\0\0\0\0\0{}", 1, 10, junk); /* a 100-byte header in a 10-byte file */
    fclose(junk);
    CHECK_STATUS(fst_file_open(path, backend, &f), FST_ERR_INVALID_HEADER_LENGTH);
  }
}

/* Two shards and an index; the checkpoint sees one set of tensors. */
static void write_index(const char* body) {
  char path[128];
  FILE* out;
  path_in(path, sizeof path, "ckpt/model.safetensors.index.json");
  out = fopen(path, "wb");
  fputs(body, out);
  fclose(out);
}

static int fill_calls = 0;
static int fill_from_w(void* user, size_t index, const void** data, uint64_t* nbytes) {
  (void)user;
  (void)index;
  ++fill_calls;
  *data = w;
  *nbytes = sizeof w;
  return 0;
}
static int fill_fails(void* user, size_t index, const void** data, uint64_t* nbytes) {
  (void)user; (void)index; (void)data; (void)nbytes;
  return 7;
}

static void test_checkpoint(int backend) {
  char path[128], ckdir[96];
  fst_checkpoint* c = NULL;
  size_t n = 0;
  int sharded = -1;
  const char *name, *value;
  fst_tensor_info info;
  float rows[6];
  uint64_t e_shape[2] = {4, 6};
  fst_tensor_desc emb;
  const char* want[2] = {"emb", "w"};
  path_in(ckdir, sizeof ckdir, "ckpt");
  snprintf(path, sizeof path, "mkdir -p '%s'", ckdir);
  CHECK(system(path) == 0);
  path_in(path, sizeof path, "ckpt/a.safetensors");
  write_sample(path, 0); /* w, h */
  /* The second shard streams its tensor from a callback. */
  emb.name = "emb"; emb.dtype = FST_F32; emb.ndim = 2; emb.shape = e_shape; emb.data = NULL; emb.nbytes = sizeof w;
  path_in(path, sizeof path, "ckpt/b.safetensors");
  fill_calls = 0;
  OK(fst_write_file_streaming(path, &emb, 1, NULL, NULL, 0, 0, fill_from_w, NULL));
  CHECK(fill_calls == 1);
  CHECK_STATUS(fst_write_file_streaming(path, &emb, 1, NULL, NULL, 0, 0, fill_fails, NULL), FST_ERR_CALLBACK);
  CHECK_STATUS(fst_write_file_streaming(path, &emb, 1, NULL, NULL, 0, 0, NULL, NULL), FST_ERR_INVALID_ARGUMENT);
  write_index("{\"metadata\": {\"total_size\": 200, \"note\": {\"x\": 1}},"
              " \"weight_map\": {\"w\": \"a.safetensors\", \"h\": \"a.safetensors\", \"emb\": \"b.safetensors\"}}");

  OK(fst_checkpoint_open(ckdir, backend, &c));
  OK(fst_checkpoint_is_sharded(c, &sharded));
  CHECK(sharded == 1);
  OK(fst_checkpoint_file_count(c, &n));
  CHECK(n == 2);
  OK(fst_checkpoint_file_name(c, 1, &name));
  CHECK(strcmp(name, "b.safetensors") == 0);
  OK(fst_checkpoint_file_of(c, "h", &name));
  CHECK(strcmp(name, "a.safetensors") == 0);
  OK(fst_checkpoint_verify(c));
  OK(fst_checkpoint_count(c, &n));
  CHECK(n == 3);
  OK(fst_checkpoint_name(c, 0, &name));
  CHECK(strcmp(name, "emb") == 0);
  OK(fst_checkpoint_info(c, "emb", &info));
  CHECK(info.dtype == FST_F32 && info.ndim == 2 && info.nbytes == sizeof w);
  OK(fst_checkpoint_read_rows(c, "emb", 2, 3, FST_DTYPE_STORED, rows, sizeof rows));
  CHECK(rows[0] == w[12] && rows[5] == w[17]);
  {
    uint16_t bf[24];
    uint64_t start[2] = {0, 5}, stop[2] = {4, 6};
    float col[4];
    OK(fst_checkpoint_read(c, "w", FST_BF16, bf, sizeof bf));
    CHECK(bf[1] == 0x3F80 && bf[2] == 0x4000); /* 1.0 and 2.0 in BF16 */
    OK(fst_checkpoint_read_box(c, "emb", 2, start, stop, FST_DTYPE_STORED, col, sizeof col));
    CHECK(col[0] == w[5] && col[1] == w[11] && col[2] == w[17] && col[3] == w[23]);
    CHECK_STATUS(fst_checkpoint_read_box(c, "emb", 2, start, stop, FST_DTYPE_STORED, col, 8), FST_ERR_BUFFER_TOO_SMALL);
  }
  OK(fst_checkpoint_metadata_get(c, "format", &value));
  CHECK(value != NULL && strcmp(value, "pt") == 0);
  OK(fst_checkpoint_metadata_get(c, "note", &value));
  CHECK(value != NULL && strcmp(value, "{\"x\":1}") == 0);
  OK(fst_checkpoint_metadata_get(c, "total_size", &value));
  CHECK(value == NULL);
  OK(fst_checkpoint_metadata_count(c, &n));
  CHECK(n == 3);
  {
    const char* key = NULL;
    OK(fst_checkpoint_metadata_at(c, 2, &key, &value)); /* the shard's, then the index's in its order */
    CHECK(strcmp(key, "note") == 0 && strcmp(value, "{\"x\":1}") == 0);
    OK(fst_checkpoint_metadata_at(c, 0, &key, NULL));
    CHECK(strcmp(key, "format") == 0);
    CHECK_STATUS(fst_checkpoint_metadata_at(c, 3, &key, &value), FST_ERR_INVALID_ARGUMENT);
  }
  OK(fst_checkpoint_prefetch(c, want, 2));
  CHECK_STATUS(fst_checkpoint_prefetch(c, NULL, 2), FST_ERR_INVALID_ARGUMENT);
  want[1] = "nope";
  CHECK_STATUS(fst_checkpoint_prefetch(c, want, 2), FST_ERR_TENSOR_NOT_FOUND);
  {
    const void* data = NULL;
    CHECK_STATUS(fst_checkpoint_data(c, "emb", &data), backend == FST_BACKEND_MMAP ? FST_OK : FST_ERR_INVALID_ARGUMENT);
    if (backend == FST_BACKEND_MMAP) CHECK(data != NULL && memcmp(data, w, sizeof w) == 0);
  }
  fst_checkpoint_close(c);
  CHECK_STATUS(fst_checkpoint_verify(c), FST_ERR_INVALID_ARGUMENT);

  /* The index against the shards: every rule has its own status. */
  write_index("{\"weight_map\": {\"w\": \"a.safetensors\", \"emb\": \"b.safetensors\"}}");
  OK(fst_checkpoint_open(ckdir, backend, &c));
  CHECK_STATUS(fst_checkpoint_verify(c), FST_ERR_UNLISTED_TENSOR);
  CHECK(strstr(fst_last_error(), "'h'") != NULL);
  fst_checkpoint_close(c);
  write_index("{\"weight_map\": {\"w\": \"a.safetensors\", \"h\": \"a.safetensors\", \"emb\": \"c.safetensors\"}}");
  OK(fst_checkpoint_open(ckdir, backend, &c));
  CHECK_STATUS(fst_checkpoint_verify(c), FST_ERR_SHARD_NOT_FOUND);
  fst_checkpoint_close(c);
  write_index("{\"weight_map\": {\"w\": \"a.safetensors\", \"h\": \"a.safetensors\", \"emb\": \"b.safetensors\","
              " \"x\": \"b.safetensors\"}}");
  OK(fst_checkpoint_open(ckdir, backend, &c));
  CHECK_STATUS(fst_checkpoint_verify(c), FST_ERR_TENSOR_MISSING_FROM_SHARD);
  CHECK_STATUS(fst_checkpoint_read(c, "x", FST_DTYPE_STORED, rows, sizeof rows), FST_ERR_TENSOR_MISSING_FROM_SHARD);
  fst_checkpoint_close(c);
  write_index("{\"weight_map\": {\"w\": \"../a.safetensors\"}}");
  CHECK_STATUS(fst_checkpoint_open(ckdir, backend, &c), FST_ERR_INVALID_INDEX);
  write_index("{\"weight_map\": {\"w\": \"a.safetensors\", \"w\": \"a.safetensors\"}}");
  CHECK_STATUS(fst_checkpoint_open(ckdir, backend, &c), FST_ERR_INVALID_INDEX);
  CHECK(strstr(fst_last_error(), "duplicate") != NULL);
  write_index("[1, 2]");
  CHECK_STATUS(fst_checkpoint_open(ckdir, backend, &c), FST_ERR_INVALID_INDEX);
  write_index("{\"weight_map\": {\"w\": 3}}");
  CHECK_STATUS(fst_checkpoint_open(ckdir, backend, &c), FST_ERR_INVALID_INDEX);
  path_in(path, sizeof path, "nothing-here");
  CHECK_STATUS(fst_checkpoint_open(path, backend, &c), FST_ERR_CHECKPOINT_NOT_FOUND);
  CHECK_STATUS(fst_checkpoint_open(NULL, backend, &c), FST_ERR_INVALID_ARGUMENT);

  /* A single file is a checkpoint too. */
  path_in(path, sizeof path, "ckpt/a.safetensors");
  OK(fst_checkpoint_open(path, backend, &c));
  OK(fst_checkpoint_is_sharded(c, &sharded));
  CHECK(sharded == 0);
  OK(fst_checkpoint_count(c, &n));
  CHECK(n == 2);
  fst_checkpoint_close(c);
}

static void test_write_hostile(void) {
  char path[128];
  uint64_t shape[1] = {4};
  fst_tensor_desc t;
  const char* keys[1] = {NULL};
  const char* values[1] = {"v"};
  path_in(path, sizeof path, "bad.safetensors");
  t.name = "t"; t.dtype = FST_F32; t.ndim = 1; t.shape = shape; t.data = w; t.nbytes = 12; /* 4 floats are 16 bytes */
  CHECK_STATUS(fst_write_file(path, &t, 1, NULL, NULL, 0, 0), FST_ERR_SIZE_MISMATCH);
  CHECK(access(path, F_OK) != 0); /* nothing half-written */
  t.nbytes = 16;
  t.dtype = 30;
  CHECK_STATUS(fst_write_file(path, &t, 1, NULL, NULL, 0, 0), FST_ERR_UNKNOWN_DTYPE);
  t.dtype = FST_F32;
  t.data = NULL;
  CHECK_STATUS(fst_write_file(path, &t, 1, NULL, NULL, 0, 0), FST_ERR_INVALID_ARGUMENT);
  t.data = w;
  t.name = NULL;
  CHECK_STATUS(fst_write_file(path, &t, 1, NULL, NULL, 0, 0), FST_ERR_INVALID_ARGUMENT);
  t.name = "t";
  CHECK_STATUS(fst_write_file(path, &t, 1, keys, values, 1, 0), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_write_file(path, &t, 1, NULL, NULL, 1, 0), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_write_file(path, &t, 1, NULL, NULL, 0, 64), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_write_file(NULL, &t, 1, NULL, NULL, 0, 0), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_write_file(path, NULL, 1, NULL, NULL, 0, 0), FST_ERR_INVALID_ARGUMENT);
  CHECK(access(path, F_OK) != 0);
  OK(fst_write_file(path, &t, 1, NULL, NULL, 0, FST_WRITE_METADATA_ALWAYS));
}

/* Weighted (importance matrix) GGML quantization: the bytes differ from the
 * unweighted ones, all-equal weights give the same bytes for any scale of
 * them (the searches are invariant to it), and the arguments are checked. */
static void test_quant_weighted(void) {
  enum { R = 2, C = 256 };
  static float x[R * C], imat[C], ones[C], twos[C];
  static unsigned char a[R * 8 * 34], b[R * 144], c[R * 144]; /* a: room for Q8_0 */
  size_t i;
  for (i = 0; i < R * C; ++i) x[i] = (float)sin((double)i * 0.91) * (float)(1 + i % 7);
  for (i = 0; i < C; ++i) {
    imat[i] = (float)(i % 13) * 0.5f;
    ones[i] = 1.0f;
    twos[i] = 2.0f;
  }
  OK(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, imat, C, a, sizeof a));
  OK(fst_ggml_quantize(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, b, sizeof b));
  CHECK(memcmp(a, b, sizeof b) != 0);
  OK(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, ones, C, b, sizeof b));
  OK(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, twos, C, c, sizeof c));
  CHECK(memcmp(b, c, sizeof b) == 0);
  OK(fst_ggml_quantize_weighted(FST_GGML_Q4_0, x, sizeof x, FST_F32, R, C, imat, C, a, R * 8 * 18));
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q8_0, x, sizeof x, FST_F32, R, C, imat, C, a, sizeof a),
               FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, NULL, C, a, sizeof a),
               FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, imat, C - 1, a, sizeof a),
               FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, imat, C, a, R * 144 - 1),
               FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x - 1, FST_F32, R, C, imat, C, a, sizeof a),
               FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_ggml_quantize_weighted(99, x, sizeof x, FST_F32, R, C, imat, C, a, sizeof a),
               FST_ERR_INVALID_ARGUMENT);
  imat[9] = -1.0f;
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, imat, C, a, sizeof a),
               FST_ERR_INVALID_ARGUMENT);
  imat[9] = NAN;
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, imat, C, a, sizeof a),
               FST_ERR_INVALID_ARGUMENT);
  imat[9] = 1.0f;
  x[300] = INFINITY;
  CHECK_STATUS(fst_ggml_quantize_weighted(FST_GGML_Q4_K, x, sizeof x, FST_F32, R, C, imat, C, a, sizeof a),
               FST_ERR_INVALID_ARGUMENT);
}

static void test_quant(void) {
  enum { R = 3, C = 64 };
  float x[R * C], back[R * C];
  unsigned char q[R * 68];
  int8_t codes[R * C], zp[R * 2];
  float scales[R * 2];
  size_t row = 0, i;
  float max_err = 0;
  for (i = 0; i < R * C; ++i) x[i] = (float)sin((double)i * 0.37) * 3.0f;
  OK(fst_ggml_row_bytes(FST_GGML_Q8_0, C, &row));
  CHECK(row == 68);
  CHECK_STATUS(fst_ggml_row_bytes(FST_GGML_Q8_0, 33, &row), FST_ERR_INVALID_ARGUMENT);
  OK(fst_ggml_row_bytes(FST_GGML_Q4_K, 512, &row));
  CHECK(row == 288);
  CHECK_STATUS(fst_ggml_row_bytes(FST_GGML_Q6_K, 32, &row), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_ggml_row_bytes(FST_GGML_Q6_K + 1, 256, &row), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_ggml_row_bytes(99, C, &row), FST_ERR_INVALID_ARGUMENT);
  OK(fst_ggml_quantize(FST_GGML_Q8_0, x, sizeof x, FST_F32, R, C, q, sizeof q));
  OK(fst_ggml_dequantize(FST_GGML_Q8_0, q, R * 68, R, C, back, R * C));
  for (i = 0; i < R * C; ++i) {
    float e = fabsf(back[i] - x[i]);
    if (e > max_err) max_err = e;
  }
  CHECK(max_err < 3.0f / 127.0f); /* Q8_0: half a step of absmax / 127 per block, at most */
  CHECK_STATUS(fst_ggml_quantize(FST_GGML_Q8_0, x, sizeof x, FST_F32, R, C, q, R * 68 - 1), FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_ggml_quantize(FST_GGML_Q8_0, x, sizeof x - 4, FST_F32, R, C, q, R * 68), FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_ggml_quantize(FST_GGML_Q8_0, x, sizeof x, FST_I32, R, C, q, R * 68), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_ggml_quantize(FST_GGML_Q8_0, NULL, sizeof x, FST_F32, R, C, q, R * 68), FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_ggml_dequantize(FST_GGML_Q8_0, q, R * 68, R, C, back, R * C - 1), FST_ERR_BUFFER_TOO_SMALL);
  x[5] = NAN;
  CHECK_STATUS(fst_ggml_quantize(FST_GGML_Q8_0, x, sizeof x, FST_F32, R, C, q, R * 68), FST_ERR_INVALID_ARGUMENT);
  x[5] = 0.5f;
  test_quant_weighted();

  /* int8, asymmetric, groups of 32: round trip within one step of each group. */
  OK(fst_int_quantize(x, sizeof x, FST_F32, R, C, 8, 32, 0, codes, R * C, scales, sizeof scales, zp, R * 2));
  OK(fst_int_dequantize(codes, R * C, scales, sizeof scales, FST_F32, zp, R * 2, R, C, 32, back, R * C));
  for (i = 0; i < R * C; ++i) CHECK(fabsf(back[i] - x[i]) <= scales[i / 32] * 1.0f + 1e-6f);
  CHECK_STATUS(fst_int_quantize(x, sizeof x, FST_F32, R, C, 8, 32, 0, codes, R * C, scales, sizeof scales, NULL, 0),
               FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_int_quantize(x, sizeof x, FST_F32, R, C, 8, 48, 1, codes, R * C, scales, sizeof scales, NULL, 0),
               FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_int_quantize(x, sizeof x, FST_F32, R, C, 3, 32, 1, codes, R * C, scales, sizeof scales, NULL, 0),
               FST_ERR_INVALID_ARGUMENT);
  CHECK_STATUS(fst_int_quantize(x, sizeof x, FST_F32, R, C, 8, 32, 1, codes, R * C - 1, scales, sizeof scales, NULL, 0),
               FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_int_dequantize(codes, R * C, scales, 4, FST_F32, NULL, 0, R, C, 32, back, R * C),
               FST_ERR_BUFFER_TOO_SMALL);
  CHECK_STATUS(fst_int_dequantize(codes, R * C, scales, sizeof scales, FST_U8, NULL, 0, R, C, 32, back, R * C),
               FST_ERR_INVALID_ARGUMENT);
}

int main(void) {
  size_t i;
  char cmd[96];
  strcpy(dir, "/tmp/fastensors-c-test-XXXXXX");
  if (mkdtemp(dir) == NULL) return 2;
  for (i = 0; i < 24; ++i) w[i] = (float)i;
  for (i = 0; i < 5; ++i) ids[i] = (int64_t)(10 + i);
  test_library();
  test_file(FST_BACKEND_MMAP);
  test_file(FST_BACKEND_PREAD);
  test_checkpoint(FST_BACKEND_MMAP);
  test_checkpoint(FST_BACKEND_PREAD);
  test_write_hostile();
  test_quant();
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) ++failures;
  if (failures) fprintf(stderr, "%d checks failed\n", failures);
  else printf("c_api_test: all checks passed\n");
  return failures ? 1 : 0;
}
