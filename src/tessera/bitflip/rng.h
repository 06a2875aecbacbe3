// Portable random draws for the bit-flip code: std::mt19937_64 is fully specified by the C++
// standard, but the std distributions are not, so secret layouts and seeded attacks use these.
#pragma once

#include <cstdint>
#include <random>

namespace tessera::bitflip {

/// Uniform integer in [0, n) by rejection (no modulo bias). n must be > 0.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  // Accept r only below the largest multiple of n that fits in 2^64.
  const uint64_t threshold = (0 - n) % n;
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % n;
  }
}

}  // namespace tessera::bitflip
