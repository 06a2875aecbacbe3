// CP-ViT (Song et al., arXiv 2203.04570): cascade pruning of patches and heads. A cumulative patch
// score accumulated layer by layer from attention ranks the patches; each block keeps the top k of
// them (a fixed k per batch, gathered physically) between its attention and its MLP; a cumulative
// head score picks the heads each block keeps; the per-layer pruning shares follow each layer's
// attention range (local layers prune less). No parameters are added.
// research/efficient.md 1.2-1.4.
#pragma once

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/vit_prune/engine.h"

namespace tessera::vit_prune {

/// How one layer's attention A [B, H, T, T] (query i, key j) scores key token j.
enum class PatchScore {
  column_max,   ///< sum_h max_i A[h, i, j]: the published code (CODE, efficient.md 1.2 step 1)
  cls_row,      ///< sum_h A[h, 0, j]: the attention the class token pays to j
  column_mean,  ///< sum_h mean_i A[h, i, j]: the mean attention j receives
};
PatchScore parse_patch_score(const std::string& name);
std::string patch_score_name(PatchScore score);

/// How the calibration scores head h of block l (RECONSTRUCTED: the code has no head pruning).
enum class HeadScore {
  /// sum over images and queries of sum_j A[h, i, j] S_j / sum_j S_j: the attention mass the head
  /// puts on the patches the cumulative patch score S rates informative.
  score_weighted,
  peak,  ///< mean over queries of max_j A[h, i, j]: peaked heads are informative
};
HeadScore parse_head_score(const std::string& name);
std::string head_score_name(HeadScore score);

struct CascadeOptions {
  /// Fraction of the patches kept after the last pruning layer, in (0, 1]; 1 keeps everything.
  double keep_ratio = 0.5;
  /// The first ceil(ramp_fraction x depth) blocks prune; later blocks keep what is left. The
  /// paper's ">40% FLOPs at 50% patches" needs the target reached by about 5 of 12 blocks
  /// (efficient.md 1.5). RECONSTRUCTED.
  double ramp_fraction = 1.0 / 3.0;
  /// Share the pruning of the ramp blocks by their attention range (local layers prune less);
  /// false: equal shares. RECONSTRUCTED direction (efficient.md 1.4 step 4).
  bool layer_aware = true;
  /// Fraction of heads each block keeps, in (0, 1]; round(ratio x heads) must be >= 1.
  double head_keep_ratio = 1.0;
  PatchScore patch_score = PatchScore::column_max;
  HeadScore head_score = HeadScore::score_weighted;

  /// Throws tessera::Error naming the field (a ratio outside (0, 1], ...).
  void validate() const;
  /// Also checks the head ratio against a model with `heads` heads (every head removed: error).
  void validate_for(int64_t heads) const;
  nlohmann::json to_json() const;
};

/// What the calibration decided: a fixed plan for every batch.
struct CascadeSchedule {
  std::vector<int64_t> kept_patches;             ///< per block: patches kept after its attention
  std::vector<std::vector<int64_t>> kept_heads;  ///< per block: the heads it runs (ascending)
  std::vector<double> attention_range;  ///< per block: mean patch distance (in patches) attended
  std::vector<double> range_weight;     ///< per block: the layer-aware share weight (1 when off)
  std::vector<std::vector<double>> head_scores;  ///< per block, per head (cumulative)
  nlohmann::json to_json() const;
};

/// The pruning shares alone (no model): per block, the patches kept after its attention when a
/// ViT of `depth` blocks with `patches` patches prunes with `options` and the range weights
/// `weights` (one per block; empty = all 1). Shares are weights / sum over the ramp blocks.
std::vector<int64_t> cascade_kept_patches(int64_t patches, int64_t depth,
                                          const CascadeOptions& options,
                                          const std::vector<double>& weights = {});

/// Runs the unpruned model over `images` ([N, C, S, S], in chunks of 256) and builds the
/// schedule: attention ranges, cumulative head scores, kept heads and kept patches.
CascadeSchedule calibrate_cascade(models::Model& model, const torch::Tensor& images,
                                  const CascadeOptions& options);

/// Adds `layer`'s score (probs [B, H', T, T]) to `score` ([B, T]), per `kind`.
void accumulate_patch_score(torch::Tensor& score, const torch::Tensor& probs, PatchScore kind);

/// The patch-pruning reducer of CP-ViT: accumulates the score every block; where the schedule
/// keeps fewer patches than are left, keeps CLS plus the top-k patches by cumulative score, in
/// their original order.
class CascadePruner : public TokenReducer {
 public:
  CascadePruner(CascadeSchedule schedule, PatchScore score);
  void start(TokenState& state) override;
  void reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) override;
  const CascadeSchedule& schedule() const { return schedule_; }

 private:
  CascadeSchedule schedule_;
  PatchScore score_;
  /// The last block whose schedule removes patches: later blocks skip the score, which no
  /// later selection reads.
  int64_t last_reduction_ = 0;
};

/// A calibrated CP-ViT: the engine with the schedule's heads, and the pruner.
class CascadeVit {
 public:
  CascadeVit(models::Model model, CascadeSchedule schedule, PatchScore score);
  ReducedOutput forward(const torch::Tensor& images) { return engine_.forward(images, &pruner_); }
  const CascadeSchedule& schedule() const { return pruner_.schedule(); }
  ReducedVit& engine() { return engine_; }

 private:
  ReducedVit engine_;
  CascadePruner pruner_;
};

/// The same cascade simulated by masking, as the published code does (no tokens removed): every
/// token stays in the tensors, pruned tokens are excluded as keys and queries, keep their last
/// value, and heads outside the schedule are zeroed. The reference the gathered forward is
/// tested against.
struct MaskedOutput {
  torch::Tensor logits;  ///< [B, num_classes]
  torch::Tensor x;       ///< [B, T, D]: every token after the last block
  torch::Tensor keep;    ///< [B, T] bool: the tokens still kept at the end
};
MaskedOutput cascade_forward_masked(models::Model& model, const torch::Tensor& images,
                                    const CascadeSchedule& schedule, PatchScore score);

}  // namespace tessera::vit_prune
