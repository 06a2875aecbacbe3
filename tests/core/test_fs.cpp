// core/fs: whole-file reads and atomic writes that never leave a half-written or clobbered file.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::tessera::testing::TempDir;
using ::tessera::testing::write_bytes;

/// Files in `dir` whose name contains ".tmp." (left-over temporaries).
int count_temporaries(const std::string& dir) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().filename().string().find(".tmp.") != std::string::npos) ++n;
  }
  return n;
}

TEST(FsAtomicWrite, WritesAndReplacesBinaryContent) {
  TempDir dir;
  const std::string path = dir.file("out.bin");
  const std::string first("a\0b\xff\n", 5);
  write_file_atomic(path, first);
  EXPECT_EQ(read_file(path), first);
  write_file_atomic(path, "second");
  EXPECT_EQ(read_file(path), "second");
  write_file_atomic(path, "");
  EXPECT_EQ(read_file(path), "");
  EXPECT_EQ(count_temporaries(dir.path()), 0);
}

TEST(FsAtomicWrite, MissingDirectoryThrowsAndCreatesNothing) {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/out.json");
  try {
    write_file_atomic(path, "data");
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("no")));
  EXPECT_EQ(count_temporaries(dir.path()), 0);
}

TEST(FsAtomicWrite, FailedRenameLeavesTheOldContentIntact) {
  // The target is a non-empty directory, so the final rename fails after the temporary file
  // was written: the old content must survive and the temporary must be gone.
  TempDir dir;
  const std::string target = dir.file("report.json");
  std::filesystem::create_directory(target);
  write_bytes(target + "/old.txt", "old content");
  EXPECT_THROW(write_file_atomic(target, "new content"), Error);
  EXPECT_TRUE(std::filesystem::is_directory(target));
  EXPECT_EQ(read_file(target + "/old.txt"), "old content");
  EXPECT_EQ(count_temporaries(dir.path()), 0);
}

TEST(FsAtomicWrite, FailureThroughAFileAsDirectoryKeepsTheOldFile) {
  TempDir dir;
  const std::string old_file = dir.file("model.safetensors");
  write_file_atomic(old_file, "old");
  EXPECT_THROW(write_file_atomic(old_file + "/child", "new"), Error);
  EXPECT_EQ(read_file(old_file), "old");
}

TEST(FsRead, MissingFileThrowsNamingThePath) {
  TempDir dir;
  const std::string path = dir.file("absent.txt");
  try {
    read_file(path);
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(FsRead, FileExistsOnlyForRegularFiles) {
  TempDir dir;
  EXPECT_FALSE(file_exists(dir.file("x")));
  EXPECT_FALSE(file_exists(dir.path()));
  write_bytes(dir.file("x"), "1");
  EXPECT_TRUE(file_exists(dir.file("x")));
}

}  // namespace
}  // namespace tessera
