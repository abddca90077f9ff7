/* The fastensors C API: safetensors files and sharded checkpoints for C (and
 * Rust, Go, Zig, ... through the C ABI). C99; the same library as the C++ API.
 *
 * Rules that hold for every function (docs/embedding.md):
 * - Every function that can fail returns an fst_status; FST_OK is 0. No C++
 *   exception ever leaves a function of this header.
 * - On failure, fst_last_error() gives a message naming the file, the tensor
 *   and the rule, for the calling thread, until that thread's next failure.
 * - Handles are opaque. fst_*_close accepts NULL. A handle may be used from
 *   several threads at once for reads; closing it while another thread uses
 *   it is not allowed.
 * - Buffers belong to the caller and come with their size in bytes (or in
 *   elements where the type says so); a buffer that is too small is
 *   FST_ERR_BUFFER_TOO_SMALL and nothing is written. Strings and shapes that
 *   a handle returns stay valid until the handle is closed.
 * - Output pointers are written only on success. NULL where a pointer is
 *   required is FST_ERR_INVALID_ARGUMENT.
 */
#ifndef FASTENSORS_H
#define FASTENSORS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__) || defined(__clang__)
#define FST_API __attribute__((visibility("default")))
#else
#define FST_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Raised when a function of this header changes incompatibly; compare with
 * fst_abi_version() at run time. */
#define FST_ABI_VERSION 1

/* Status codes. 1..34 are the C++ fastensors::ErrorCode values plus one, in
 * the same order (fastensors/error.hpp); 100 and up are the C API's own. */
typedef enum fst_status {
  FST_OK = 0,
  FST_ERR_IO = 1,
  FST_ERR_FILE_NOT_FOUND = 2,
  FST_ERR_HEADER_TOO_SMALL = 3,
  FST_ERR_HEADER_TOO_LARGE = 4,
  FST_ERR_INVALID_HEADER_LENGTH = 5,
  FST_ERR_INVALID_UTF8 = 6,
  FST_ERR_INVALID_JSON = 7,
  FST_ERR_INVALID_HEADER = 8,
  FST_ERR_NESTING_TOO_DEEP = 9,
  FST_ERR_DUPLICATE_KEY = 10,
  FST_ERR_UNKNOWN_DTYPE = 11,
  FST_ERR_INVALID_SHAPE = 12,
  FST_ERR_INVALID_OFFSETS = 13,
  FST_ERR_OFFSETS_BACKWARDS = 14,
  FST_ERR_OFFSETS_GAP = 15,
  FST_ERR_OFFSETS_OVERLAP = 16,
  FST_ERR_OVERFLOW = 17,
  FST_ERR_SIZE_MISMATCH = 18,
  FST_ERR_MISALIGNED_SUB_BYTE = 19,
  FST_ERR_TRAILING_BYTES = 20,
  FST_ERR_TRUNCATED_DATA = 21,
  FST_ERR_INVALID_METADATA = 22,
  FST_ERR_TENSOR_NOT_FOUND = 23,
  FST_ERR_INVALID_ARGUMENT = 24,
  FST_ERR_UNSUPPORTED_CONVERSION = 25,
  FST_ERR_UNSUPPORTED_ISA = 26,
  FST_ERR_FILE_CHANGED = 27,
  FST_ERR_CHECKPOINT_NOT_FOUND = 28,
  FST_ERR_AMBIGUOUS_CHECKPOINT = 29,
  FST_ERR_INVALID_INDEX = 30,
  FST_ERR_SHARD_NOT_FOUND = 31,
  FST_ERR_TENSOR_MISSING_FROM_SHARD = 32,
  FST_ERR_UNLISTED_TENSOR = 33,
  FST_ERR_TENSOR_IN_MULTIPLE_SHARDS = 34,
  FST_ERR_BUFFER_TOO_SMALL = 100, /* a caller's buffer is smaller than the result */
  FST_ERR_OUT_OF_MEMORY = 101,
  FST_ERR_CALLBACK = 102,         /* a write callback returned non-zero */
  FST_ERR_INTERNAL = 103          /* an unexpected failure inside the library */
} fst_status;

