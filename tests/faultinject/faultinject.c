/* An LD_PRELOAD shim that makes file-writing calls fail, for the fault tests
 * (tests/test_faults.py, docs/security.md "Faults while writing").
 *
 * Only calls on files under FASTENSORS_FAULT_DIR count (fds are resolved
 * through /proc/self/fd, paths made absolute). Calls are grouped in classes:
 *
 *   write   write pwrite writev pwritev pwritev2 copy_file_range sendfile
 *           ftruncate fallocate
 *   sync    fsync fdatasync
 *   rename  rename renameat renameat2 link linkat
 *   create  open/openat/creat with O_CREAT, mkdir mkdirat
 *   close   close (the descriptor is closed, then the error returned, as
 *           Linux does)
 *   read    pread pread64 preadv preadv64 preadv2 (the read engine's calls)
 *   populate madvise(MADV_POPULATE_READ), on any mapping (an address names
 *           no file, so these are counted whatever the directory)
 *
 * Configuration (environment, read at load time and by faultinject_reset()):
 *   FASTENSORS_FAULT_DIR    absolute directory; unset: the shim does nothing
 *   FASTENSORS_FAULT_OP     class whose FASTENSORS_FAULT_N-th call fails
 *   FASTENSORS_FAULT_N      1-based; 0 or unset: only count
 *   FASTENSORS_FAULT_ERRNO  errno to fail with (a number; default EIO)
 *   FASTENSORS_FAULT_STICKY 1: every later call of the class fails too (a
 *                           full or failing disk stays so); else only the
 *                           N-th call fails and later ones pass
 *   FASTENSORS_FAULT_SHORT  1: every read-class call that does not fail
 *                           returns at most half the bytes asked (at least
 *                           one): short reads, which readers must resume
 *   FASTENSORS_FAULT_LOG    file to which every counted call is appended:
 *     "call <class> <n> <func> <path>"      every matching call
 *     "inject <class> <n> <errno> <path>"   the call made to fail
 *     "refsync <func> <path>"               an fsync of a file after an
 *                                           fsync of it was made to fail
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { C_WRITE, C_SYNC, C_RENAME, C_CREATE, C_CLOSE, C_READ, C_POPULATE, C_COUNT };
static const char *const kClassNames[C_COUNT] = {"write", "sync", "rename", "create", "close", "read", "populate"};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_dir[PATH_MAX];
static size_t g_dir_len;
static int g_class = -1;
static long g_n;
static int g_errno = EIO;
static char g_log[PATH_MAX];
static long g_counts[C_COUNT];
static int g_sticky;
static int g_short;
/* Files whose fsync was made to fail: a later fsync of them is logged. */
static struct { dev_t dev; ino_t ino; } g_failed_sync[64];
static int g_failed_sync_n;

#define REAL(name) real_##name
#define DECLARE_REAL(ret, name, ...)                                     \
  static ret (*real_##name)(__VA_ARGS__);                                \
  static void load_##name(void) {                                        \
    if (!real_##name) *(void **)(&real_##name) = dlsym(RTLD_NEXT, #name); \
  }

DECLARE_REAL(ssize_t, write, int, const void *, size_t)
DECLARE_REAL(ssize_t, pwrite, int, const void *, size_t, off_t)
DECLARE_REAL(ssize_t, pwrite64, int, const void *, size_t, off_t)
DECLARE_REAL(ssize_t, writev, int, const struct iovec *, int)
DECLARE_REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t)
DECLARE_REAL(ssize_t, pwritev64, int, const struct iovec *, int, off_t)
DECLARE_REAL(ssize_t, pwritev2, int, const struct iovec *, int, off_t, int)
DECLARE_REAL(ssize_t, copy_file_range, int, off_t *, int, off_t *, size_t, unsigned)
DECLARE_REAL(ssize_t, sendfile, int, int, off_t *, size_t)
DECLARE_REAL(ssize_t, sendfile64, int, int, off_t *, size_t)
DECLARE_REAL(int, ftruncate, int, off_t)
DECLARE_REAL(int, ftruncate64, int, off_t)
DECLARE_REAL(int, fallocate, int, int, off_t, off_t)
DECLARE_REAL(int, fallocate64, int, int, off_t, off_t)
DECLARE_REAL(int, fsync, int)
DECLARE_REAL(int, fdatasync, int)
DECLARE_REAL(int, rename, const char *, const char *)
DECLARE_REAL(int, renameat, int, const char *, int, const char *)
DECLARE_REAL(int, renameat2, int, const char *, int, const char *, unsigned)
DECLARE_REAL(int, link, const char *, const char *)
DECLARE_REAL(int, linkat, int, const char *, int, const char *, int)
DECLARE_REAL(int, open, const char *, int, ...)
DECLARE_REAL(int, open64, const char *, int, ...)
DECLARE_REAL(int, openat, int, const char *, int, ...)
DECLARE_REAL(int, openat64, int, const char *, int, ...)
DECLARE_REAL(int, creat, const char *, mode_t)
DECLARE_REAL(int, creat64, const char *, mode_t)
DECLARE_REAL(int, mkdir, const char *, mode_t)
DECLARE_REAL(int, mkdirat, int, const char *, mode_t)
DECLARE_REAL(int, close, int)
DECLARE_REAL(ssize_t, pread, int, void *, size_t, off_t)
DECLARE_REAL(ssize_t, pread64, int, void *, size_t, off_t)
DECLARE_REAL(ssize_t, preadv, int, const struct iovec *, int, off_t)
DECLARE_REAL(ssize_t, preadv64, int, const struct iovec *, int, off_t)
DECLARE_REAL(ssize_t, preadv2, int, const struct iovec *, int, off_t, int)
DECLARE_REAL(int, madvise, void *, size_t, int)

