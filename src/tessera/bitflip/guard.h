// RADAR inside the deployed inference path: a weight reader that checks each layer's int8
// codes in the same pass that dequantizes them for the forward (every inference or every N),
// and on a mismatch repairs the flagged groups in the weight memory before the unit runs.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "tessera/bitflip/deployed.h"
#include "tessera/bitflip/radar.h"

namespace tessera::bitflip {

struct GuardOptions {
  int64_t check_every = 1;  ///< check during every N-th inference (1 = every inference)
  bool recover = true;      ///< repair flagged groups (false: detect and count only)
  RecoveryMode mode = RecoveryMode::zero_group;
  void validate() const;
};

struct GuardStats {
  int64_t n_inferences = 0;
  int64_t n_checks = 0;
  int64_t n_detections = 0;      ///< checks that flagged at least one group
  int64_t n_flagged_groups = 0;  ///< summed over checks
  int64_t n_weights_zeroed = 0;
};

/// Borrows the model, RADAR and golden set: they must outlive the guard. After a repair the
/// repaired groups are re-signed in the guard's working copy of the signatures, so later checks
/// flag only new flips (the golden file itself is never changed).
class RadarGuard : public WeightReader {
 public:
  RadarGuard(DeployedModel& model, const Radar& radar, const GoldenSignatures& golden,
             GuardOptions options = {});
  /// images: [B, C, H, W] float32 -> logits [B, K]; the check runs inside the weight read when
  /// it is due.
  torch::Tensor forward(const torch::Tensor& images);
  /// Checks (and repairs, if enabled) every layer now, without running the model.
  CheckResult check_now();
  /// The fused read of one layer (WeightReader).
  void read(DeployedModel& model, size_t layer, float* out) override;
  const GuardStats& stats() const { return stats_; }
  /// What the last check flagged (before its repair).
  const CheckResult& last_check() const { return last_; }

 private:
  void begin_check();
  void end_check();

  DeployedModel& model_;
  const Radar& radar_;
  const GoldenSignatures& golden_;
  GuardOptions options_;
  SignatureMasks expected_;
  std::vector<uint32_t> a_, b_;
  CheckResult last_, current_;
  GuardStats stats_;
};

}  // namespace tessera::bitflip
