// Report implementation.
#include "tessera/core/report.h"

#include <ctime>

#include "tessera/core/fs.h"
#include "tessera/core/runtime.h"
#include "tessera/core/timer.h"

namespace tessera {

namespace {
std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}
}  // namespace

Report::Report(std::string command, nlohmann::json config, uint64_t seed)
    : command_(std::move(command)),
      config_(std::move(config)),
      seed_(seed),
      started_at_(utc_now()),
      t_start_us_(now_us()) {}

nlohmann::json Report::to_json() const {
  return {{"command", command_},
          {"config", config_},
          {"seed", seed_},
          {"git_commit", git_commit()},
          {"machine", machine_info()},
          {"started_at", started_at_},
          {"wall_s", static_cast<double>(now_us() - t_start_us_) * 1e-6},
          {"results", results_}};
}

void Report::write(const std::string& path) const {
  if (path.empty()) return;
  // A prompt or generated text need not be valid UTF-8: invalid bytes become U+FFFD instead of
  // making dump() throw after the command's output was printed.
  write_file_atomic(path,
                    to_json().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

}  // namespace tessera
