// Logging (spdlog to stderr) and the global quiet switch shared with the progress bar.
#pragma once

#include <spdlog/spdlog.h>

namespace tessera::log {

/// Sets the level by name: "debug", "info", "warn", "error". Throws on an unknown name.
void set_level(const std::string& level);
/// Quiet mode: only warnings and errors are logged, and progress bars are hidden.
void set_quiet(bool quiet);
bool quiet();

template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::info(f, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::warn(f, std::forward<Args>(args)...);
}
template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  spdlog::debug(f, std::forward<Args>(args)...);
}

}  // namespace tessera::log
