// The in-path RADAR check.
#include "tessera/bitflip/guard.h"

#include "tessera/core/error.h"
#include "tessera/core/timer.h"

namespace tessera::bitflip {

void GuardOptions::validate() const {
  TESSERA_CHECK(check_every >= 1, "check_every must be >= 1, got {}", check_every);
}

RadarGuard::RadarGuard(QuantizedModel& model, const Radar& radar, const GoldenSignatures& golden,
                       GuardOptions options)
    : model_(model), radar_(radar), golden_(golden), options_(options) {
  options_.validate();
  // Fail now, not at the first inference, if the golden set does not fit the model.
  radar_.check(model_.weights, golden_);
}

CheckResult RadarGuard::check_now() {
  Timer timer;
  CheckResult result = radar_.check(model_.weights, golden_);
  ++stats_.n_checks;
  if (!result.clean()) {
    ++stats_.n_detections;
    stats_.n_flagged_groups += result.n_flagged_groups();
    if (options_.recover) {
      stats_.n_weights_zeroed += radar_.recover(model_.weights, result);
      for (const auto& layer : result.layers) model_.sync_layer(layer.layer);
    }
  }
  stats_.t_check_us += timer.elapsed_us();
  return result;
}

torch::Tensor RadarGuard::forward(const torch::Tensor& images) {
  // Count first so that with check_every = N the check runs before inferences 1, N+1, 2N+1...
  if (stats_.n_inferences % options_.check_every == 0) check_now();
  ++stats_.n_inferences;
  return model_.predict(images);
}

}  // namespace tessera::bitflip
