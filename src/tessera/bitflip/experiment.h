// One seeded attack-and-defense trial on a clean quantized model, shared by `tessera bitflip
// bench` and the tour: PBFA and random flips, then the PBFA flips dumped onto RADAR-protected
// copies (one per G) and onto the CRC32 baseline, as in RADAR's non-adaptive evaluation (3.3).
#pragma once

#include <cstdint>
#include <vector>

#include "tessera/bitflip/attack.h"
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
  int64_t attack_batch = 128;  ///< PBFA batch drawn from the attack pool
  PbfaOptions pbfa;

  /// Throws tessera::Error naming the first bad field (n_flips < 1, defended flips outside
  /// [1, n_flips], negative random flips, attack_batch < 1, a group size < 1).
  void validate() const;
};

struct RadarOutcome {
  int64_t group_size = 0;
  int64_t n_flips = 0;     ///< flips dumped onto the protected model
  int64_t n_detected = 0;  ///< flips whose group was flagged
  int64_t n_flagged_groups = 0;
  int64_t n_weights_zeroed = 0;
  double recovered_accuracy = 0.0;
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

/// Side-by-side timing of inference with and without the RADAR check on the same model and
/// batch (the check runs before every inference). Alternates the two `n_reps` times after a
/// warm-up and reports the median per-inference times.
struct OverheadResult {
  double t_inference_us = 0.0;     ///< unguarded forward
  double t_guarded_us = 0.0;       ///< check + forward
  double t_check_us = 0.0;         ///< check alone
  double overhead_fraction = 0.0;  ///< t_check / t_inference
};
OverheadResult measure_check_overhead(QuantizedModel& model, const Radar& radar,
                                      const GoldenSignatures& golden, const torch::Tensor& batch,
                                      int64_t n_reps);

/// The stretch experiment: an attacker who knows the algorithm and G but not the secret flips
/// the MSB of a weight and, to cancel the checksum, the MSB of a second weight of the same layer
/// with the same sign (the choice that cancels if both land in one group with opposite keys).
/// Counts how often the pair goes undetected; `predicted` is the key-space rate
/// P(same group) * P(opposite keys | same group).
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