/* Reads the configuration and starts counting afresh (a forked child calls
 * this through ctypes after setting its environment). */
void faultinject_reset(void) {
  pthread_mutex_lock(&g_lock);
  const char *dir = getenv("FASTENSORS_FAULT_DIR");
  const char *op = getenv("FASTENSORS_FAULT_OP");
  const char *n = getenv("FASTENSORS_FAULT_N");
  const char *err = getenv("FASTENSORS_FAULT_ERRNO");
  const char *log = getenv("FASTENSORS_FAULT_LOG");
  const char *sticky = getenv("FASTENSORS_FAULT_STICKY");
  const char *shorts = getenv("FASTENSORS_FAULT_SHORT");
  g_dir[0] = '\0';
  g_dir_len = 0;
  if (dir && dir[0] == '/' && strlen(dir) < sizeof g_dir) {
    strcpy(g_dir, dir);
    g_dir_len = strlen(g_dir);
    while (g_dir_len > 1 && g_dir[g_dir_len - 1] == '/') g_dir[--g_dir_len] = '\0';
  }
  g_class = -1;
  for (int c = 0; op && c < C_COUNT; ++c)
    if (strcmp(op, kClassNames[c]) == 0) g_class = c;
  g_n = n ? strtol(n, NULL, 10) : 0;
  g_errno = err && atoi(err) > 0 ? atoi(err) : EIO;
  g_log[0] = '\0';
  if (log && strlen(log) < sizeof g_log) strcpy(g_log, log);
  memset(g_counts, 0, sizeof g_counts);
  g_sticky = sticky && strcmp(sticky, "1") == 0;
  g_short = shorts && strcmp(shorts, "1") == 0;
  g_failed_sync_n = 0;
  pthread_mutex_unlock(&g_lock);
}

__attribute__((constructor)) static void faultinject_init(void) { faultinject_reset(); }

static void log_line(const char *line) {
  if (!g_log[0]) return;
  load_open();
  load_write();
  load_close();
  int fd = REAL(open)(g_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return;
  size_t len = strlen(line);
  while (len > 0) {
    ssize_t w = REAL(write)(fd, line, len);
    if (w <= 0) break;
    line += w;
    len -= (size_t)w;
  }
  REAL(close)(fd);
}

static int under_dir(const char *abs) {
  if (!g_dir_len) return 0;
  if (strncmp(abs, g_dir, g_dir_len) != 0) return 0;
  return abs[g_dir_len] == '/' || abs[g_dir_len] == '\0';
}

static int fd_path(int fd, char *out, size_t size) {
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, out, size - 1);
  if (n < 0) return -1;
  out[n] = '\0';
  return 0;
}

