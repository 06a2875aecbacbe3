// Bit-flip attacks on quantized weights: the progressive bit-flip attack (PBFA, Rakin et al.,
// ICCV'19; research/hw_security.md 3.2) and the random-flip baseline.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/bitflip/quantized_model.h"

namespace tessera::bitflip {

/// One committed bit flip: bit `bit` (0 = LSB, bits-1 = sign bit) of flat element `index` of
/// quantized layer `layer` changed the integer weight from old_value to new_value.
struct BitFlip {
  std::string layer;
  int64_t index = 0;
  int bit = 0;
  int32_t old_value = 0;
  int32_t new_value = 0;
  double loss_after = 0.0;  ///< PBFA: attack-batch loss after the flip (random: NaN)

  nlohmann::json to_json() const;
  static BitFlip from_json(const nlohmann::json& json);
};

struct PbfaOptions {
  /// In-layer search: weights ranked by |dL/dw| per layer (the RADAR scripts use 40; <= 0 means
  /// every weight of the layer, the BFA CIFAR default).
  int64_t k_top = 40;
  /// Cap on bits flipped together in one iteration when a single flip raises no layer's loss
  /// (the reference loops without bound; RECONSTRUCTED cap, then the best candidate is taken).
  int64_t max_bits_per_iteration = 8;
};

/// What one PBFA iteration's search found (to explain an attack that stalls).
struct PbfaStep {
  double loss_before = 0.0;  ///< attack-batch loss before the iteration
  double loss_after = 0.0;   ///< after its committed flips
  int64_t n_bits = 0;        ///< bits flipped together
  bool raised = false;  ///< some candidate raised the loss (else the best one was taken anyway)
};

/// PBFA on a quantized model. The attack batch is labelled with the model's own predictions
/// when the attack is constructed ("prevent label leaking"). Each step() runs the in-layer
/// gradient ranking and the cross-layer loss search and commits one iteration's flips.
class Pbfa {
 public:
  /// images: [B, C, H, W] float32, the fixed attack batch.
  Pbfa(QuantizedModel& model, torch::Tensor images, PbfaOptions options = {});

  /// One attack iteration; returns the bits it flipped (normally one), already committed to the
  /// model's integers and module.
  std::vector<BitFlip> step();
  /// Attack-batch cross-entropy of the current model.
  double loss();
  const torch::Tensor& labels() const { return labels_; }
  /// The search of the last step().
  const PbfaStep& last_step() const { return last_step_; }
  /// Fraction of the attack batch the model still predicts as labelled.
  double batch_agreement();

 private:
  struct Candidate {
    int64_t index;
    int bit;
  };
  /// The in-layer search (3.2 step 3a-d): the n best bit candidates of layer l by gradient.
  std::vector<Candidate> rank_layer(size_t layer, const torch::Tensor& grad, int64_t n) const;
  /// Loss with the candidates of one layer applied (the layer is restored afterwards).
  double trial_loss(size_t layer, const std::vector<Candidate>& candidates);

  QuantizedModel& model_;
  torch::Tensor images_;
  torch::Tensor labels_;
  PbfaOptions options_;
  PbfaStep last_step_;
};

/// Flips one uniformly chosen bit of one uniformly chosen weight of one uniformly chosen layer
/// (the random baseline of 3.2) and syncs the module.
BitFlip random_flip(QuantizedModel& model, std::mt19937_64& rng);

/// Applies recorded flips to another copy of the model (the non-adaptive "dump" of RADAR's
/// evaluation). Throws tessera::Error if a layer, index or bit does not exist or the current
/// value differs from the flip's old_value (the flips were recorded on another model).
void apply_flips(QuantizedModel& model, const std::vector<BitFlip>& flips);

/// Which attack `run_attack` runs: PBFA's gradient-guided search or uniform random flips.
enum class AttackMethod { pbfa, random };

/// "pbfa" or "random"; throws tessera::Error listing the valid names.
AttackMethod parse_attack_method(const std::string& name);
std::string attack_method_name(AttackMethod method);

struct AttackOptions {
  AttackMethod method = AttackMethod::pbfa;
  int64_t n_flips = 10;  ///< bits to flip
  PbfaOptions pbfa;
  uint64_t seed = 0;  ///< random method only
};

struct AttackResult {
  std::vector<BitFlip> flips;
  /// accuracy_after[i]: accuracy on the evaluation set after flips[0..i] (empty without one).
  std::vector<double> accuracy_after;
  std::vector<PbfaStep> steps;    ///< PBFA: one per iteration
  double batch_agreement = -1.0;  ///< PBFA: attack batch still predicted as labelled, at the end
};

/// Runs `options.n_flips` flips (PBFA iterations until that many bits have flipped, or random
/// flips) on `model`. `attack_images` is the PBFA batch; `eval_set` (nullable) is evaluated after
/// every flip; `on_flip` (optional) is called after each one.
AttackResult run_attack(QuantizedModel& model, const torch::Tensor& attack_images,
                        const data::Dataset* eval_set, const AttackOptions& options,
                        const std::function<void(const BitFlip&, double)>& on_flip = {});

}  // namespace tessera::bitflip
