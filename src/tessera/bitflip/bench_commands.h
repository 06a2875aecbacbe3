// Protect, attack and verify one quantized model: what `tessera bitflip protect|attack|verify` do,
// as library calls with their tables, reports and plot.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/bitflip/attack.h"
#include "tessera/bitflip/quantized_model.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/svg.h"
#include "tessera/core/table.h"
#include "tessera/data/dataset.h"
#include "tessera/data/image_folder.h"

namespace tessera::bitflip {

/// The first `n` test images (0 = all) of `source` (Fashion-MNIST zero-padded to the model's
/// side, or CIFAR; normalized), shaped for `model`; throws tessera::Error when its input
/// channels or side do not fit.
data::Dataset load_eval_set(const QuantizedModel& model, const data::ImageData& source, int64_t n);

/// RADAR golden signatures of a clean model and what they cost.
struct ProtectResult {
  GoldenSignatures golden;
  int64_t n_layers = 0;
  int64_t n_weights = 0;
  int64_t group_size = 0;
  double storage_fraction = 0.0;  ///< signature bits / weight bits

  /// layers, weights, G, groups, signature bits, storage overhead %, file bytes.
  tessera::Table table(int64_t file_bytes) const;
  nlohmann::json to_json() const;
};
ProtectResult protect_model(const QuantizedModel& model, const RadarKey& key,
                            const RadarOptions& options);

struct AttackRunOptions {
  AttackOptions attack;
  int64_t attack_batch = 128;  ///< PBFA: images drawn from the pool, labelled by the model
  int64_t eval_size = 1000;    ///< test images for the accuracy after each flip (0 = all)

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  nlohmann::json to_json() const;
};

struct AttackRun {
  AttackMethod method = AttackMethod::pbfa;
  double clean_accuracy = 0.0;
  int64_t eval_images = 0;
  AttackResult result;

  /// One row per flip (layer, index, bit, old, new, accuracy %) after the clean row 0.
  tessera::Table table() const;
  /// "N pbfa flips: accuracy a% -> b% on n test images".
  std::string summary() const;
  nlohmann::json to_json() const;
  /// Accuracy (%) against the number of flips.
  tessera::SvgPlot plot(const std::string& title) const;
};

/// Attacks `model` in place (a progress bar over the flips): PBFA with a seeded batch from
/// `pool` (required for PBFA), or random flips; accuracy on `eval_set` after each flip.
AttackRun attack_model(QuantizedModel& model, const data::Dataset& eval_set,
                       const data::Dataset* pool, const AttackRunOptions& options);

/// `tessera bitflip verify`'s exit status when a signature does not match (0 when all match),
/// so that a deployment script can refuse the model.
constexpr int kVerifyMismatchExit = 3;

struct VerifyResult {
  CheckResult check;
  RecoveryMode mode = RecoveryMode::zero_group;
  int64_t n_layers = 0;
  int64_t n_groups = 0;
  int64_t group_size = 0;
  std::vector<int64_t> layer_groups;  ///< per entry of check.layers: that layer's group count
  bool recovered = false;             ///< flagged groups were zeroed
  int64_t weights_zeroed = 0;
  int64_t eval_images = 0;  ///< 0: no accuracy measured
  double accuracy_before = -1.0;
  double accuracy_after = -1.0;  ///< after recovery (equal to before without it)

  /// "OK: ..." or the flagged layers with their groups and "MISMATCH: ...", then the
  /// accuracies when measured.
  std::string to_string() const;
  /// 0 when every signature matches, else kVerifyMismatchExit (also after a recovery).
  int exit_code() const { return check.clean() ? 0 : kVerifyMismatchExit; }
  nlohmann::json to_json() const;
};

/// Deploys `model` (int8 weight memory) and checks that memory against `golden` with the fused
/// check inference uses; with `recover`, repairs the flagged groups by `mode` and writes the
/// repaired codes back into `model`. `eval_set` (nullable): deployed accuracy before and after.
VerifyResult verify_model(QuantizedModel& model, const Radar& radar, const GoldenSignatures& golden,
                          bool recover, const data::Dataset* eval_set,
                          RecoveryMode mode = RecoveryMode::zero_group);

}  // namespace tessera::bitflip
