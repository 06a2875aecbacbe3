// Shared test helpers: a seeded fixture and a scratch directory removed after each test.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "tessera/core/error.h"

namespace tessera::testing {

/// Seeds LibTorch (and anything using tessera::seed_everything) before every test.
class SeededTest : public ::testing::Test {
 protected:
  void SetUp() override;
};

/// A fresh directory under the system temp dir; removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  /// path() + "/" + name
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

/// Writes raw bytes to a file (non-atomically; for crafting bad inputs in tests).
void write_bytes(const std::string& path, const std::string& bytes);

/// What a shell command printed and how it exited.
struct CommandResult {
  int exit_code = -1;  ///< -1 when it did not exit normally
  std::string out;     ///< standard output
  std::string err;     ///< standard error (through a file in `dir`)
};

/// Runs `command` with /bin/sh, standard error captured in dir/stderr.txt.
CommandResult run_command(const std::string& command, const TempDir& dir);

/// The message of the tessera::Error that f() throws, or "" when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace tessera::testing
