// PBFA (research/hw_security.md 3.2, reference elliothe/BFA attack/BFA.py) and random flips.
#include "tessera/bitflip/attack.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "tessera/core/error.h"
#include "tessera/core/random.h"

namespace tessera::bitflip {

namespace {

int32_t value_at(const quant::QuantizedTensor& q, int64_t index) {
  return q.values.data_ptr<int32_t>()[index];
}

/// The weight of bit b in n-bit two's complement: b_w = [-2^(n-1), 2^(n-2), ..., 1] (3.1).
double bit_weight(int bit, int bits) {
  const double magnitude = std::ldexp(1.0, bit);
  return bit == bits - 1 ? -magnitude : magnitude;
}

}  // namespace

AttackMethod parse_attack_method(const std::string& name) {
  if (name == "pbfa") return AttackMethod::pbfa;
  if (name == "random") return AttackMethod::random;
  throw Error(fmt::format("unknown attack method '{}' (expected pbfa or random)", name));
}

std::string attack_method_name(AttackMethod method) {
  switch (method) {
    case AttackMethod::pbfa:
      return "pbfa";
    case AttackMethod::random:
      return "random";
  }
  throw Error(fmt::format("invalid attack method {}", static_cast<int>(method)));
}

nlohmann::json BitFlip::to_json() const {
  nlohmann::json json = {{"layer", layer},
                         {"index", index},
                         {"bit", bit},
                         {"old_value", old_value},
                         {"new_value", new_value}};
  json["loss_after"] = std::isfinite(loss_after) ? nlohmann::json(loss_after) : nlohmann::json();
  return json;
}

BitFlip BitFlip::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object() && json.contains("layer") && json.contains("index") &&
                    json.contains("bit") && json.contains("old_value") &&
                    json.contains("new_value"),
                "a bit flip must be an object with layer, index, bit, old_value, new_value; got {}",
                json.dump());
  BitFlip flip;
  try {
    flip.layer = json.at("layer").get<std::string>();
    flip.index = json.at("index").get<int64_t>();
    flip.bit = json.at("bit").get<int>();
    flip.old_value = json.at("old_value").get<int32_t>();
    flip.new_value = json.at("new_value").get<int32_t>();
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "bad bit flip {}: {}", json.dump(), e.what());
  }
  flip.loss_after = json.contains("loss_after") && json["loss_after"].is_number()
                        ? json["loss_after"].get<double>()
                        : std::numeric_limits<double>::quiet_NaN();
  return flip;
}

Pbfa::Pbfa(QuantizedModel& model, torch::Tensor images, PbfaOptions options)
    : model_(model), images_(std::move(images)), options_(options) {
  TESSERA_CHECK(model_.model && !model_.weights.empty(), "PBFA needs a quantized model");
  TESSERA_CHECK(images_.defined() && images_.dim() == 4 && images_.size(0) > 0,
                "PBFA attack batch must be [B, C, H, W] with B > 0, got {}",
                images_.defined() ? c10::str(images_.sizes()) : "undefined");
  TESSERA_CHECK(options_.max_bits_per_iteration >= 1, "max_bits_per_iteration must be >= 1, got {}",
                options_.max_bits_per_iteration);
  images_ = images_.to(torch::kFloat32).contiguous();
  // Labels are the model's own predictions, fixed for the whole attack (3.2 step 1).
  labels_ = model_.predict(images_).argmax(1);
}

double Pbfa::batch_agreement() {
  return model_.predict(images_).argmax(1).eq(labels_).to(torch::kFloat64).mean().item<double>();
}

double Pbfa::loss() {
  torch::NoGradGuard no_grad;
  model_.model->eval();
  return torch::cross_entropy_loss(model_.model->forward(images_), labels_).item<double>();
}

