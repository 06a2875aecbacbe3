// Progress on stderr: a bar redrawn in place on a terminal, a log line every 30 s otherwise (so
// that long runs under nohup or CI show progress); nothing in quiet mode.
#pragma once

#include <cstdint>
#include <string>

namespace tessera {

/// ProgressBar bar("train", n_steps); bar.update(); ... bar.finish();
/// Redraws at most ten times a second on a terminal; elsewhere logs a line every 30 seconds.
class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void update(int64_t n = 1);
  /// Short text shown after the counter, e.g. "loss 0.412".
  void set_postfix(std::string postfix);
  void finish();

  /// Whether bars are drawn at all (stderr is a TTY and not --quiet).
  static bool enabled();

 private:
  void draw(bool force);
  std::string label_;
  std::string postfix_;
  int64_t total_;
  int64_t done_ = 0;
  int64_t t_start_us_;
  int64_t t_last_draw_us_ = 0;
  bool finished_ = false;
  bool enabled_;    ///< bar on a terminal
  bool log_lines_;  ///< periodic log lines (not a terminal, not quiet)
};

}  // namespace tessera
