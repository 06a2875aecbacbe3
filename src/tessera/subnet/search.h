// Progressive sub-net search: shrink the ranked network group by group (the most tolerant group
// of any slot first), record a sub-net at each target FLOPs point, fine-tune briefly only when
// validation accuracy falls more than a threshold below the last fine-tuned point; then, after
// the multi-term training, re-select the sub-nets on the accuracy-FLOPs Pareto front
// (research/efficient.md 2.2 steps 2-4 and 6).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/subnet/slim_net.h"

namespace tessera::subnet {

struct SearchOptions {
  int64_t group = 8;  ///< channels removed per step (a slot shrinks while its width > group)
  /// Target MACs as fractions of the full net's, descending in (0, 1); sub-net 0 is the full net.
  std::vector<double> targets = {0.6, 0.35, 0.15};
  double threshold = 0.02;      ///< fine-tune when accuracy drops more than this (fraction)
  int64_t finetune_steps = 50;  ///< steps of each brief fine-tune
  double finetune_lr = 0.02;    ///< its learning rate (SGD, per-step cosine)
  int64_t batch_size = 128;
  int64_t calibration_images = 256;  ///< BN calibration of every evaluated candidate
  /// RECONSTRUCTED: score a group by its mean normalised tolerance x the MACs it removes
  /// (relative to the mean over candidates); false: by tolerance alone.
  bool flops_weighted = true;
  int64_t reselect_window = 2;  ///< re-selection: path points after each recorded sub-net tried
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

struct SearchStep {
  int64_t slot = -1;  ///< the slot shrunk at this step (-1: the start)
  SubnetSpec spec;
  int64_t macs = 0;
  double accuracy = 0.0;  ///< validation accuracy (BN calibrated)
  bool finetuned = false;
  int64_t target = -1;  ///< index into targets when this point was recorded, else -1
};

struct SearchResult {
  std::vector<SubnetSpec> subnets;  ///< full net first, then one per target
  std::vector<int64_t> macs;
  std::vector<double> accuracy;  ///< validation accuracy when recorded
  std::vector<SearchStep> path;
  int64_t finetunes = 0;
  int64_t finetune_steps = 0;  ///< total fine-tune steps (the search's training cost)
  nlohmann::json to_json() const;
  static SearchResult from_json(const nlohmann::json& json);
};

/// The smallest sub-net the search can reach with groups of `group`: every slot at
/// ((slot_max - 1) mod group) + 1 channels.
SubnetSpec smallest_spec(const SlimNetImpl& net, int64_t group);

/// Runs the search on a ranked net (rank_channels first). `train_set` feeds the fine-tunes and BN
/// calibration, `val_set` the accuracy checks. A target below the smallest reachable MACs throws
/// tessera::Error. Leaves the net with the recorded sub-nets (fresh BN sets).
SearchResult progressive_search(SlimNet& net, const data::Dataset& train_set,
                                const data::Dataset& val_set, const SearchOptions& options);

struct ReselectResult {
  std::vector<SubnetSpec> subnets;
  std::vector<double> accuracy;    ///< validation accuracy of each kept sub-net
  std::vector<std::string> notes;  ///< what changed (a neighbour chosen, a dominated one dropped)
  nlohmann::json to_json() const;
};
/// Sub-net re-selection after the joint training: for each recorded sub-net k > 0, it and the
/// next reselect_window path points (all within the same target) are BN-calibrated and scored on
/// `val_set`; the best is kept; then a sub-net that a cheaper one matches or beats is dropped
/// (Pareto front). Leaves the net with the kept sub-nets, each BN set calibrated.
ReselectResult reselect(SlimNet& net, const SearchResult& search, const data::Dataset& train_set,
                        const data::Dataset& val_set, const SearchOptions& options);

}  // namespace tessera::subnet