std::vector<Pbfa::Candidate> Pbfa::rank_layer(size_t layer, const torch::Tensor& grad,
                                              int64_t n) const {
  const auto& q = model_.weights[layer];
  const int64_t numel = q.numel();
  const int64_t k = options_.k_top <= 0 ? numel : std::min(options_.k_top, numel);
  if (k == 0) return {};
  // Gradient with respect to the integer weight: dL/dw_int = dL/dw * step.
  const torch::Tensor flat = grad.flatten().to(torch::kFloat64) * q.step;
  const torch::Tensor top = std::get<1>(flat.abs().topk(k)).contiguous();
  const int64_t* top_ptr = top.data_ptr<int64_t>();
  const double* grad_ptr = flat.data_ptr<double>();
  struct Scored {
    Candidate candidate;
    double score;
  };
  std::vector<Scored> scored;
  scored.reserve(static_cast<size_t>(k * q.bits));
  for (int64_t t = 0; t < k; ++t) {
    const int64_t index = top_ptr[t];
    const uint32_t code = quant::to_twos_complement(value_at(q, index), q.bits);
    for (int bit = 0; bit < q.bits; ++bit) {
      // g = dL/dw * b_w; flipping 0->1 raises the loss (to first order) only if g > 0 and
      // 1->0 only if g < 0, i.e. the mask is bit XOR [g > 0] (3.2 step 3c).
      const double g = grad_ptr[index] * bit_weight(bit, q.bits);
      const bool current = ((code >> bit) & 1u) != 0;
      const bool useful = current != (g > 0);
      if (useful && g != 0.0) scored.push_back({{index, bit}, std::abs(g)});
    }
  }
  std::stable_sort(scored.begin(), scored.end(),
                   [](const Scored& a, const Scored& b) { return a.score > b.score; });
  std::vector<Candidate> out;
  for (size_t i = 0; i < scored.size() && static_cast<int64_t>(i) < n; ++i)
    out.push_back(scored[i].candidate);
  return out;
}

double Pbfa::trial_loss(size_t layer, const std::vector<Candidate>& candidates) {
  auto& q = model_.weights[layer];
  std::vector<std::pair<int64_t, int32_t>> saved;
  for (const auto& c : candidates) saved.emplace_back(c.index, value_at(q, c.index));
  for (const auto& c : candidates) {
    q.flip_bit(c.index, c.bit);
    model_.sync_element(layer, c.index);
  }
  const double trial = loss();
  // Restore in reverse so that repeated indices end at their original value.
  for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
    q.values.data_ptr<int32_t>()[it->first] = it->second;
    model_.sync_element(layer, it->first);
  }
  return trial;
}

std::vector<BitFlip> Pbfa::step() {
  const size_t n_layers = model_.weights.size();
  // Gradients of the attack-batch loss with respect to every quantized weight (3.2 step 2).
  std::vector<torch::Tensor> grads(n_layers);
  double base_loss = 0.0;
  {
    model_.model->eval();
    model_.model->zero_grad();
    for (size_t l = 0; l < n_layers; ++l) model_.parameter(l).set_requires_grad(true);
    torch::Tensor loss_tensor = torch::cross_entropy_loss(model_.model->forward(images_), labels_);
    base_loss = loss_tensor.item<double>();
    loss_tensor.backward();
    for (size_t l = 0; l < n_layers; ++l) {
      const torch::Tensor grad = model_.parameter(l).grad();
      grads[l] =
          grad.defined() ? grad.detach().clone() : torch::zeros_like(model_.parameter(l)).detach();
    }
    model_.model->zero_grad();
  }
  // Grow the number of bits until some layer's candidate raises the loss (3.2 step 3).
  double best_loss = -std::numeric_limits<double>::infinity();
  size_t best_layer = 0;
  std::vector<Candidate> best_candidates;
  for (int64_t n_bits = 1; n_bits <= options_.max_bits_per_iteration; ++n_bits) {
    for (size_t l = 0; l < n_layers; ++l) {
      const auto candidates = rank_layer(l, grads[l], n_bits);
      if (candidates.empty()) continue;
      const double trial = trial_loss(l, candidates);
      // Strict '>' keeps the earliest layer on ties (argmax order).
      if (trial > best_loss) {
        best_loss = trial;
        best_layer = l;
        best_candidates = candidates;
      }
    }
    if (best_loss > base_loss) break;
  }
  TESSERA_CHECK(!best_candidates.empty(),
                "PBFA found no flippable bit: every quantized weight gradient is zero");
  last_step_.loss_before = base_loss;
  last_step_.loss_after = best_loss;
  last_step_.n_bits = static_cast<int64_t>(best_candidates.size());
  last_step_.raised = best_loss > base_loss;
  // Commit the winning layer's flips (3.2 step 4).
  std::vector<BitFlip> flips;
  auto& q = model_.weights[best_layer];
  for (const auto& c : best_candidates) {
    BitFlip flip;
    flip.layer = q.name;
    flip.index = c.index;
    flip.bit = c.bit;
    flip.old_value = value_at(q, c.index);
    q.flip_bit(c.index, c.bit);
    flip.new_value = value_at(q, c.index);
    flip.loss_after = best_loss;
    model_.sync_element(best_layer, c.index);
    flips.push_back(flip);
  }
  return flips;
}

