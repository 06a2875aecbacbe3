// Seeding implementation.
#include "tessera/core/seed.h"

#include <torch/torch.h>

namespace tessera {

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

std::mt19937_64 make_rng(uint64_t seed, uint64_t stream) {
  // SplitMix64 step to decorrelate (seed, stream) pairs.
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (stream + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return std::mt19937_64(z ^ (z >> 31));
}

}  // namespace tessera
