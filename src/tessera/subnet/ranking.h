// Trainable noise ranking: per-channel parametric noise scales (init 0.25) trained with the task
// loss through train::fit's hooks; a channel that tolerates large noise is unimportant. Channels
// are then reordered so that storage order is rank order (research/efficient.md 2.2 step 1).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/subnet/slim_net.h"
#include "tessera/train/train.h"

namespace tessera::subnet {

struct NoiseRankOptions {
  double alpha_init = 0.25;  ///< PNI's initial noise scale
  /// RECONSTRUCTED: loss -= reward x mean(alpha), a push towards large noise that lets the
  /// unimportant channels' scales grow while the task loss shrinks the important ones (0: the
  /// task loss alone, as PNI).
  double reward = 0.05;
  double alpha_max = 4.0;  ///< scales are clamped to [0, alpha_max] after every step
  void validate() const;
  nlohmann::json to_json() const;
};

/// Trains the full net with noise on (weights and scales together) through train::fit; noise is
/// off again afterwards. Returns the loop's statistics.
std::vector<train::EpochStats> train_with_noise(SlimNet& net, const data::Dataset& train_set,
                                                const train::TrainOptions& options,
                                                const NoiseRankOptions& noise);

/// The learnt tolerance normalised per layer: alpha / mean(alpha) of every slot, in storage order.
std::vector<std::vector<double>> normalized_tolerance(SlimNet& net);

/// Sorts every slot's channels by alpha ascending (least tolerant = most important first, ties by
/// index) and permutes the net so that storage order is rank order: a sub-net is then a prefix.
/// Returns the order applied to each slot (new channel i = old channel order[i]).
std::vector<std::vector<int64_t>> rank_channels(SlimNet& net);

}  // namespace tessera::subnet