/* Element types, in the order of fastensors::Dtype (the reference's). */
typedef enum fst_dtype {
  FST_BOOL = 0,
  FST_F4 = 1,
  FST_F6_E2M3 = 2,
  FST_F6_E3M2 = 3,
  FST_U8 = 4,
  FST_I8 = 5,
  FST_F8_E5M2 = 6,
  FST_F8_E4M3 = 7,
  FST_F8_E8M0 = 8,
  FST_F8_E4M3FNUZ = 9,
  FST_F8_E5M2FNUZ = 10,
  FST_I16 = 11,
  FST_U16 = 12,
  FST_F16 = 13,
  FST_BF16 = 14,
  FST_I32 = 15,
  FST_U32 = 16,
  FST_F32 = 17,
  FST_C64 = 18,
  FST_F64 = 19,
  FST_I64 = 20,
  FST_U64 = 21,
  FST_DTYPE_STORED = 255 /* reads: keep the stored dtype (no conversion) */
} fst_dtype;

typedef enum fst_backend {
  FST_BACKEND_MMAP = 0, /* map copy-on-write; fst_*_data gives zero-copy pointers */
  FST_BACKEND_PREAD = 1 /* read on demand with pread(2); nothing is mapped */
} fst_backend;

/* ---- library ------------------------------------------------------------ */

FST_API uint32_t fst_abi_version(void);
/* "MAJOR.MINOR.PATCH" of the linked library. */
FST_API const char* fst_version(void);
/* The calling thread's message for its last failed call; "" when none. */
FST_API const char* fst_last_error(void);
/* "FST_OK", "FST_ERR_IO", ...; "FST_ERR_UNKNOWN" for other values. */
FST_API const char* fst_status_name(int status);
/* The SIGBUS guard (docs/embedding.md, "Signals"): on by default; 0 turns it
 * off for files mapped afterwards, so the library never installs a handler. */
FST_API void fst_set_sigbus_guard(int enabled);
FST_API int fst_sigbus_guard_enabled(void);

/* ---- dtypes ------------------------------------------------------------- */

/* "F32", "BF16", ...; NULL for a value that is not a dtype. */
FST_API const char* fst_dtype_name(int dtype);
FST_API fst_status fst_dtype_parse(const char* name, fst_dtype* out);
/* Storage bits per element (1..64); 0 for a value that is not a dtype. */
FST_API uint32_t fst_dtype_bits(int dtype);
/* Bytes of `ndim` dimensions of `dtype` (FST_ERR_OVERFLOW past 64 bits,
 * FST_ERR_MISALIGNED_SUB_BYTE when sub-byte values do not fill whole bytes). */
FST_API fst_status fst_tensor_bytes(int dtype, const uint64_t* shape, size_t ndim, uint64_t* out);

/* What a header says of a tensor. `shape` (ndim values; NULL when ndim is 0)
 * belongs to the handle it came from. */
typedef struct fst_tensor_info {
  fst_dtype dtype;
  size_t ndim;
  const uint64_t* shape;
  uint64_t nbytes;
  uint64_t begin; /* data_offsets, relative to the data section */
  uint64_t end;
} fst_tensor_info;

/* ---- one safetensors file ----------------------------------------------- */

typedef struct fst_file fst_file;

FST_API fst_status fst_file_open(const char* path, int backend, fst_file** out);
FST_API void fst_file_close(fst_file* file);
/* Tensors, and the i-th name (sorted bytewise). */
FST_API fst_status fst_file_count(const fst_file* file, size_t* out);
FST_API fst_status fst_file_name(const fst_file* file, size_t i, const char** out);
FST_API fst_status fst_file_info(const fst_file* file, const char* name, fst_tensor_info* out);
/* __metadata__ entries in file order; _get sets *value to NULL when the key
 * is absent (FST_OK). */
FST_API fst_status fst_file_metadata_count(const fst_file* file, size_t* out);
FST_API fst_status fst_file_metadata_at(const fst_file* file, size_t i, const char** key, const char** value);
FST_API fst_status fst_file_metadata_get(const fst_file* file, const char* key, const char** value);
/* Mmap backend: the tensor's bytes in the mapping, valid until close
 * (writable copy-on-write memory; writes never reach the file). The pread
 * backend has no mapping: FST_ERR_INVALID_ARGUMENT. */
FST_API fst_status fst_file_data(const fst_file* file, const char* name, const void** out);

/* Reads into dst (dst_size bytes): the whole tensor, rows [row_begin,
 * row_end) of axis 0, or the box start[i] <= index < stop[i] on each of its
 * `ndim` axes, row-major. `to` converts on the way (FST_F32, FST_F16,
 * FST_BF16, ...; FST_DTYPE_STORED keeps the stored bytes). fst_*_read_size
 * gives the bytes a read needs (box NULL/0 axes: the whole tensor). */
