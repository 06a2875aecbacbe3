// Seeded random primitives that give the same draws on every standard library. std::mt19937_64 is
// fully specified by the C++ standard, but std::uniform_int_distribution, std::shuffle and the
// real distributions are not, so a seed would give other corpora, partitions and attacks with
// libc++ than with libstdc++. Every Tessera component draws through these.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace tessera::random {

/// A uniform integer in [0, n) by rejection sampling (no modulo bias). n must be > 0.
inline uint64_t uniform_below(std::mt19937_64& rng, uint64_t n) {
  // Reject the top partial block of 2^64 so that every residue is equally likely.
  const uint64_t limit = UINT64_MAX - UINT64_MAX % n;
  uint64_t draw = rng();
  while (draw >= limit) draw = rng();
  return draw % n;
}

/// A uniform integer in [lo, hi] (both inclusive). lo must be <= hi.
inline int64_t uniform_int(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  const uint64_t span = static_cast<uint64_t>(hi) - static_cast<uint64_t>(lo);
  if (span == UINT64_MAX) return static_cast<int64_t>(rng());
  return lo + static_cast<int64_t>(uniform_below(rng, span + 1));
}

/// A double in [0, 1) from the top 53 bits of one draw.
inline double uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

/// Fisher-Yates shuffle driven by uniform_below (the same permutation everywhere).
template <typename T>
void shuffle(std::vector<T>& values, std::mt19937_64& rng) {
  for (size_t i = values.size(); i > 1; --i) {
    const size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(values[i - 1], values[j]);
  }
}

/// A random permutation of 0..n-1.
inline std::vector<int64_t> permutation(int64_t n, std::mt19937_64& rng) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  shuffle(order, rng);
  return order;
}

/// k distinct indices of 0..n-1 in random order (the first k of a partial Fisher-Yates).
/// k is clamped to n.
inline std::vector<int64_t> subset(int64_t n, int64_t k, std::mt19937_64& rng) {
  if (k > n) k = n;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  for (int64_t i = 0; i < k; ++i) {
    const auto j = i + static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(n - i)));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  order.resize(static_cast<size_t>(k < 0 ? 0 : k));
  return order;
}

/// One element of a non-empty vector, uniformly.
template <typename T>
const T& pick(const std::vector<T>& values, std::mt19937_64& rng) {
  return values[static_cast<size_t>(uniform_below(rng, values.size()))];
}

}  // namespace tessera::random
