// Seeding: one call makes a run reproducible (LibTorch's generator and our own std RNGs).
#pragma once

#include <cstdint>
#include <random>

namespace tessera {

/// Seeds LibTorch's default CPU generator. Every experiment command calls this with --seed.
void seed_everything(uint64_t seed);

/// A std engine derived from a seed and a stream id, so independent components
/// (data shuffling, client sampling, attacks) get independent, reproducible streams.
std::mt19937_64 make_rng(uint64_t seed, uint64_t stream = 0);

}  // namespace tessera