/* `path` relative to `dirfd` (AT_FDCWD: the working directory), made absolute. */
static int abs_path(int dirfd, const char *path, char *out, size_t size) {
  if (!path) return -1;
  if (path[0] == '/') {
    snprintf(out, size, "%s", path);
    return 0;
  }
  char base[PATH_MAX];
  if (dirfd == AT_FDCWD) {
    if (!getcwd(base, sizeof base)) return -1;
  } else if (fd_path(dirfd, base, sizeof base) != 0) {
    return -1;
  }
  snprintf(out, size, "%s/%s", base, path);
  return 0;
}

/* Counts a call on `abs` of class `cls`; returns the errno to fail with, or 0. */
static int decide(int cls, const char *func, const char *abs) {
  if (!g_dir_len || (cls != C_POPULATE && !under_dir(abs))) return 0;
  char line[PATH_MAX + 128];
  int fail = 0;
  pthread_mutex_lock(&g_lock);
  long n = ++g_counts[cls];
  snprintf(line, sizeof line, "call %s %ld %s %s\n", kClassNames[cls], n, func, abs);
  log_line(line);
  if (cls == g_class && g_n > 0 && (n == g_n || (g_sticky && n > g_n))) {
    fail = g_errno;
    snprintf(line, sizeof line, "inject %s %ld %d %s\n", kClassNames[cls], n, fail, abs);
    log_line(line);
  }
  pthread_mutex_unlock(&g_lock);
  return fail;
}

static int decide_fd(int cls, const char *func, int fd) {
  if (!g_dir_len) return 0;
  char p[PATH_MAX];
  if (fd_path(fd, p, sizeof p) != 0) return 0;
  return decide(cls, func, p);
}

static int decide_path(int cls, const char *func, int dirfd, const char *path) {
  if (!g_dir_len) return 0;
  char p[PATH_MAX];
  if (abs_path(dirfd, path, p, sizeof p) != 0) return 0;
  return decide(cls, func, p);
}

/* Either path of a rename/link under the directory makes it count. */
static int decide_two(int cls, const char *func, int fd1, const char *p1, int fd2, const char *p2) {
  if (!g_dir_len) return 0;
  char a[PATH_MAX], b[PATH_MAX];
  if (abs_path(fd2, p2, b, sizeof b) == 0 && under_dir(b)) return decide(cls, func, b);
  if (abs_path(fd1, p1, a, sizeof a) == 0 && under_dir(a)) return decide(cls, func, a);
  return 0;
}

#define FAIL_IF(decision)   \
  do {                      \
    int e_ = (decision);    \
    if (e_) {               \
      errno = e_;           \
      return -1;            \
    }                       \
  } while (0)