BitFlip random_flip(QuantizedModel& model, std::mt19937_64& rng) {
  TESSERA_CHECK(!model.weights.empty(), "random_flip: the model has no quantized layers");
  const size_t layer = static_cast<size_t>(random::uniform_below(rng, model.weights.size()));
  auto& q = model.weights[layer];
  TESSERA_CHECK(q.numel() > 0, "random_flip: layer '{}' is empty", q.name);
  BitFlip flip;
  flip.layer = q.name;
  flip.index = static_cast<int64_t>(random::uniform_below(rng, static_cast<uint64_t>(q.numel())));
  flip.bit = static_cast<int>(random::uniform_below(rng, static_cast<uint64_t>(q.bits)));
  flip.old_value = value_at(q, flip.index);
  q.flip_bit(flip.index, flip.bit);
  flip.new_value = value_at(q, flip.index);
  flip.loss_after = std::numeric_limits<double>::quiet_NaN();
  model.sync_element(layer, flip.index);
  return flip;
}

void apply_flips(QuantizedModel& model, const std::vector<BitFlip>& flips) {
  // Validate every flip against the evolving state first, so a bad list changes nothing.
  std::vector<std::pair<size_t, int32_t>> planned;
  std::map<std::pair<size_t, int64_t>, int32_t> current;
  for (const auto& flip : flips) {
    const size_t layer = model.layer_index(flip.layer);
    const auto& q = model.weights[layer];
    TESSERA_CHECK(flip.index >= 0 && flip.index < q.numel(),
                  "flip index {} out of range for layer '{}' with {} weights", flip.index,
                  flip.layer, q.numel());
    TESSERA_CHECK(flip.bit >= 0 && flip.bit < q.bits, "flip bit {} out of range for {}-bit '{}'",
                  flip.bit, q.bits, flip.layer);
    const auto key = std::make_pair(layer, flip.index);
    auto found = current.find(key);
    const int32_t value = found != current.end() ? found->second : value_at(q, flip.index);
    TESSERA_CHECK(value == flip.old_value,
                  "flip of '{}'[{}] bit {} expects old value {} but the model holds {}: the flips "
                  "were recorded on another model",
                  flip.layer, flip.index, flip.bit, flip.old_value, value);
    const uint32_t code =
        quant::to_twos_complement(value, q.bits) ^ (uint32_t{1} << static_cast<unsigned>(flip.bit));
    current[key] = quant::from_twos_complement(code, q.bits);
  }
  for (const auto& flip : flips) {
    const size_t layer = model.layer_index(flip.layer);
    model.weights[layer].flip_bit(flip.index, flip.bit);
    model.sync_element(layer, flip.index);
  }
}

AttackResult run_attack(QuantizedModel& model, const torch::Tensor& attack_images,
                        const data::Dataset* eval_set, const AttackOptions& options,
                        const std::function<void(const BitFlip&, double)>& on_flip) {
  TESSERA_CHECK(options.n_flips >= 0, "number of flips must be >= 0, got {}", options.n_flips);
  AttackResult result;
  auto record = [&](const std::vector<BitFlip>& flips) {
    const double accuracy = eval_set != nullptr ? evaluate(model, *eval_set).accuracy : -1.0;
    for (const auto& flip : flips) {
      result.flips.push_back(flip);
      if (eval_set != nullptr) result.accuracy_after.push_back(accuracy);
      if (on_flip) on_flip(flip, accuracy);
    }
  };
  if (options.method == AttackMethod::pbfa) {
    if (options.n_flips == 0) return result;
    Pbfa attack(model, attack_images, options.pbfa);
    while (static_cast<int64_t>(result.flips.size()) < options.n_flips) {
      record(attack.step());
      result.steps.push_back(attack.last_step());
    }
    result.batch_agreement = attack.batch_agreement();
  } else {
    std::mt19937_64 rng(options.seed);
    while (static_cast<int64_t>(result.flips.size()) < options.n_flips)
      record({random_flip(model, rng)});
  }
  return result;
}

}  // namespace tessera::bitflip
