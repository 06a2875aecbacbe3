// Multi-term and US-Net training, BN calibration and accuracy of sub-nets (see training.h).
#include "tessera/subnet/training.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"

namespace tessera::subnet {

void calibrate_bn(SlimNet& net, int64_t k, const torch::Tensor& images, int64_t batch_size) {
  TESSERA_CHECK(images.dim() == 4 && images.size(0) > 0, "calibrate_bn: no images");
  TESSERA_CHECK(batch_size >= 2, "calibrate_bn: batch_size must be >= 2, got {}", batch_size);
  net->reset_bn_stats(k);
  const bool was_training = net->is_training();
  const bool had_noise = net->noise();
  net->set_noise(false);
  net->train();
  torch::NoGradGuard no_grad;
  const SubnetSpec spec = net->subnets().at(static_cast<size_t>(k));
  int64_t i = 0;
  for (int64_t begin = 0; begin < images.size(0); begin += batch_size, ++i) {
    const torch::Tensor x = images.slice(0, begin, begin + batch_size);
    if (x.size(0) < 2) break;  // BN needs two samples
    net->set_bn_momentum(1.0 / static_cast<double>(i + 1));
    net->forward_spec(x, spec, k);
  }
  net->set_bn_momentum(0.1);
  net->set_noise(had_noise);
  net->train(was_training);
  net->mark_weights_changed();
}

void calibrate_all(SlimNet& net, const torch::Tensor& images, int64_t batch_size) {
  for (int64_t k = 0; k < net->n_subnets(); ++k) calibrate_bn(net, k, images, batch_size);
}

double subnet_accuracy(SlimNet& net, int64_t k, const data::Dataset& set) {
  TESSERA_CHECK(set.size() > 0, "subnet_accuracy: empty data set");
  const bool was_training = net->is_training();
  net->eval();
  net->set_subnet(k);
  const auto result =
      train::evaluate([&](const torch::Tensor& x) { return net->forward(x); }, set, 500);
  net->train(was_training);
  return result.accuracy;
}

torch::Tensor soft_cross_entropy(const torch::Tensor& logits, const torch::Tensor& teacher) {
  const torch::Tensor target = torch::softmax(teacher.detach(), 1);
  return -(target * torch::log_softmax(logits, 1)).sum(1).mean();
}

std::vector<train::EpochStats> train_multiterm(SlimNet& net, const std::vector<SubnetSpec>& specs,
                                               const data::Dataset& train_set,
                                               const MultiTermOptions& o) {
  TESSERA_CHECK(!specs.empty(), "train_multiterm: no sub-nets");
  if (o.switchable_bn)
    TESSERA_CHECK(specs == net->subnets(),
                  "train_multiterm: switchable BN needs the net's own sub-nets");
  seed_everything(o.train.seed);
  train::TrainHooks hooks;
  hooks.loss = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    torch::Tensor full, loss;
    for (size_t k = 0; k < specs.size(); ++k) {
      const int64_t set = o.switchable_bn ? static_cast<int64_t>(k) : -1;
      const torch::Tensor logits = net->forward_spec(images, specs[k], set);
      const torch::Tensor term = (k > 0 && o.distill)
                                     ? soft_cross_entropy(logits, full)
                                     : torch::nn::functional::cross_entropy(logits, labels);
      if (k == 0) full = logits;
      loss = loss.defined() ? loss + term : term;
    }
    return train::StepLoss{loss, full};
  };
  auto forward = [&](const torch::Tensor& x) { return net->forward_spec(x, specs[0], -1); };
  auto stats = train::fit(*net, forward, train_set, nullptr, o.train, hooks);
  net->mark_weights_changed();
  return stats;
}

SubnetSpec uniform_spec(const SlimNetImpl& net, double width) {
  TESSERA_CHECK(std::isfinite(width) && width > 0 && width <= 1, "uniform width {} not in (0, 1]",
                width);
  SubnetSpec spec;
  for (int64_t slot = 0; slot < net.n_slots(); ++slot)
    spec.widths.push_back(
        std::max<int64_t>(1, std::llround(width * static_cast<double>(net.slot_max(slot)))));
  return spec;
}

SubnetSpec uniform_spec_for_macs(const SlimNetImpl& net, int64_t macs, double min_width) {
  SubnetSpec best;
  int64_t best_gap = std::numeric_limits<int64_t>::max();
  for (int64_t j = 512; j >= 1; --j) {
    const double w = static_cast<double>(j) / 512.0;
    if (w < min_width) break;
    SubnetSpec spec = uniform_spec(net, w);
    const int64_t gap = std::llabs(net.macs(spec) - macs);
    if (gap < best_gap) {
      best_gap = gap;
      best = spec;
    }
  }
  TESSERA_CHECK(!best.widths.empty(), "uniform_spec_for_macs: min_width {} above 1", min_width);
  return best;
}

nlohmann::json UsNetOptions::to_json() const {
  return {{"train", train::to_json(train)},
          {"min_width", min_width},
          {"random_widths", random_widths},
          {"distill", distill}};
}

std::vector<train::EpochStats> train_usnet(SlimNet& net, const data::Dataset& train_set,
                                           const UsNetOptions& o) {
  TESSERA_CHECK(o.min_width > 0 && o.min_width <= 1, "usnet: min_width {} not in (0, 1]",
                o.min_width);
  TESSERA_CHECK(o.random_widths >= 0 && o.random_widths <= 16,
                "usnet: random_widths {} not in [0, 16]", o.random_widths);
  seed_everything(o.train.seed);
  auto rng = make_rng(o.train.seed, 7);
  const SubnetSpec max_spec = net->full_spec();
  const SubnetSpec min_spec = uniform_spec(*net, o.min_width);
  train::TrainHooks hooks;
  hooks.loss = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    const torch::Tensor full = net->forward_spec(images, max_spec, -1);
    torch::Tensor loss = torch::nn::functional::cross_entropy(full, labels);
    std::vector<SubnetSpec> others = {min_spec};
    for (int64_t i = 0; i < o.random_widths; ++i)
      others.push_back(
          uniform_spec(*net, o.min_width + (1.0 - o.min_width) * random::uniform01(rng)));
    for (const auto& spec : others) {
      const torch::Tensor logits = net->forward_spec(images, spec, -1);
      loss = loss + (o.distill ? soft_cross_entropy(logits, full)
                               : torch::nn::functional::cross_entropy(logits, labels));
    }
    return train::StepLoss{loss, full};
  };
  auto forward = [&](const torch::Tensor& x) { return net->forward_spec(x, max_spec, -1); };
  auto stats = train::fit(*net, forward, train_set, nullptr, o.train, hooks);
  net->mark_weights_changed();
  return stats;
}

}  // namespace tessera::subnet
