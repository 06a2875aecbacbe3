// Portable random index helpers. std::shuffle and std::uniform_int_distribution are
// implementation-defined, so a seed would give different partitions with libstdc++ and libc++;
// these give the same sequence everywhere for the same engine state.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace tessera::data {

/// A uniform integer in [0, bound) by rejection sampling (no modulo bias). bound must be > 0.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  // Reject the top partial block of 2^64 so that every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t draw = rng();
  while (draw >= limit) draw = rng();
  return draw % bound;
}

/// Fisher-Yates shuffle driven by uniform_below.
inline void shuffle_indices(std::vector<int64_t>& values, std::mt19937_64& rng) {
  for (size_t i = values.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(values[i - 1], values[j]);
  }
}

}  // namespace tessera::data
