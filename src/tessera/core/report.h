// JSON experiment reports: configuration, seed, git commit, machine and results in one file.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace tessera {

/// Report report("train", config_json, seed); report.results()["accuracy"] = 0.93;
/// report.write("out.json");  // atomic; the wall time since construction is recorded.
class Report {
 public:
  Report(std::string command, nlohmann::json config, uint64_t seed);
  nlohmann::json& results() { return results_; }
  const nlohmann::json& results() const { return results_; }
  nlohmann::json to_json() const;
  /// Atomic write (core/fs). An empty path writes nothing.
  void write(const std::string& path) const;

 private:
  std::string command_;
  nlohmann::json config_;
  uint64_t seed_;
  std::string started_at_;
  int64_t t_start_us_;
  nlohmann::json results_ = nlohmann::json::object();
};

}  // namespace tessera
