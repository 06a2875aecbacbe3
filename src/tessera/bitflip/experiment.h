// One seeded attack-and-defense trial on a clean quantized model, shared by `tessera bitflip
// bench` and the tour: PBFA and random flips, then the PBFA flips dumped onto RADAR-protected
// copies (one per G) and onto the CRC32 baseline, as in RADAR's non-adaptive evaluation (3.3).
#pragma once

#include <cstdint>
#include <vector>

#include "tessera/bitflip/attack.h"
#include "tessera/bitflip/deployed.h"
#include "tessera/bitflip/fused_check.h"
#include "tessera/bitflip/radar.h"
#include "tessera/data/dataset.h"

namespace tessera::bitflip {

/// n images drawn without replacement (seeded, portable) from `pool`: [n, C, H, W] float32.
torch::Tensor sample_attack_batch(const data::Dataset& pool, int64_t n, uint64_t seed);

struct TrialOptions {
  int64_t n_flips = 20;           ///< PBFA flips (accuracy after each)
  int64_t n_random_flips = 20;    ///< random-baseline flips
  int64_t n_defended_flips = 10;  ///< PBFA flips dumped onto the defenses
  std::vector<int64_t> group_sizes = {8, 16, 32};
  int check_bits = 2;
  int64_t small_layer_weights = 0;  ///< RadarOptions::small_layer_weights (0: off)
  int64_t attack_batch = 128;       ///< PBFA batch drawn from the attack pool
  PbfaOptions pbfa;

  /// Throws tessera::Error naming the first bad field (n_flips < 1, defended flips outside
  /// [1, n_flips], negative random flips, attack_batch < 1, a group size < 1).
  void validate() const;
};

/// RADAR at one G: the dumped flips were XORed into the deployed int8 memory and found by the
/// check inside the guarded inference.
struct RadarOutcome {
  int64_t group_size = 0;
  int64_t n_flips = 0;     ///< flips dumped onto the protected model
  int64_t n_detected = 0;  ///< flips whose group was flagged
  int64_t n_flagged_groups = 0;
  /// Flips whose group holds another of the dumped flips: two flips in one group can cancel in
  /// the signature, a lone flip of the MSB never does (it moves the wrapped sum by 128).
  int64_t n_shared = 0;
  int64_t n_weights_zeroed = 0;     ///< zero_group recovery
  int64_t n_marked_zeroed = 0;      ///< zero_marked recovery
  double recovered_accuracy = 0.0;  ///< zero_group (the paper)
  double marked_accuracy = 0.0;     ///< zero_marked (ours)
  double restored_accuracy = 0.0;   ///< restore_marked (ours)
  int64_t n_restore_changed = 0;    ///< restore_marked: weights restored or zeroed
  /// Diagnostic: only the truly flipped weights of flagged groups zeroed (needs the flip list).
  double oracle_accuracy = 0.0;
  double storage_fraction = 0.0;  ///< signature bits / weight bits
};

struct CrcOutcome {
  int64_t n_layers_flagged = 0;
  int64_t n_weights_zeroed = 0;
  double zeroed_accuracy = 0.0;  ///< flagged layers zeroed
  double reload_accuracy = 0.0;  ///< flagged layers reloaded from a clean copy
};

struct TrialResult {
  std::vector<BitFlip> flips;             ///< PBFA flips, in order
  std::vector<PbfaStep> pbfa_steps;       ///< what each PBFA iteration's search found
  double batch_agreement = 1.0;           ///< attack batch still predicted as labelled, after PBFA
  std::vector<double> pbfa_accuracy;      ///< after each PBFA flip
  std::vector<double> random_accuracy;    ///< after each random flip
  double defended_attack_accuracy = 0.0;  ///< after the first n_defended_flips, no defense
  std::vector<RadarOutcome> radar;        ///< one per group size
  CrcOutcome crc;
  double seconds = 0.0;
};

/// Runs one trial. `clean` is not modified. The attack batch is drawn (seeded) from
/// `attack_pool`; accuracies are measured on `eval_set`; the RADAR key is derived from `seed`.
TrialResult run_trial(const QuantizedModel& clean, const data::Dataset& attack_pool,
                      const data::Dataset& eval_set, const TrialOptions& options, uint64_t seed);

/// Side-by-side timing on the deployed model: inference with the plain weight read against
/// inference with the fused read-and-check (the guard checks during every inference), and the
/// two reads alone, for each of `kernels` (fused_check.h: each kernel's plain read is its own
/// dequantization). Alternates all of them `n_reps` times after a warm-up; medians per
/// inference, one result per kernel. The process's kernel is restored afterwards.
struct OverheadResult {
  double t_inference_us = 0.0;       ///< unguarded deployed forward (plain read + compute)
  double t_guarded_us = 0.0;         ///< guarded deployed forward (fused read + compute)
  double t_read_us = 0.0;            ///< the plain dequantizing read of every layer
  double t_fused_us = 0.0;           ///< the fused read-and-check of every layer
  double t_check_us = 0.0;           ///< what the check adds to the read: t_fused - t_read (>= 0)
  double t_check_only_us = 0.0;      ///< the check of every layer without dequantizing
  double overhead_fraction = 0.0;    ///< t_check / t_inference
  double end_to_end_fraction = 0.0;  ///< (t_guarded - t_inference) / t_inference (noisy)
};
std::vector<OverheadResult> measure_check_overhead(DeployedModel& model, const Radar& radar,
                                                   const GoldenSignatures& golden,
                                                   const torch::Tensor& batch, int64_t n_reps,
                                                   const std::vector<CheckKernel>& kernels);

/// The stretch experiment: an attacker who knows the algorithm and G but not the secret flips
/// the MSB of a weight and, to cancel the checksum, the MSB of a second weight of the same layer
/// with the same sign (the choice that cancels if both land in one group with opposite keys).
/// Counts how often the pair goes undetected; `predicted` is the key-space rate, per trial
/// P(partner in a's group with the opposite key) = (such real members) / (n - 1).
struct EvasionResult {
  int64_t group_size = 0;
  int64_t n_trials = 0;
  int64_t n_undetected = 0;
  double measured_rate = 0.0;
  double predicted_rate = 0.0;
};
EvasionResult measure_evasion(const QuantizedModel& clean, int64_t group_size, int64_t n_trials,
                              uint64_t seed);

}  // namespace tessera::bitflip
