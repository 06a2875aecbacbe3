// Mixed-precision fake quantization of a Tessera model, calibration, QAT through train::fit.
#include "tessera/fpga/bench_accuracy.h"

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/quant.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/models/blocks.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"

namespace tessera::fpga {

namespace {

// Fake quantization: unsigned [0, clip] on 2^b - 1 levels, or signed [-clip, clip].
torch::Tensor fake_quantize(const torch::Tensor& x, int bits, double clip, bool is_signed) {
  if (bits <= 0 || clip <= 0.0) return x;
  const double levels = is_signed ? std::pow(2.0, bits - 1) - 1 : std::pow(2.0, bits) - 1;
  const double step = clip / levels;
  const torch::Tensor clipped = torch::clamp(x, is_signed ? -clip : 0.0, clip);
  const torch::Tensor q = torch::round(clipped / step) * step;
  return clipped + (q - clipped).detach();  // straight-through inside the clip range
}

// The clip among fractions of max|x| with the lowest quantization MSE on a sample of x.
double best_clip(const torch::Tensor& x, int bits, bool is_signed) {
  const torch::Tensor flat = x.detach().flatten().slice(0, 0, 200000);
  const double top = flat.abs().max().item<double>();
  if (bits <= 0 || top <= 0.0) return top;
  double best = top, best_err = INFINITY;
  for (int f = 100; f >= 20; f -= 5) {
    const double clip = top * f / 100.0;
    const double err =
        (fake_quantize(flat, bits, clip, is_signed) - flat).pow(2).mean().item<double>();
    if (err < best_err) best_err = err, best = clip;
  }
  return best;
}

// Channels whose weights lose least at `bits` (per-channel relative error): the LUT share
// (the repository ranks by KL divergence; a squared-error ranking is ASSUMED here).
torch::Tensor lut_channel_mask(const torch::Tensor& weight, int64_t n_lut, int bits) {
  const int64_t n = weight.size(0);
  torch::Tensor mask = torch::zeros({n});
  if (n_lut <= 0) return mask;
  if (n_lut >= n) return torch::ones({n});
  std::vector<std::pair<double, int64_t>> errors;
  for (int64_t c = 0; c < n; ++c) {
    const torch::Tensor w = weight[c].detach();
    const double norm = w.pow(2).sum().item<double>();
    const torch::Tensor q = quant::quantize("c", w, std::max(2, bits)).dequantize();
    errors.push_back({norm > 0 ? (q - w).pow(2).sum().item<double>() / norm : 0.0, c});
  }
  std::sort(errors.begin(), errors.end());
  for (int64_t i = 0; i < n_lut; ++i) mask[errors[static_cast<size_t>(i)].second] = 1.0;
  return mask;
}

// The weights of one share quantized as one tensor (core/quant, per layer), zero elsewhere.
torch::Tensor quantized_share(const torch::Tensor& weight, const torch::Tensor& rows, int bits) {
  if (rows.numel() == 0) return torch::zeros_like(weight);
  torch::Tensor out = torch::zeros_like(weight);
  const torch::Tensor part = weight.index_select(0, rows);
  const torch::Tensor q = bits > 0 ? quant::quantize("share", part, bits).dequantize() : part;
  out.index_copy_(0, rows, q);
  return out;
}

torch::Tensor activate(const torch::Tensor& x, models::Activation activation) {
  switch (activation) {
    case models::Activation::ReLU:
      return torch::relu(x);
    case models::Activation::ReLU6:
      return torch::hardtanh(x, 0.0, 6.0);
    case models::Activation::None:
      break;
  }
  return x;
}

}  // namespace

std::vector<LayerQuantPlan> quant_plan(const std::vector<GemmShape>& gemms, const Design& design,
                                       const DesignEvaluation& evaluation) {
  std::vector<LayerQuantPlan> plan;
  for (size_t i = 0; i < gemms.size(); ++i) {
    LayerQuantPlan p;
    p.name = gemms[i].name;
    p.lut_ratio = evaluation.latency.layers[i].lut_cols / static_cast<double>(gemms[i].n);
    p.lut_weight_bits = design.precisions[i].weight_bits;
    p.lut_activation_bits = design.precisions[i].activation_bits;
    p.dsp_bits = dsp_share_bits(gemms[i], design.spec.dsp);
    plan.push_back(p);
  }
  return plan;
}

MixedPrecisionModel::MixedPrecisionModel(models::Model model, std::vector<LayerQuantPlan> plan)
    : model_(std::move(model)), plan_(std::move(plan)) {
  auto params = model_->named_parameters();
  for (size_t i = 0; i < plan_.size(); ++i) {
    const LayerQuantPlan& p = plan_[i];
    const std::string key = p.name + ".weight";
    TESSERA_CHECK(params.contains(key), "fpga accuracy: the model has no parameter '{}'", key);
    LayerState s;
    s.plan = p;
    s.weight = params[key];
    const int64_t n = s.weight.size(0);
    s.lut_mask = lut_channel_mask(s.weight, static_cast<int64_t>(std::llround(p.lut_ratio * n)),
                                  p.lut_weight_bits);
    s.signed_input = i == 0;
    layers_.push_back(s);
  }
}

torch::Tensor MixedPrecisionModel::quantized_input(LayerState& layer, const torch::Tensor& x,
                                                   bool lut_share) {
  const int bits = lut_share ? layer.plan.lut_activation_bits : layer.plan.dsp_bits;
  double& clip = lut_share ? layer.lut_clip : layer.dsp_clip;
  if (calibrating_) clip = best_clip(x, bits, layer.signed_input);
  return fake_quantize(x, bits, clip, layer.signed_input);
}

torch::Tensor MixedPrecisionModel::weighted(const std::string& name, torch::nn::Module& module,
                                            const torch::Tensor& x) {
  auto it = std::find_if(layers_.begin(), layers_.end(),
                         [&](const LayerState& s) { return s.plan.name == name; });
  TESSERA_CHECK(it != layers_.end(), "fpga accuracy: no plan for layer '{}'", name);
  const auto run = [&](const torch::Tensor& input) {
    if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(&module)) return conv->forward(input);
    auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module);
    TESSERA_CHECK(linear != nullptr, "fpga accuracy: layer '{}' is not conv or linear", name);
    return linear->forward(input);
  };
  const double lut_share = it->lut_mask.mean().item<double>();
  if (lut_share >= 1.0) return run(quantized_input(*it, x, true));
  if (lut_share <= 0.0) return run(quantized_input(*it, x, false));
  // Both cores: each share of the output channels sees its own input precision.
  const torch::Tensor lut_out = run(quantized_input(*it, x, true));
  const torch::Tensor dsp_out = run(quantized_input(*it, x, false));
  std::vector<int64_t> shape(static_cast<size_t>(lut_out.dim()), 1);
  shape[1] = lut_out.size(1);
  const torch::Tensor m = it->lut_mask.view(shape);
  return lut_out * m + dsp_out * (1 - m);
}

