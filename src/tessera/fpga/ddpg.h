// The DDPG agent of HAQ (Wang et al., CVPR'19) as N3H-Core uses it (research/hw_security.md 1.4):
// actor and critic MLPs (300-300), Adam at 1e-4 / 1e-3, warm-up episodes of random actions,
// truncated-normal exploration noise decayed per episode, a replay buffer, soft target updates,
// rewards centred by a moving average. In LibTorch.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>

#include "tessera/fpga/search.h"

namespace tessera::fpga {

struct DdpgOptions {
  int64_t hidden = 300;
  double lr_actor = 1e-4;
  double lr_critic = 1e-3;
  int64_t warmup_episodes = 20;
  double discount = 1.0;
  int64_t batch_size = 64;
  int64_t replay_episodes = 128;  ///< buffer = replay_episodes x steps per episode
  double tau = 0.01;
  double initial_noise = 0.5;  ///< truncated-normal sigma delta_0
  double noise_decay = 0.99;   ///< per episode
  double moving_alpha = 0.5;   ///< reward baseline update
  int64_t updates_per_transition = 1;

  void validate() const;
  nlohmann::json to_json() const;
};

/// DDPG over `options.evaluations` episodes of the problem (the same budget as random_search).
SearchResult ddpg_search(const SearchProblem& problem, const SearchOptions& options,
                         const DdpgOptions& ddpg);

}  // namespace tessera::fpga
