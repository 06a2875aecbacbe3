// Trainable noise ranking (see ranking.h).
#include "tessera/subnet/ranking.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tessera/core/error.h"
#include "tessera/core/seed.h"

namespace tessera::subnet {

void NoiseRankOptions::validate() const {
  TESSERA_CHECK(std::isfinite(alpha_init) && alpha_init >= 0,
                "noise: alpha_init must be >= 0, got {}", alpha_init);
  TESSERA_CHECK(std::isfinite(reward) && reward >= 0, "noise: reward must be >= 0, got {}", reward);
  TESSERA_CHECK(std::isfinite(alpha_max) && alpha_max > alpha_init,
                "noise: alpha_max must be > alpha_init, got {}", alpha_max);
}

nlohmann::json NoiseRankOptions::to_json() const {
  return {{"alpha_init", alpha_init}, {"reward", reward}, {"alpha_max", alpha_max}};
}

std::vector<train::EpochStats> train_with_noise(SlimNet& net, const data::Dataset& train_set,
                                                const train::TrainOptions& options,
                                                const NoiseRankOptions& noise) {
  noise.validate();
  seed_everything(options.seed);
  net->reset_alphas(noise.alpha_init);
  net->set_noise(true);
  const SubnetSpec full = net->full_spec();
  std::vector<torch::Tensor> alphas;
  for (int64_t slot = 0; slot < net->n_slots(); ++slot) alphas.push_back(net->alpha(slot));
  train::TrainHooks hooks;
  hooks.loss = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    const torch::Tensor logits = net->forward_spec(images, full, 0);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, labels);
    if (noise.reward > 0) loss = loss - noise.reward * torch::cat(alphas).mean();
    return train::StepLoss{loss, logits};
  };
  hooks.after_step = [&](int64_t) {
    torch::NoGradGuard no_grad;
    for (auto& a : alphas) a.clamp_(0.0, noise.alpha_max);
  };
  auto forward = [&](const torch::Tensor& x) { return net->forward_spec(x, full, 0); };
  auto stats = train::fit(*net, forward, train_set, nullptr, options, hooks);
  net->set_noise(false);
  net->mark_weights_changed();
  return stats;
}

std::vector<std::vector<double>> normalized_tolerance(SlimNet& net) {
  std::vector<std::vector<double>> out;
  for (int64_t slot = 0; slot < net->n_slots(); ++slot) {
    const torch::Tensor a = net->alpha(slot).detach().to(torch::kDouble).contiguous();
    const double mean = a.mean().item<double>();
    std::vector<double> t(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
    for (double& v : t) v = mean > 0 ? v / mean : 1.0;
    out.push_back(t);
  }
  return out;
}

std::vector<std::vector<int64_t>> rank_channels(SlimNet& net) {
  std::vector<std::vector<int64_t>> orders;
  const auto tolerance = normalized_tolerance(net);
  for (int64_t slot = 0; slot < net->n_slots(); ++slot) {
    const auto& t = tolerance[static_cast<size_t>(slot)];
    std::vector<int64_t> order(t.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return t[static_cast<size_t>(a)] < t[static_cast<size_t>(b)];
    });
    net->permute_slot(slot, order);
    orders.push_back(order);
  }
  return orders;
}

}  // namespace tessera::subnet