torch::Tensor MixedPrecisionModel::conv_bn_act(const std::string& prefix, torch::nn::Module& unit,
                                               torch::Tensor x) {
  auto* cba = dynamic_cast<models::ConvBnActImpl*>(&unit);
  TESSERA_CHECK(cba != nullptr, "fpga accuracy: '{}' is not a conv unit", prefix);
  x = cba->bn(weighted(prefix + ".conv", *cba->conv, x));
  return activate(x, cba->options.activation());
}

torch::Tensor MixedPrecisionModel::forward(const torch::Tensor& input) {
  torch::Tensor x = input;
  for (size_t index = 0; index < model_->n_units(); ++index) {
    const models::Unit& unit = model_->units()[index];
    torch::nn::Module& m = *unit.module.ptr();
    if (unit.kind == "conv") {
      x = conv_bn_act(unit.name, m, x);
    } else if (unit.kind == "block") {
      auto* block = dynamic_cast<models::BasicBlockImpl*>(&m);
      TESSERA_CHECK(block != nullptr, "fpga accuracy: block '{}' is not a BasicBlock", unit.name);
      torch::Tensor out = conv_bn_act(unit.name + ".conv2", *block->conv2,
                                      conv_bn_act(unit.name + ".conv1", *block->conv1, x));
      torch::Tensor identity = x;
      if (block->shortcut) {
        identity = conv_bn_act(unit.name + ".shortcut", *block->shortcut, x);
      } else if (block->has_projection()) {
        // Option A as in models::BasicBlockImpl: subsample, then zero channels.
        const auto& o = block->options;
        if (o.stride() != 1) identity = torch::avg_pool2d(identity, 1, o.stride());
        const int64_t missing = o.out_channels() - o.in_channels();
        if (missing > 0) {
          auto sizes = identity.sizes().vec();
          sizes[1] = missing;
          identity = torch::cat({identity, torch::zeros(sizes, identity.options())}, 1);
        }
      }
      x = torch::relu(out + identity);
    } else if (unit.kind == "fc") {
      auto* fc = dynamic_cast<models::FcBlockImpl*>(&m);
      TESSERA_CHECK(fc != nullptr, "fpga accuracy: '{}' is not an fc unit", unit.name);
      if (fc->dropout) x = fc->dropout(x);
      x = weighted(unit.name + ".linear", *fc->linear, x);
      if (fc->options.relu()) x = torch::relu(x);
    } else if (unit.kind == "pool" || unit.kind == "flatten") {
      x = model_->forward_units(x, index, index + 1);
    } else {
      TESSERA_CHECK(false, "fpga accuracy: unit '{}' of kind '{}' is not supported", unit.name,
                    unit.kind);
    }
  }
  return x;
}

