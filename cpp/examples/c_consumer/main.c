/* A C program that embeds fastensors through pkg-config (see Makefile):
 * opens a checkpoint (a file, a directory or an index), prints each tensor's
 * name, dtype and shape, and for float tensors the sum of their values read
 * as F32. Exits 1 with the library's message on any error. */
#include <fastensors/fastensors.h>

#include <stdio.h>
#include <stdlib.h>

static int fail(const char* what, fst_status s) {
  fprintf(stderr, "%s: %s: %s\n", what, fst_status_name(s), fst_last_error());
  return 1;
}

int main(int argc, char** argv) {
  fst_checkpoint* ckpt = NULL;
  fst_status s;
  size_t count = 0, i, d;
  int rc = 0;
  if (argc != 2) {
    fprintf(stderr, "usage: %s CHECKPOINT\n", argv[0]);
    return 2;
  }
  if (fst_abi_version() != FST_ABI_VERSION) {
    fprintf(stderr, "built against ABI %d, running with %u\n", FST_ABI_VERSION, fst_abi_version());
    return 1;
  }
  s = fst_checkpoint_open(argv[1], FST_BACKEND_MMAP, &ckpt);
  if (s != FST_OK) return fail("open", s);
  s = fst_checkpoint_count(ckpt, &count);
  if (s != FST_OK) {
    fst_checkpoint_close(ckpt);
    return fail("count", s);
  }
  for (i = 0; i < count && rc == 0; ++i) {
    const char* name = NULL;
    fst_tensor_info info;
    if ((s = fst_checkpoint_name(ckpt, i, &name)) != FST_OK || (s = fst_checkpoint_info(ckpt, name, &info)) != FST_OK) {
      rc = fail("info", s);
      break;
    }
    printf("%s\t%s\t[", name, fst_dtype_name(info.dtype));
    for (d = 0; d < info.ndim; ++d) printf(d ? ", %llu" : "%llu", (unsigned long long)info.shape[d]);
    printf("]");
    if (info.dtype == FST_F32 || info.dtype == FST_F16 || info.dtype == FST_BF16 || info.dtype == FST_F64) {
      uint64_t bytes = 0;
      float* values;
      double sum = 0;
      size_t n, k;
      if ((s = fst_checkpoint_read_size(ckpt, name, 0, NULL, NULL, FST_F32, &bytes)) != FST_OK) {
        rc = fail("size", s);
        break;
      }
      n = (size_t)(bytes / sizeof(float));
      values = malloc(bytes ? (size_t)bytes : 1);
      if (values == NULL) {
        rc = 1;
        break;
      }
      s = fst_checkpoint_read(ckpt, name, FST_F32, values, (size_t)bytes);
      if (s != FST_OK) {
        free(values);
        rc = fail("read", s);
        break;
      }
      for (k = 0; k < n; ++k) sum += values[k];
      free(values);
      printf("\tsum=%.6g", sum);
    }
    printf("\n");
  }
  fst_checkpoint_close(ckpt);
  return rc;
}
