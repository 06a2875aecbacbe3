// Training and evaluating the nested sub-nets through train::fit's hooks: the multi-term objective
// (sum of the sub-nets' cross-entropies, in-place distillation as an option, switchable BN), the
// US-Net baseline (sandwich rule, in-place distillation), post-hoc BN calibration, accuracy.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/subnet/slim_net.h"
#include "tessera/train/train.h"

namespace tessera::subnet {

/// Post-hoc BN calibration (US-Net Sec. 3.3): resets statistics set k and forwards
/// `images` ([N, C, H, W], in batches of batch_size) through sub-net k in training mode without
/// gradients, averaging the batch statistics exactly (momentum 1/(i+1) at batch i).
void calibrate_bn(SlimNet& net, int64_t k, const torch::Tensor& images, int64_t batch_size);
/// calibrate_bn for every sub-net of the net.
void calibrate_all(SlimNet& net, const torch::Tensor& images, int64_t batch_size);

/// Top-1 accuracy in [0, 1] of sub-net k (eval mode, set_subnet(k), its BN set) over `set`.
double subnet_accuracy(SlimNet& net, int64_t k, const data::Dataset& set);

/// Soft cross-entropy against a teacher's detached softmax: in-place distillation.
torch::Tensor soft_cross_entropy(const torch::Tensor& logits, const torch::Tensor& teacher);

struct MultiTermOptions {
  train::TrainOptions train;  ///< the loop's options (steps or epochs, lr, schedule, seed)
  /// In-place distillation: every sub-net but the first learns the first's soft predictions.
  bool distill = false;
  /// Switchable BN: sub-net k normalises with batch statistics and updates BN set k (the specs
  /// must then be the net's own sub-nets); false: batch statistics, no set is touched.
  bool switchable_bn = true;
};
/// L = sum_k CE(f(x; W_k), y) over `specs` (largest first), one train::fit with a loss hook.
std::vector<train::EpochStats> train_multiterm(SlimNet& net, const std::vector<SubnetSpec>& specs,
                                               const data::Dataset& train_set,
                                               const MultiTermOptions& options);

/// US-Net's uniform width: every slot keeps max(1, round(width x slot_max)) channels.
SubnetSpec uniform_spec(const SlimNetImpl& net, double width);
/// The uniform width in [min_width, 1] (on a 1/512 grid) whose MACs are closest to `macs`.
SubnetSpec uniform_spec_for_macs(const SlimNetImpl& net, int64_t macs, double min_width);

struct UsNetOptions {
  train::TrainOptions train;
  double min_width = 0.25;    ///< the width range [min_width, 1] (US-Net: 0.25)
  int64_t random_widths = 2;  ///< sandwich rule: max, min and this many uniform random widths
  bool distill = true;        ///< in-place distillation from the max width
  nlohmann::json to_json() const;
};
/// Universally slimmable training (Yu & Huang 2019) of the whole width range through train::fit:
/// each step the max width learns the labels, the min width and `random_widths` widths drawn
/// uniformly (core/random on make_rng(seed, 7)) learn the max width's soft predictions (or the
/// labels without distillation). BN uses batch statistics; calibrate afterwards.
std::vector<train::EpochStats> train_usnet(SlimNet& net, const data::Dataset& train_set,
                                           const UsNetOptions& options);

}  // namespace tessera::subnet