ssize_t write(int fd, const void *buf, size_t count) {
  load_write();
  FAIL_IF(decide_fd(C_WRITE, "write", fd));
  return REAL(write)(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t off) {
  load_pwrite();
  FAIL_IF(decide_fd(C_WRITE, "pwrite", fd));
  return REAL(pwrite)(fd, buf, count, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t off) {
  load_pwrite64();
  FAIL_IF(decide_fd(C_WRITE, "pwrite64", fd));
  return REAL(pwrite64)(fd, buf, count, off);
}

ssize_t writev(int fd, const struct iovec *iov, int n) {
  load_writev();
  FAIL_IF(decide_fd(C_WRITE, "writev", fd));
  return REAL(writev)(fd, iov, n);
}

ssize_t pwritev(int fd, const struct iovec *iov, int n, off_t off) {
  load_pwritev();
  FAIL_IF(decide_fd(C_WRITE, "pwritev", fd));
  return REAL(pwritev)(fd, iov, n, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int n, off_t off) {
  load_pwritev64();
  FAIL_IF(decide_fd(C_WRITE, "pwritev64", fd));
  return REAL(pwritev64)(fd, iov, n, off);
}

ssize_t pwritev2(int fd, const struct iovec *iov, int n, off_t off, int flags) {
  load_pwritev2();
  FAIL_IF(decide_fd(C_WRITE, "pwritev2", fd));
  return REAL(pwritev2)(fd, iov, n, off, flags);
}

ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t len, unsigned flags) {
  load_copy_file_range();
  FAIL_IF(decide_fd(C_WRITE, "copy_file_range", out));
  return REAL(copy_file_range)(in, in_off, out, out_off, len, flags);
}

ssize_t sendfile(int out, int in, off_t *off, size_t count) {
  load_sendfile();
  FAIL_IF(decide_fd(C_WRITE, "sendfile", out));
  return REAL(sendfile)(out, in, off, count);
}

ssize_t sendfile64(int out, int in, off_t *off, size_t count) {
  load_sendfile64();
  FAIL_IF(decide_fd(C_WRITE, "sendfile64", out));
  return REAL(sendfile64)(out, in, off, count);
}

int ftruncate(int fd, off_t len) {
  load_ftruncate();
  FAIL_IF(decide_fd(C_WRITE, "ftruncate", fd));
  return REAL(ftruncate)(fd, len);
}

int ftruncate64(int fd, off_t len) {
  load_ftruncate64();
  FAIL_IF(decide_fd(C_WRITE, "ftruncate64", fd));
  return REAL(ftruncate64)(fd, len);
}

int fallocate(int fd, int mode, off_t off, off_t len) {
  load_fallocate();
  FAIL_IF(decide_fd(C_WRITE, "fallocate", fd));
  return REAL(fallocate)(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len) {
  load_fallocate64();
  FAIL_IF(decide_fd(C_WRITE, "fallocate64", fd));
  return REAL(fallocate64)(fd, mode, off, len);
}

/* An fsync of a file whose fsync failed earlier is logged: a writer must not
 * retry a failed fsync and then report success (the kernel may have dropped
 * the dirty pages, so a second fsync can succeed with the data lost). */
static int sync_call(int (*real)(int), const char *func, int fd) {
  struct stat st;
  int have = g_dir_len && fstat(fd, &st) == 0;
  if (have) {
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_failed_sync_n; ++i) {
      if (g_failed_sync[i].dev == st.st_dev && g_failed_sync[i].ino == st.st_ino) {
        char p[PATH_MAX], line[PATH_MAX + 64];
        if (fd_path(fd, p, sizeof p) != 0) strcpy(p, "?");
        snprintf(line, sizeof line, "refsync %s %s\n", func, p);
        log_line(line);
      }
    }
    pthread_mutex_unlock(&g_lock);
  }
  int e = decide_fd(C_SYNC, func, fd);
  if (e) {
    if (have) {
      pthread_mutex_lock(&g_lock);
      if (g_failed_sync_n < 64) {
        g_failed_sync[g_failed_sync_n].dev = st.st_dev;
        g_failed_sync[g_failed_sync_n].ino = st.st_ino;
        ++g_failed_sync_n;
      }
      pthread_mutex_unlock(&g_lock);
    }
    errno = e;
    return -1;
  }
  return real(fd);
}

int fsync(int fd) {
  load_fsync();
  return sync_call(REAL(fsync), "fsync", fd);
}

int fdatasync(int fd) {
  load_fdatasync();
  return sync_call(REAL(fdatasync), "fdatasync", fd);
}

int rename(const char *from, const char *to) {
  load_rename();
  FAIL_IF(decide_two(C_RENAME, "rename", AT_FDCWD, from, AT_FDCWD, to));
  return REAL(rename)(from, to);
}

int renameat(int fd1, const char *from, int fd2, const char *to) {
  load_renameat();
  FAIL_IF(decide_two(C_RENAME, "renameat", fd1, from, fd2, to));
  return REAL(renameat)(fd1, from, fd2, to);
}

int renameat2(int fd1, const char *from, int fd2, const char *to, unsigned flags) {
  load_renameat2();
  FAIL_IF(decide_two(C_RENAME, "renameat2", fd1, from, fd2, to));
  return REAL(renameat2)(fd1, from, fd2, to, flags);
}

int link(const char *from, const char *to) {
  load_link();
  FAIL_IF(decide_two(C_RENAME, "link", AT_FDCWD, from, AT_FDCWD, to));
  return REAL(link)(from, to);
}

int linkat(int fd1, const char *from, int fd2, const char *to, int flags) {
  load_linkat();
  FAIL_IF(decide_two(C_RENAME, "linkat", fd1, from, fd2, to));
  return REAL(linkat)(fd1, from, fd2, to, flags);
}

static int creates(int flags) { return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE; }

#define OPEN_BODY(name, dirfd, path, flags)                                    \
  mode_t mode = 0;                                                             \
  if (creates(flags)) {                                                        \
    va_list ap;                                                                \
    va_start(ap, flags);                                                       \
    mode = va_arg(ap, mode_t);                                                 \
    va_end(ap);                                                                \
    FAIL_IF(decide_path(C_CREATE, #name, dirfd, path));                        \
  }

int open(const char *path, int flags, ...) {
  load_open();
  OPEN_BODY(open, AT_FDCWD, path, flags)
  return REAL(open)(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
  load_open64();
  OPEN_BODY(open64, AT_FDCWD, path, flags)
  return REAL(open64)(path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...) {
  load_openat();
  OPEN_BODY(openat, dirfd, path, flags)
  return REAL(openat)(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) {
  load_openat64();
  OPEN_BODY(openat64, dirfd, path, flags)
  return REAL(openat64)(dirfd, path, flags, mode);
}

int creat(const char *path, mode_t mode) {
  load_creat();
  FAIL_IF(decide_path(C_CREATE, "creat", AT_FDCWD, path));
  return REAL(creat)(path, mode);
}

int creat64(const char *path, mode_t mode) {
  load_creat64();
  FAIL_IF(decide_path(C_CREATE, "creat64", AT_FDCWD, path));
  return REAL(creat64)(path, mode);
}

int mkdir(const char *path, mode_t mode) {
  load_mkdir();
  FAIL_IF(decide_path(C_CREATE, "mkdir", AT_FDCWD, path));
  return REAL(mkdir)(path, mode);
}

int mkdirat(int dirfd, const char *path, mode_t mode) {
  load_mkdirat();
  FAIL_IF(decide_path(C_CREATE, "mkdirat", dirfd, path));
  return REAL(mkdirat)(dirfd, path, mode);
}

/* Only descriptors open for writing count: a failed close of a file that was
 * only read loses nothing. */
int close(int fd) {
  load_close();
  int e = 0;
  if (g_dir_len) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_ACCMODE) != O_RDONLY) e = decide_fd(C_CLOSE, "close", fd);
  }
  int rc = REAL(close)(fd);
  if (e) {
    errno = e;
    return -1;
  }
  return rc;
}

/* Reads: fail as configured, or (FASTENSORS_FAULT_SHORT) return fewer bytes. */
static int short_reads_for(int fd, int *fail, const char *func) {
  *fail = decide_fd(C_READ, func, fd);
  if (*fail || !g_short || !g_dir_len) return 0;
  char p[PATH_MAX];
  return fd_path(fd, p, sizeof p) == 0 && under_dir(p);
}

static size_t shortened(size_t n) { return n > 1 ? n / 2 : n; }

ssize_t pread(int fd, void *buf, size_t count, off_t off) {
  load_pread();
  int fail;
  int cut = short_reads_for(fd, &fail, "pread");
  FAIL_IF(fail);
  return REAL(pread)(fd, buf, cut ? shortened(count) : count, off);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t off) {
  load_pread64();
  int fail;
  int cut = short_reads_for(fd, &fail, "pread64");
  FAIL_IF(fail);
  return REAL(pread64)(fd, buf, cut ? shortened(count) : count, off);
}

/* A short vectored read: half of the first buffer only. */
#define PREADV_BODY(name, call_args)                                     \
  int fail;                                                              \
  int cut = short_reads_for(fd, &fail, #name);                           \
  FAIL_IF(fail);                                                         \
  if (cut && n > 0) {                                                    \
    load_pread();                                                        \
    return REAL(pread)(fd, iov[0].iov_base, shortened(iov[0].iov_len), off); \
  }                                                                      \
  return REAL(name) call_args;

ssize_t preadv(int fd, const struct iovec *iov, int n, off_t off) {
  load_preadv();
  PREADV_BODY(preadv, (fd, iov, n, off))
}

ssize_t preadv64(int fd, const struct iovec *iov, int n, off_t off) {
  load_preadv64();
  PREADV_BODY(preadv64, (fd, iov, n, off))
}

ssize_t preadv2(int fd, const struct iovec *iov, int n, off_t off, int flags) {
  load_preadv2();
  PREADV_BODY(preadv2, (fd, iov, n, off, flags))
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

int madvise(void *addr, size_t len, int advice) {
  load_madvise();
  if (advice == MADV_POPULATE_READ) FAIL_IF(decide(C_POPULATE, "madvise", "(mapping)"));
  return REAL(madvise)(addr, len, advice);
}
