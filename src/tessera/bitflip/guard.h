// RADAR inside the inference path: a wrapper that checks the integer weights against the golden
// signatures before the model runs (every inference or every N), and on a mismatch zeroes the
// flagged groups and refreshes the module before the weights are used.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "tessera/bitflip/quantized_model.h"
#include "tessera/bitflip/radar.h"

namespace tessera::bitflip {

struct GuardOptions {
  int64_t check_every = 1;  ///< check before every N-th inference (1 = every inference)
  bool recover = true;      ///< zero flagged groups (false: detect and count only)
  void validate() const;
};

struct GuardStats {
  int64_t n_inferences = 0;
  int64_t n_checks = 0;
  int64_t n_detections = 0;      ///< checks that flagged at least one group
  int64_t n_flagged_groups = 0;  ///< summed over checks
  int64_t n_weights_zeroed = 0;
  int64_t t_check_us = 0;  ///< time spent in checks and recovery
};

/// Borrows the model, RADAR and golden set: they must outlive the guard.
class RadarGuard {
 public:
  RadarGuard(QuantizedModel& model, const Radar& radar, const GoldenSignatures& golden,
             GuardOptions options = {});
  /// images: [B, C, H, W] float32 -> logits [B, K]. Runs the check first when it is due.
  torch::Tensor forward(const torch::Tensor& images);
  /// Checks now (and recovers if enabled); returns what was flagged.
  CheckResult check_now();
  const GuardStats& stats() const { return stats_; }

 private:
  QuantizedModel& model_;
  const Radar& radar_;
  const GoldenSignatures& golden_;
  GuardOptions options_;
  GuardStats stats_;
};

}  // namespace tessera::bitflip
