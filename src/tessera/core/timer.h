// Wall-clock timing helpers. Times are microseconds (t_..._us, as in llama.cpp).
#pragma once

#include <chrono>
#include <cstdint>

namespace tessera {

inline int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Starts on construction; elapsed_us()/elapsed_s() read without stopping.
class Timer {
 public:
  Timer() : t_start_us_(now_us()) {}
  void reset() { t_start_us_ = now_us(); }
  int64_t elapsed_us() const { return now_us() - t_start_us_; }
  double elapsed_s() const { return static_cast<double>(elapsed_us()) * 1e-6; }

 private:
  int64_t t_start_us_;
};

}  // namespace tessera
