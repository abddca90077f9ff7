// The read engine: plans of reads and prefetches, joined and split requests,
// residency, the read-ahead window, cancellation, and plans that are wrong
// or whose file shrinks underneath.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "fastensors/error.hpp"
#include "fastensors/file.hpp"
#include "fastensors/read_plan.hpp"
#include "test_util.h"

namespace fastensors {
namespace {

using test::TempDir;

// A file of one U8 tensor "t" of `n` bytes: byte i is (i * 7 + i / 4096) % 251.
std::string make_file(const TempDir& dir, std::uint64_t n, const std::string& name = "f.safetensors") {
  std::string data(n, '\0');
  for (std::uint64_t i = 0; i < n; ++i) data[i] = static_cast<char>((i * 7 + i / 4096) % 251);
  const std::string header = "{\"t\":{\"dtype\":\"U8\",\"shape\":[" + std::to_string(n) + "],\"data_offsets\":[0," +
                             std::to_string(n) + "]}}";
  const std::string path = dir.file(name);
  test::write_bytes(path, test::raw_file(header, data));
  return path;
}

std::uint8_t expected(std::uint64_t i) { return static_cast<std::uint8_t>((i * 7 + i / 4096) % 251); }

void evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

std::uint64_t resident_bytes(const File& f, std::uint64_t begin, std::uint64_t end) {
  const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  begin -= begin % page;
  std::vector<unsigned char> vec((end - begin + page - 1) / page);
  EXPECT_EQ(::mincore(const_cast<std::uint8_t*>(f.mapping()) + begin, end - begin, vec.data()), 0);
  std::uint64_t n = 0;
  for (unsigned char v : vec) n += (v & 1) ? page : 0;
  return n;
}

TEST(ReadPlan, ReadsLandWhereAsked) {
  TempDir dir;
  const std::uint64_t n = 3 * 1024 * 1024 + 123;
  auto f = File::open(make_file(dir, n), Backend::Pread);
  const std::uint64_t base = f->header().data_start;
  // Uneven pieces in file order, a gap, and one piece out of order.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> pieces = {
      {0, 1}, {1, 4095}, {4096, 1000000}, {1004096, 7}, {2000000, 500000}, {1500000, 3}};
  std::vector<std::vector<std::uint8_t>> out;
  ReadPlan plan;
  for (auto [off, size] : pieces) {
    out.emplace_back(size, 0xEE);
    plan.read(f, base + off, size, out.back().data());
  }
  ReadOptions opts;
  opts.request_bytes = 256 * 1024;  // splits the large pieces across workers
  opts.threads = 4;
  const ReadStats stats = execute(std::move(plan), opts);
  for (std::size_t k = 0; k < pieces.size(); ++k) {
    for (std::uint64_t i = 0; i < pieces[k].second; ++i) {
      ASSERT_EQ(out[k][i], expected(pieces[k].first + i)) << "piece " << k << " byte " << i;
    }
  }
  std::uint64_t total = 0;
  for (auto& p : pieces) total += p.second;
  EXPECT_EQ(stats.bytes_read, total);
  // The first four pieces are adjacent: joined, then split at 256 KiB.
  EXPECT_LE(stats.requests, 4u + 1u + 2u + 1u);
  EXPECT_GE(stats.requests, 6u);
}

TEST(ReadPlan, AdjacentReadsAreOneRequest) {
  TempDir dir;
  auto f = File::open(make_file(dir, 64 * 1024), Backend::Mmap);
  const std::uint64_t base = f->header().data_start;
  std::vector<std::uint8_t> out(64 * 1024);
  ReadPlan plan;
  for (std::uint64_t off = 0; off < out.size(); off += 1024) plan.read(f, base + off, 1024, out.data() + off);
  const ReadStats stats = execute(std::move(plan));
  EXPECT_EQ(stats.requests, 1u);
  for (std::uint64_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], expected(i));
}

