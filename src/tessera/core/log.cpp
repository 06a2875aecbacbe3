// Logging set-up: one stderr logger with a short pattern, so stdout stays for tables and results.
#include "tessera/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <atomic>

#include "tessera/core/error.h"

namespace tessera::log {
namespace {
std::atomic<bool> g_quiet{false};

std::shared_ptr<spdlog::logger> make_logger() {
  auto logger = spdlog::stderr_color_mt("tessera");
  logger->set_pattern("[%H:%M:%S] %^%l%$ %v");
  spdlog::set_default_logger(logger);
  return logger;
}
const std::shared_ptr<spdlog::logger>& logger() {
  static auto instance = make_logger();
  return instance;
}
}  // namespace

void set_level(const std::string& level) {
  logger();
  auto parsed = spdlog::level::from_str(level);
  TESSERA_CHECK(parsed != spdlog::level::off || level == "off",
                "unknown log level '{}' (expected debug, info, warn, error)", level);
  spdlog::set_level(parsed);
}

void set_quiet(bool quiet) {
  logger();
  g_quiet = quiet;
  spdlog::set_level(quiet ? spdlog::level::warn : spdlog::level::info);
}

bool quiet() { return g_quiet; }

}  // namespace tessera::log