FST_API fst_status fst_file_read(const fst_file* file, const char* name, int to, void* dst, size_t dst_size);
FST_API fst_status fst_file_read_rows(const fst_file* file, const char* name, uint64_t row_begin, uint64_t row_end,
                                      int to, void* dst, size_t dst_size);
FST_API fst_status fst_file_read_box(const fst_file* file, const char* name, size_t ndim, const uint64_t* start,
                                     const uint64_t* stop, int to, void* dst, size_t dst_size);
FST_API fst_status fst_file_read_size(const fst_file* file, const char* name, size_t ndim, const uint64_t* start,
                                      const uint64_t* stop, int to, uint64_t* out);

/* ---- checkpoints: a file, a directory, or an index with its shards ------- */

typedef struct fst_checkpoint fst_checkpoint;

/* The index and the shards are checked against each other as shards open
 * (FST_ERR_SHARD_NOT_FOUND, FST_ERR_UNLISTED_TENSOR, ...); fst_checkpoint_verify
 * checks them all now. */
FST_API fst_status fst_checkpoint_open(const char* path, int backend, fst_checkpoint** out);
FST_API void fst_checkpoint_close(fst_checkpoint* ckpt);
FST_API fst_status fst_checkpoint_verify(const fst_checkpoint* ckpt);
/* 1 for an index with shards, 0 for a single file. */
FST_API fst_status fst_checkpoint_is_sharded(const fst_checkpoint* ckpt, int* out);
/* Tensors, and the i-th name (sorted bytewise; the first call verifies). */
FST_API fst_status fst_checkpoint_count(const fst_checkpoint* ckpt, size_t* out);
FST_API fst_status fst_checkpoint_name(const fst_checkpoint* ckpt, size_t i, const char** out);
/* Files (relative to the checkpoint's directory) in index order. */
FST_API fst_status fst_checkpoint_file_count(const fst_checkpoint* ckpt, size_t* out);
FST_API fst_status fst_checkpoint_file_name(const fst_checkpoint* ckpt, size_t i, const char** out);
FST_API fst_status fst_checkpoint_file_of(const fst_checkpoint* ckpt, const char* name, const char** out);
FST_API fst_status fst_checkpoint_info(const fst_checkpoint* ckpt, const char* name, fst_tensor_info* out);
/* The first file's __metadata__ updated with the index's metadata (except
 * total_size and total_parameters; other values as compact JSON). */
FST_API fst_status fst_checkpoint_metadata_count(const fst_checkpoint* ckpt, size_t* out);
FST_API fst_status fst_checkpoint_metadata_at(const fst_checkpoint* ckpt, size_t i, const char** key,
                                              const char** value);
FST_API fst_status fst_checkpoint_metadata_get(const fst_checkpoint* ckpt, const char* key, const char** value);
FST_API fst_status fst_checkpoint_data(const fst_checkpoint* ckpt, const char* name, const void** out);
FST_API fst_status fst_checkpoint_read(const fst_checkpoint* ckpt, const char* name, int to, void* dst,
                                       size_t dst_size);
FST_API fst_status fst_checkpoint_read_rows(const fst_checkpoint* ckpt, const char* name, uint64_t row_begin,
                                            uint64_t row_end, int to, void* dst, size_t dst_size);
FST_API fst_status fst_checkpoint_read_box(const fst_checkpoint* ckpt, const char* name, size_t ndim,
                                           const uint64_t* start, const uint64_t* stop, int to, void* dst,
                                           size_t dst_size);
FST_API fst_status fst_checkpoint_read_size(const fst_checkpoint* ckpt, const char* name, size_t ndim,
                                            const uint64_t* start, const uint64_t* stop, int to, uint64_t* out);
/* Opens the tensors' shards and reads their pages ahead (a hint). */
FST_API fst_status fst_checkpoint_prefetch(const fst_checkpoint* ckpt, const char* const* names, size_t count);

/* ---- writing (streaming, atomic: temporary file, fsync, rename) --------- */

typedef struct fst_tensor_desc {
  const char* name;
  int dtype;             /* an fst_dtype */
  size_t ndim;
  const uint64_t* shape; /* ndim values (NULL when ndim is 0) */
  const void* data;      /* nbytes bytes; ignored by fst_write_file_streaming */
  uint64_t nbytes;
} fst_tensor_desc;

