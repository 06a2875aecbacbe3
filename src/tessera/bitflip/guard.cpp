// The in-path RADAR check: fused read, comparison, repair and re-signing.
#include "tessera/bitflip/guard.h"

#include "tessera/bitflip/fused_check.h"
#include "tessera/core/error.h"

namespace tessera::bitflip {

void GuardOptions::validate() const {
  TESSERA_CHECK(check_every >= 1, "check_every must be >= 1, got {}", check_every);
}

RadarGuard::RadarGuard(DeployedModel& model, const Radar& radar, const GoldenSignatures& golden,
                       GuardOptions options)
    : model_(model), radar_(radar), golden_(golden), options_(options) {
  options_.validate();
  // Fail now, not at the first inference, if the golden set does not fit the model.
  radar_.check(model_, golden);
  expected_ = radar_.masks(golden);
}

void RadarGuard::begin_check() { current_ = CheckResult{}; }

void RadarGuard::end_check() {
  ++stats_.n_checks;
  if (!current_.clean()) {
    ++stats_.n_detections;
    stats_.n_flagged_groups += current_.n_flagged_groups();
  }
  last_ = current_;
}

void RadarGuard::read(DeployedModel& model, size_t layer, float* out) {
  const LayerLayout& layout = radar_.layout(layer);
  const auto n_slots = static_cast<size_t>(layout.n_slots());
  a_.resize(n_slots);
  b_.resize(n_slots);
  const float step = static_cast<float>(model.layer(layer).step);
  fused_read(layout, model.codes(layer), out, step, a_.data(), b_.data());
  std::vector<int64_t> flagged = radar_.compare(layer, a_.data(), b_.data(), expected_);
  if (flagged.empty()) return;
  LayerCheck check{layer, layout.name, std::move(flagged)};
  if (options_.recover) {
    CheckResult one;
    one.layers.push_back(check);
    stats_.n_weights_zeroed += radar_.recover(model, one, options_.mode, &golden_);
    // Re-read the repaired codes and take their signatures as the expected ones for the
    // repaired groups (only those: a flip elsewhere still shows).
    fused_read(layout, model.codes(layer), out, step, a_.data(), b_.data());
    for (const int64_t g : check.flagged_groups) {
      const auto q = static_cast<size_t>(g / 32);
      const uint32_t bit = uint32_t{1} << (g % 32);
      expected_.a[layer][q] = (expected_.a[layer][q] & ~bit) | (a_[q] & bit);
      expected_.b[layer][q] = (expected_.b[layer][q] & ~bit) | (b_[q] & bit);
    }
  }
  current_.layers.push_back(std::move(check));
}

torch::Tensor RadarGuard::forward(const torch::Tensor& images) {
  // Count first so that with check_every = N the check runs during inferences 1, N+1, 2N+1...
  const bool due = stats_.n_inferences % options_.check_every == 0;
  ++stats_.n_inferences;
  if (!due) return model_.forward(images);
  begin_check();
  torch::Tensor out = model_.forward(images, this);
  end_check();
  return out;
}

CheckResult RadarGuard::check_now() {
  begin_check();
  model_.read_all(this);
  end_check();
  return last_;
}

}  // namespace tessera::bitflip
