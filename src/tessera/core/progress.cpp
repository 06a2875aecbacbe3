// Progress bar implementation (plain ANSI carriage-return redraws).
#include "tessera/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "tessera/core/log.h"
#include "tessera/core/timer.h"

namespace tessera {

bool ProgressBar::enabled() { return !log::quiet() && isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(std::string label, int64_t total)
    : label_(std::move(label)),
      total_(std::max<int64_t>(total, 1)),
      t_start_us_(now_us()),
      enabled_(enabled()),
      log_lines_(!enabled_ && !log::quiet()) {
  t_last_draw_us_ = t_start_us_;
}

ProgressBar::~ProgressBar() { finish(); }

void ProgressBar::update(int64_t n) {
  done_ = std::min(done_ + n, total_);
  draw(done_ == total_);
}

void ProgressBar::set_postfix(std::string postfix) { postfix_ = std::move(postfix); }

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  draw(true);
  std::fputc('\n', stderr);
}

void ProgressBar::draw(bool force) {
  const int64_t t = now_us();
  if (log_lines_) {
    if (t - t_last_draw_us_ < 30000000) return;
    t_last_draw_us_ = t;
    const double elapsed = static_cast<double>(t - t_start_us_) * 1e-6;
    const double eta = elapsed * static_cast<double>(total_ - done_) / std::max<int64_t>(done_, 1);
    log::info("{} {}/{} {:.0f}s<{:.0f}s {}", label_, done_, total_, elapsed, eta, postfix_);
    return;
  }
  if (!enabled_) return;
  if (!force && t - t_last_draw_us_ < 100000) return;
  t_last_draw_us_ = t;
  constexpr int kWidth = 30;
  const double frac = static_cast<double>(done_) / static_cast<double>(total_);
  const int filled = static_cast<int>(frac * kWidth);
  const double elapsed = static_cast<double>(t - t_start_us_) * 1e-6;
  const double eta = done_ > 0 ? elapsed * static_cast<double>(total_ - done_) / done_ : 0.0;
  std::string bar(filled, '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %lld/%lld %.0fs<%.0fs %s\033[K", label_.c_str(), bar.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_), elapsed, eta,
               postfix_.c_str());
  std::fflush(stderr);
}

}  // namespace tessera
