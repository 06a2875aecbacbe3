// What every fuzz target shares: the input as a file for loaders that take a path, and the one
// rule: a tessera::Error is a clean refusal, anything else (a crash, a sanitizer report, another
// exception, which ends in std::terminate) is a finding.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"

namespace tessera::fuzz {

inline std::string_view as_bytes(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// A directory of this process under $TMPDIR (default /tmp), removed when the process ends
/// normally. scripts/fuzz.sh points TMPDIR into the build tree, so crashed runs leave nothing
/// elsewhere.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    path_ = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/tessera-fuzz-" +
            std::to_string(::getpid());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }

  /// Replaces `name` in the directory with `bytes` (plain write: an fsync per input would
  /// dominate the run) and returns its path.
  std::string write(const std::string& name, std::string_view bytes) const {
    const std::string file = path_ + "/" + name;
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) std::abort();
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n <= 0) std::abort();
      done += static_cast<size_t>(n);
    }
    ::close(fd);
    return file;
  }

 private:
  std::string path_;
};

/// The process's temporary directory (one per target process).
inline const TempDir& temp_dir() {
  static const TempDir dir;
  return dir;
}

/// The bytes of `file`, or nothing when its metadata is not UTF-8: JSON strings are UTF-8, so
/// no safetensors header can carry such text and there is no file to fuzz.
inline std::optional<std::string> serialize_if_utf8(const safetensors::File& file) {
  try {
    return safetensors::serialize(file);
  } catch (const nlohmann::json::exception&) {
  } catch (const tessera::Error&) {
  }
  return std::nullopt;
}

/// Runs `parse`; a tessera::Error is the refusal every parser owes hostile input. With
/// TESSERA_FUZZ_PRINT_ERRORS set (when replaying a file) the refusal's message is printed.
template <class F>
void refuse_cleanly(F&& parse) {
  try {
    parse();
  } catch (const tessera::Error& e) {
    static const bool print = std::getenv("TESSERA_FUZZ_PRINT_ERRORS") != nullptr;
    if (print) std::fprintf(stderr, "refused: %.300s\n", e.what());
  }
}

}  // namespace tessera::fuzz