TEST(ReadPlan, PrefetchMakesTheMappingResident) {
  TempDir dir;
  const std::uint64_t n = 8 * 1024 * 1024;
  const std::string path = make_file(dir, n);
  auto f = File::open(path, Backend::Mmap);
  const std::uint64_t base = f->header().data_start;
  evict(path);
  const std::uint64_t before = resident_bytes(*f, base, base + n);
  ReadPlan plan;
  plan.prefetch(f, base, n);
  ReadOptions opts;
  opts.request_bytes = 1024 * 1024;
  const ReadStats cold = execute(std::move(plan), opts);
  EXPECT_GE(resident_bytes(*f, base, base + n), n - 4096);
  if (before < n / 2) EXPECT_GT(cold.bytes_populated, 0u);  // the eviction worked, so there was I/O
  // Warm: a residency check per request and nothing else.
  ReadPlan again;
  again.prefetch(f, base, n);
  const ReadStats warm = execute(std::move(again), opts);
  EXPECT_EQ(warm.requests, 0u);
  EXPECT_GE(warm.bytes_cached, n);
  EXPECT_EQ(f->data(f->info("t"))[12345], expected(12345));
}

TEST(ReadPlan, WaitEntryAndWindowDeliverInOrder) {
  TempDir dir;
  const std::uint64_t n = 4 * 1024 * 1024;
  auto f = File::open(make_file(dir, n), Backend::Pread);
  const std::uint64_t base = f->header().data_start;
  const std::uint64_t piece = 64 * 1024;
  std::vector<std::uint8_t> out(n, 0);
  ReadPlan plan;
  for (std::uint64_t off = 0; off < n; off += piece) plan.read(f, base + off, piece, out.data() + off);
  ReadOptions opts;
  opts.window_bytes = 3 * piece;  // at most a few requests ahead of the consumer
  opts.request_bytes = piece;
  opts.threads = 3;
  ReadJob job(std::move(plan), opts);
  for (std::size_t k = 0; k < n / piece; ++k) {
    job.wait_entry(k);
    for (std::uint64_t i = k * piece; i < (k + 1) * piece; i += 97) ASSERT_EQ(out[i], expected(i));
  }
  job.wait();
  EXPECT_EQ(job.stats().bytes_read, n);
  EXPECT_THROW(job.wait_entry(n / piece), Error);
}

TEST(ReadPlan, CancelStopsAJobAheadOfItsConsumer) {
  TempDir dir;
  const std::uint64_t n = 4 * 1024 * 1024;
  auto f = File::open(make_file(dir, n), Backend::Pread);
  const std::uint64_t base = f->header().data_start;
  std::vector<std::uint8_t> out(n);
  ReadPlan plan;
  for (std::uint64_t off = 0; off < n; off += 4096) plan.read(f, base + off, 4096, out.data() + off);
  ReadOptions opts;
  opts.window_bytes = 4096;  // waits for a consumer that never comes
  opts.request_bytes = 4096;
  ReadJob job(std::move(plan), opts);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  job.cancel();
  try {
    job.wait_entry(n / 4096 - 1);
    FAIL() << "a cancelled entry was reported read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cancelled"), std::string::npos) << e.what();
  }
  EXPECT_LT(job.stats().bytes_read, n);
}

TEST(ReadPlan, BadPlansAreRejectedBeforeAnyRead) {
  TempDir dir;
  auto f = File::open(make_file(dir, 4096), Backend::Mmap);
  auto p = File::open(make_file(dir, 4096, "p.safetensors"), Backend::Pread);
  std::vector<std::uint8_t> buf(8192);
  auto expect_invalid = [](ReadPlan plan, const char* needle) {
    try {
      ReadJob job(std::move(plan));
      FAIL() << "accepted a plan that should fail with: " << needle;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidArgument);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  {
    ReadPlan plan;
    plan.read(f, f->file_size() - 10, 11, buf.data());
    expect_invalid(std::move(plan), "past the end");
  }
  {
    ReadPlan plan;
    plan.read(f, ~0ull - 5, 10, buf.data());  // offset + size overflows
    expect_invalid(std::move(plan), "past the end");
  }
  {
    ReadPlan plan;
    plan.read(f, 0, 100, buf.data());
    plan.read(f, 200, 100, buf.data() + 50);
    expect_invalid(std::move(plan), "overlapping destinations");
  }
  {
    ReadPlan plan;
    plan.prefetch(f, 0, 100);
    plan.prefetch(f, 50, 100);
    expect_invalid(std::move(plan), "overlapping destinations");
  }
  {
    ReadPlan plan;
    plan.prefetch(p, 0, 10);
    expect_invalid(std::move(plan), "mapped file");
  }
  {
    ReadPlan plan;
    plan.read(nullptr, 0, 10, buf.data());
    expect_invalid(std::move(plan), "no file");
  }
  {
    auto c = File::open(make_file(dir, 16, "c.safetensors"), Backend::Pread);
    c->close();
    ReadPlan plan;
    plan.read(c, 0, 1, buf.data());
    expect_invalid(std::move(plan), "closed");
  }
}

TEST(ReadPlan, NullDestinationOnAMappedFileIsAPrefetch) {
  // A read with no destination is how a prefetch is stored: on a mapped file
  // it is accepted as one (the rejection above is the pread case).
  TempDir dir;
  auto f = File::open(make_file(dir, 4096), Backend::Mmap);
  ReadPlan plan;
  plan.read(f, 0, 10, nullptr);
  EXPECT_NO_THROW(execute(std::move(plan)));
}

TEST(ReadPlan, AShrunkenFileIsFileChangedNotSigbus) {
  TempDir dir;
  const std::uint64_t n = 2 * 1024 * 1024;
  for (Backend b : {Backend::Pread, Backend::Mmap}) {
    const std::string path = make_file(dir, n, b == Backend::Mmap ? "m.safetensors" : "r.safetensors");
    auto f = File::open(path, b);
    const std::uint64_t base = f->header().data_start;
    evict(path);
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(base + 4096)), 0);
    std::vector<std::uint8_t> out(n);
    ReadPlan plan;
    if (b == Backend::Mmap) {
      plan.prefetch(f, base, n);
    } else {
      plan.read(f, base, n, out.data());
    }
    try {
      execute(std::move(plan));
      FAIL() << "a read past the new end succeeded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::FileChanged) << e.what();
      EXPECT_EQ(e.path(), path);
      EXPECT_NE(std::string(e.what()).find("offset"), std::string::npos) << e.what();
    }
  }
}

