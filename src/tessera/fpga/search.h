// The joint search of research/hw_security.md 1.4: an episode of actions in [0, 1] chooses the
// LUT core (Dk, Dm, Dn, Bm), the DSP-core buffers (Lmem, Rmem) and DSP columns, then each layer's
// weight and activation bits; every layer runs at its balanced split. The terminal reward is
// -latency/T over the latency target, else 0.01 * (accuracy - float accuracy); designs over the
// device's budget are rejected. Two searchers share one evaluation budget: random search and a
// DDPG agent (ddpg.h); both return the best-reward-so-far curve.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tessera/fpga/design.h"

namespace tessera::fpga {

/// Accuracy (percent) of a design's precisions, for the reward. The default is the quantization-
/// noise proxy below; a caller may measure a real model instead.
using AccuracyEstimate =
    std::function<double(const std::vector<GemmShape>&, const Design&, const DesignEvaluation&)>;

struct SearchOptions {
  double target_ms = 0.0;  ///< latency target T (ms); 0: the all-DSP latency / target_speedup
  double target_speedup = 1.25;
  int min_weight_bits = 2, max_weight_bits = 8;          ///< the repository: 2..8
  int min_activation_bits = 2, max_activation_bits = 8;  ///< the repository: 2..4 (see docs)
  bool search_dsp_cols = true;  ///< add a step choosing the DSP array's columns (not in the repo)
  /// RECONSTRUCTED accuracy proxy: accuracy drop (points) = proxy_scale * mean over layers of
  /// the relative quantization-noise power, r (4^-(w-1) + 4^-(a-1)) + (1 - r) 2 4^-(b_dsp-1).
  double proxy_scale = 20.0;
  double float_accuracy = 0.0;  ///< acc_fp of the reward (the proxy is relative to it)
  int64_t evaluations = 300;    ///< designs (episodes) per searcher
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

/// One evaluated episode.
struct SearchOutcome {
  Design design;
  DesignEvaluation evaluation;
  double accuracy = 0.0;  ///< estimate (percent)
  double reward = 0.0;
  bool rejected = false;  ///< over the device's budget, or a buffer too small
};

/// The environment: decodes actions into designs and scores them.
class SearchProblem {
 public:
  /// `base` gives the device, the DSP rows, pack and bits, and the resource model.
  SearchProblem(std::vector<GemmShape> gemms, AcceleratorSpec base, SearchOptions options,
                AccuracyEstimate accuracy = {});

  /// Actions per episode: 6 resource steps (+1 with search_dsp_cols) + 2 per layer.
  int64_t n_steps() const;
  int64_t n_resource_steps() const { return options_.search_dsp_cols ? 7 : 6; }
  /// The design of a full action vector (first and last layer forced to 8/8 bits).
  Design decode(const std::vector<double>& actions) const;
  SearchOutcome evaluate(const std::vector<double>& actions) const;
  /// The reward of section 1.4 for an evaluated design.
  double reward(const DesignEvaluation& evaluation, double accuracy) const;
  /// The proxy accuracy of a design (float_accuracy - the noise drop).
  double proxy_accuracy(const Design& design, const DesignEvaluation& evaluation) const;

  /// State before step `step` given the actions so far (features min-max normalised over the
  /// episode, as HAQ does; resource values normalised to their ranges).
  std::vector<float> state(int64_t step, const std::vector<double>& actions) const;
  int64_t state_size() const { return 19; }

  double target_ms() const { return target_ms_; }
  const std::vector<GemmShape>& gemms() const { return gemms_; }
  const AcceleratorSpec& base() const { return base_; }

 private:
  std::vector<GemmShape> gemms_;
  AcceleratorSpec base_;
  SearchOptions options_;
  AccuracyEstimate accuracy_;
  double target_ms_ = 0.0;
  int64_t max_dsp_cols_ = 1;
  std::vector<std::vector<float>> static_features_;  ///< per step, normalised
};

/// A search run: the best outcome and the best reward after each evaluation.
struct SearchResult {
  std::string searcher;
  SearchOutcome best;
  std::vector<double> best_reward_curve;  ///< one per evaluation
  double seconds = 0.0;
  nlohmann::json to_json() const;
};

/// Uniform random actions, `options.evaluations` episodes.
SearchResult random_search(const SearchProblem& problem, const SearchOptions& options);

}  // namespace tessera::fpga
