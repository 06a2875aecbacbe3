// File helpers: whole-file reads with clear errors, and atomic writes (temp file, fsync, rename)
// so that a failed command never leaves a half-written file or clobbers an existing one.
#pragma once

#include <string>
#include <string_view>

namespace tessera {

/// Reads a whole file. Throws tessera::Error naming the path if it cannot be opened or read.
std::string read_file(const std::string& path);

/// Writes bytes to `path` atomically: writes `path.tmp.<pid>`, fsyncs it, renames it over
/// `path`, and fsyncs the directory. On any failure the temporary is removed, the old file
/// (if any) is untouched, and tessera::Error is thrown.
void write_file_atomic(const std::string& path, std::string_view bytes);

/// True if `path` names an existing regular file.
bool file_exists(const std::string& path);

}  // namespace tessera