TEST(ReadPlan, AFileWrittenInPlaceIsFileChanged) {
  // Same size, new bytes (an in-place edit, or another writer): what was
  // read may mix old and new bytes, so the wait reports it.
  TempDir dir;
  const std::string path = make_file(dir, 64 * 1024);
  auto f = File::open(path, Backend::Pread);
  std::vector<std::uint8_t> out(1024);
  {
    const int fd = ::open(path.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    struct timespec later[2] = {{0, UTIME_OMIT}, {0, 0}};
    ASSERT_EQ(::pwrite(fd, "xyz", 3, static_cast<off_t>(f->header().data_start)), 3);
    clock_gettime(CLOCK_REALTIME, &later[1]);
    later[1].tv_sec += 2;  // a modification time that surely differs, whatever the clock's grain
    ASSERT_EQ(::futimens(fd, later), 0);
    ::close(fd);
  }
  ReadPlan plan;
  plan.read(f, f->header().data_start, out.size(), out.data());
  try {
    execute(std::move(plan));
    FAIL() << "a read of a file written to since it was opened succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::FileChanged) << e.what();
    EXPECT_NE(std::string(e.what()).find("written to while open"), std::string::npos) << e.what();
  }
  // Renamed over: the open file is still the old one, and reads stay valid.
  auto g = File::open(path, Backend::Mmap);
  test::write_bytes(dir.file("new"), test::read_bytes(path));
  ASSERT_EQ(::rename(dir.file("new").c_str(), path.c_str()), 0);
  ReadPlan again;
  again.read(g, g->header().data_start, out.size(), out.data());
  EXPECT_NO_THROW(execute(std::move(again)));
}

TEST(ReadPlan, ManyThreadsManyFiles) {
  TempDir dir;
  std::vector<std::shared_ptr<File>> files;
  for (int i = 0; i < 6; ++i) files.push_back(File::open(make_file(dir, 300000 + i * 4099, "s" + std::to_string(i)),
                                                         i % 2 ? Backend::Mmap : Backend::Pread));
  std::vector<std::vector<std::uint8_t>> out;
  ReadPlan plan;
  for (auto& f : files) {
    const auto& t = f->info("t");
    out.emplace_back(t.nbytes());
    plan.read(f, f->header().data_start, t.nbytes(), out.back().data());
    if (f->mapping() != nullptr) plan.prefetch(f, f->header().data_start, t.nbytes());
  }
  ReadOptions opts;
  opts.threads = 16;
  opts.request_bytes = 8192;
  execute(std::move(plan), opts);
  for (std::size_t k = 0; k < files.size(); ++k) {
    for (std::uint64_t i = 0; i < out[k].size(); i += 13) ASSERT_EQ(out[k][i], expected(i));
  }
}

}  // namespace
}  // namespace fastensors