/* Produces tensors[index]'s bytes when the writer reaches it (file order, on
 * the calling thread): *data must hold *nbytes bytes (the planned nbytes)
 * until the next call. Non-zero aborts the write (FST_ERR_CALLBACK). */
typedef int (*fst_fill_fn)(void* user, size_t index, const void** data, uint64_t* nbytes);

/* Flags of the writers. */
#define FST_WRITE_NO_FSYNC 1u        /* atomic rename without fsync (not durable) */
#define FST_WRITE_METADATA_ALWAYS 2u /* write "__metadata__" even when empty */

/* Writes `count` tensors and `metadata_count` string pairs to `path` in the
 * reference writer's order (byte-identical output). The target is replaced
 * only when everything was written. */
FST_API fst_status fst_write_file(const char* path, const fst_tensor_desc* tensors, size_t count,
                                  const char* const* metadata_keys, const char* const* metadata_values,
                                  size_t metadata_count, unsigned flags);
FST_API fst_status fst_write_file_streaming(const char* path, const fst_tensor_desc* tensors, size_t count,
                                            const char* const* metadata_keys, const char* const* metadata_values,
                                            size_t metadata_count, unsigned flags, fst_fill_fn fill, void* user);

/* ---- quantization (docs/quantization.md) -------------------------------- */

/* Inputs are row-major rows x cols matrices of FST_F32, FST_F16 or FST_BF16;
 * src_size is their size in bytes. NaN or infinity input is
 * FST_ERR_INVALID_ARGUMENT. */
typedef enum fst_ggml_type {
  FST_GGML_Q8_0 = 0,
  FST_GGML_Q4_0 = 1,
  FST_GGML_Q4_1 = 2,
  FST_GGML_Q5_0 = 3,
  FST_GGML_Q5_1 = 4,
  /* K-quants: super-blocks of 256 values, byte-identical with ggml. */
  FST_GGML_Q2_K = 5,
  FST_GGML_Q3_K = 6,
  FST_GGML_Q4_K = 7,
  FST_GGML_Q5_K = 8,
  FST_GGML_Q6_K = 9
} fst_ggml_type;

/* Bytes of one quantized row (cols a multiple of 32, or of 256 for the
 * K-quants). */
FST_API fst_status fst_ggml_row_bytes(int type, size_t cols, size_t* out);
FST_API fst_status fst_ggml_quantize(int type, const void* src, size_t src_size, int src_dtype, size_t rows,
                                     size_t cols, void* dst, size_t dst_size);
/* With an importance matrix (llama-quantize --imatrix): imatrix holds
 * imatrix_count == cols weights (finite, >= 0), one per column, applied to
 * every row; the bytes equal ggml's weighted quantizers'. Every type but
 * FST_GGML_Q8_0 (whose weights ggml ignores: FST_ERR_INVALID_ARGUMENT).
 * FST_ERR_INVALID_ARGUMENT also for a NULL imatrix, a count other than cols,
 * or a negative or non-finite weight. */
FST_API fst_status fst_ggml_quantize_weighted(int type, const void* src, size_t src_size, int src_dtype, size_t rows,
                                              size_t cols, const float* imatrix, size_t imatrix_count, void* dst,
                                              size_t dst_size);
/* dst_count: floats in dst (at least rows * cols). */
FST_API fst_status fst_ggml_dequantize(int type, const void* src, size_t src_size, size_t rows, size_t cols,
                                       float* dst, size_t dst_count);

/* Integer schemes: bits 8, 4 or 2; group_size a divisor of cols (cols for
 * per-channel); codes (rows * cols int8), scales (rows * cols / group_size
 * values of src_dtype, scales_size bytes), zero_points (as many int8, only
 * for asymmetric schemes; NULL with 0 otherwise). */
FST_API fst_status fst_int_quantize(const void* src, size_t src_size, int src_dtype, size_t rows, size_t cols,
                                    unsigned bits, size_t group_size, int symmetric, int8_t* codes,
                                    size_t codes_count, void* scales, size_t scales_size, int8_t* zero_points,
                                    size_t zero_points_count);
FST_API fst_status fst_int_dequantize(const int8_t* codes, size_t codes_count, const void* scales,
                                      size_t scales_size, int scale_dtype, const int8_t* zero_points,
                                      size_t zero_points_count, size_t rows, size_t cols, size_t group_size,
                                      float* dst, size_t dst_count);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FASTENSORS_H */