void MixedPrecisionModel::calibrate(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  const bool was_training = model_->is_training();
  model_->eval();
  calibrating_ = true;
  forward(images);
  calibrating_ = false;
  model_->train(was_training);
}

void MixedPrecisionModel::quantize_weights() {
  torch::NoGradGuard no_grad;
  for (LayerState& s : layers_) {
    s.master = s.weight.detach().clone();
    const torch::Tensor lut_rows = s.lut_mask.nonzero().flatten();
    const torch::Tensor dsp_rows = (s.lut_mask == 0).nonzero().flatten();
    s.weight.copy_(quantized_share(s.master, lut_rows, s.plan.lut_weight_bits) +
                   quantized_share(s.master, dsp_rows, s.plan.dsp_bits));
  }
}

void MixedPrecisionModel::restore_weights() {
  torch::NoGradGuard no_grad;
  for (LayerState& s : layers_) {
    if (s.master.defined()) s.weight.copy_(s.master);
  }
}

void AccuracyOptions::validate() const {
  TESSERA_CHECK(fine_tune_steps >= 0, "fpga accuracy: fine_tune_steps {} < 0", fine_tune_steps);
  TESSERA_CHECK(batch_size >= 1, "fpga accuracy: batch_size {} < 1", batch_size);
  TESSERA_CHECK(lr > 0, "fpga accuracy: lr {} must be > 0", lr);
  TESSERA_CHECK(calibration_images >= 1, "fpga accuracy: calibration_images {} < 1",
                calibration_images);
  TESSERA_CHECK(test_images >= 0, "fpga accuracy: test_images {} < 0", test_images);
}

nlohmann::json AccuracyOptions::to_json() const {
  return {{"fine_tune_steps", fine_tune_steps},       {"batch_size", batch_size},   {"lr", lr},
          {"calibration_images", calibration_images}, {"test_images", test_images}, {"seed", seed}};
}

AccuracyResult quantized_accuracy(models::Model& model, const std::vector<LayerQuantPlan>& plan,
                                  const data::Dataset& train_set, const data::Dataset& test_set,
                                  const AccuracyOptions& options) {
  options.validate();
  Timer timer;
  seed_everything(options.seed);
  MixedPrecisionModel mixed(models::clone(model), plan);
  const data::Dataset test = options.test_images > 0
                                 ? test_set.head(std::min(options.test_images, test_set.size()))
                                 : test_set;
  const auto forward = [&](const torch::Tensor& x) { return mixed.forward(x); };
  const auto eval_quantized = [&] {
    mixed.model()->eval();
    torch::NoGradGuard no_grad;
    mixed.quantize_weights();
    const train::EvalResult r = train::evaluate(forward, test);
    mixed.restore_weights();
    return r;
  };
  mixed.quantize_weights();
  mixed.calibrate(
      train_set.images.slice(0, 0, std::min(options.calibration_images, train_set.size())));
  mixed.restore_weights();
  AccuracyResult result;
  result.ptq_accuracy = eval_quantized().accuracy;
  if (options.fine_tune_steps > 0) {
    train::TrainOptions t;
    t.steps = options.fine_tune_steps;
    t.batch_size = options.batch_size;
    t.lr = options.lr;
    t.weight_decay = 0.0;
    t.per_step_schedule = true;
    t.schedule = "cosine";
    t.seed = options.seed;
    t.progress_label = "fpga QAT";
    train::TrainHooks hooks;
    // The straight-through estimator: forward/backward at the quantized weights, then the
    // float masters take the update.
    hooks.before_step = [&](int64_t) { mixed.quantize_weights(); };
    hooks.after_backward = [&](int64_t) { mixed.restore_weights(); };
    train::fit(*mixed.model(), forward, train_set, nullptr, t, hooks);
  }
  const train::EvalResult final_eval = eval_quantized();
  result.accuracy = final_eval.accuracy;
  result.n = final_eval.n;
  result.seconds = timer.elapsed_s();
  return result;
}

}  // namespace tessera::fpga
