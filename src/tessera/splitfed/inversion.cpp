// Model-inversion attacks: decoders, training-based and optimisation-based MI (see inversion.h).
#include "tessera/splitfed/inversion.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/ranges.h>

#include <limits>
#include <regex>

#include "tessera/core/error.h"
#include "tessera/core/image.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/train/train.h"

namespace tessera::splitfed {

namespace nn = torch::nn;

void DecoderSpec::validate() const {
  TESSERA_CHECK(depth >= 0 && depth <= 16 && channels >= 1 && channels <= 1024,
                "decoder '{}': N must be in [0, 16] and C in [1, 1024]", decoder_name(*this));
}

bool DecoderSpec::operator==(const DecoderSpec& other) const {
  return kind == other.kind && depth == other.depth && channels == other.channels;
}

const std::vector<DecoderSpec>& decoder_suite() {
  static const std::vector<DecoderSpec> suite = {{DecoderKind::conv, 0, 16},
                                                 {DecoderKind::residual, 0, 16},
                                                 {DecoderKind::residual, 2, 32},
                                                 {DecoderKind::residual, 4, 64}};
  return suite;
}

std::string decoder_name(const DecoderSpec& spec) {
  return fmt::format("{}_normN{}C{}", spec.kind == DecoderKind::conv ? "conv" : "res", spec.depth,
                     spec.channels);
}

DecoderSpec parse_decoder(const std::string& name) {
  static const std::regex pattern("(conv|res)_normN([0-9]+)C([0-9]+)");
  std::smatch m;
  std::vector<std::string> suite;
  for (const auto& spec : decoder_suite()) suite.push_back(decoder_name(spec));
  TESSERA_CHECK(
      std::regex_match(name, m, pattern) && m[2].length() <= 3 && m[3].length() <= 5,
      "unknown decoder '{}' (known: conv_normN{{N}}C{{c}} or res_normN{{N}}C{{c}}, e.g. {})", name,
      fmt::join(suite, ", "));
  DecoderSpec spec;
  spec.kind = m[1] == "res" ? DecoderKind::residual : DecoderKind::conv;
  spec.depth = std::stoll(m[2]);
  spec.channels = std::stoll(m[3]);
  spec.validate();
  return spec;
}

PreActBlockImpl::PreActBlockImpl(int64_t in, int64_t out) {
  body_ = register_module(
      "body", nn::Sequential(nn::BatchNorm2d(in), nn::ReLU(),
                             nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1).bias(false)),
                             nn::BatchNorm2d(out), nn::ReLU(),
                             nn::Conv2d(nn::Conv2dOptions(out, out, 3).padding(1).bias(false))));
  if (in != out) {
    shortcut_ = register_module(
        "shortcut", nn::Sequential(nn::Conv2d(nn::Conv2dOptions(in, out, 1).bias(false)),
                                   nn::BatchNorm2d(out)));
  }
}

torch::Tensor PreActBlockImpl::forward(const torch::Tensor& x) {
  return body_->forward(x) + (shortcut_ ? shortcut_->forward(x) : x);
}

namespace {

void conv_bn_relu(nn::Sequential& net, int64_t in, int64_t out) {
  net->push_back(nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1)));
  net->push_back(nn::BatchNorm2d(out));
  net->push_back(nn::ReLU());
}

}  // namespace

DecoderImpl::DecoderImpl(const DecoderSpec& spec, const std::vector<int64_t>& smashed_shape,
                         const std::vector<int64_t>& image_shape)
    : spec_(spec) {
  spec.validate();
  const std::string name = decoder_name(spec);
  TESSERA_CHECK(smashed_shape.size() == 3,
                "decoder '{}': smashed data {} is not [C, H, W] (cut before the flatten)", name,
                fmt::join(smashed_shape, "x"));
  TESSERA_CHECK(image_shape.size() == 3 && image_shape[1] == image_shape[2],
                "decoder '{}': image shape {} is not [C, S, S]", name, fmt::join(image_shape, "x"));
  const int64_t hz = smashed_shape[1], s = image_shape[1];
  int64_t u = 0;
  while ((hz << u) < s) ++u;
  TESSERA_CHECK(smashed_shape[1] == smashed_shape[2] && (hz << u) == s,
                "decoder '{}': image side {} is not a power-of-two multiple of the smashed {}x{}",
                name, s, smashed_shape[1], smashed_shape[2]);
  const int64_t c = spec.channels, cz = smashed_shape[0], out = image_shape[0];
  net_ = nn::Sequential();
  // Head and N extra blocks at the smashed resolution (research/sfl.md 3.1).
  if (spec.kind == DecoderKind::residual) {
    net_->push_back(PreActBlock(cz, c));
    for (int64_t i = 0; i < spec.depth; ++i) net_->push_back(PreActBlock(c, c));
  } else {
    conv_bn_relu(net_, cz, c);
    for (int64_t i = 0; i < spec.depth; ++i) conv_bn_relu(net_, c, c);
  }
  // max(2, u) stages: ConvTranspose3x3 s2 while up-sampling is still needed, else Conv3x3.
  for (int64_t stage = 0; stage < std::max<int64_t>(2, u); ++stage) {
    if (stage < u) {
      net_->push_back(nn::ConvTranspose2d(
          nn::ConvTranspose2dOptions(c, c, 3).stride(2).padding(1).output_padding(1)));
      net_->push_back(nn::BatchNorm2d(c));
      net_->push_back(nn::ReLU());
    } else if (spec.kind == DecoderKind::residual) {
      net_->push_back(PreActBlock(c, c));
    } else {
      conv_bn_relu(net_, c, c);
    }
  }
  if (spec.kind == DecoderKind::residual) {
    net_->push_back(PreActBlock(c, out));
  } else {
    net_->push_back(nn::Conv2d(nn::Conv2dOptions(c, out, 3).padding(1)));
    net_->push_back(nn::BatchNorm2d(out));
  }
  net_->push_back(nn::Sigmoid());
  register_module("net", net_);
}

torch::Tensor DecoderImpl::forward(const torch::Tensor& z) { return net_->forward(z); }

void InversionOptions::validate() const {
  decoder.validate();
  TESSERA_CHECK(epochs >= 1, "inversion epochs {} must be >= 1", epochs);
  TESSERA_CHECK(batch_size >= 2, "inversion batch size {} must be >= 2 (BN)", batch_size);
  TESSERA_CHECK(lr > 0.0, "inversion learning rate {} must be positive", lr);
  TESSERA_CHECK(val_fraction >= 0.0 && val_fraction < 1.0,
                "inversion validation fraction {} must be in [0, 1)", val_fraction);
  TESSERA_CHECK(patience >= 0, "inversion patience {} must be >= 0", patience);
}

void OptimizationInversionOptions::validate() const {
  TESSERA_CHECK(steps >= 1, "optimisation-based MI steps {} must be >= 1", steps);
  TESSERA_CHECK(lr > 0.0, "optimisation-based MI learning rate {} must be positive", lr);
  TESSERA_CHECK(batch_size >= 1, "optimisation-based MI batch size {} must be >= 1", batch_size);
}

nlohmann::json InversionMetrics::to_json() const {
  return {{"mse", mse}, {"ssim", ssim}, {"psnr", psnr}};
}

nlohmann::json InversionResult::to_json() const {
  return {{"attack", attack},
          {"metrics", metrics.to_json()},
          {"seconds", seconds},
          {"val_curve", val_curve}};
}

torch::Tensor smashed_of(ClientSide& client, const torch::Tensor& images,
                         const SmashedTransform& transform) {
  const bool was_training = client->is_training();
  client->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < images.size(0); i += 256) {
    torch::Tensor z = client->forward(images.slice(0, i, std::min(i + 256, images.size(0))));
    parts.push_back(transform ? transform(z) : z);
  }
  client->train(was_training);
  return torch::cat(parts);
}

InversionMetrics measure_inversion(const torch::Tensor& reconstructions,
                                   const torch::Tensor& originals) {
  torch::NoGradGuard no_grad;
  InversionMetrics m;
  const torch::Tensor r = reconstructions.to(torch::kFloat64), o = originals.to(torch::kFloat64);
  m.mse = image::mse(r, o).item<double>();
  m.ssim = image::ssim(r, o).item<double>();
  m.psnr = image::psnr(m.mse);
  return m;
}

namespace {

torch::Tensor decode_all(Decoder& decoder, const torch::Tensor& z) {
  decoder->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < z.size(0); i += 256) {
    parts.push_back(decoder->forward(z.slice(0, i, std::min(i + 256, z.size(0)))));
  }
  return torch::cat(parts);
}

}  // namespace

Decoder train_decoder(ClientSide& client, const torch::Tensor& aux_images,
                      const InversionOptions& options, std::vector<double>* val_curve) {
  options.validate();
  TESSERA_CHECK(aux_images.dim() == 4 && aux_images.size(0) >= 4,
                "the attacker's auxiliary data needs at least 4 images [N, C, H, W]");
  const torch::Tensor z = smashed_of(client, aux_images);
  seed_everything(options.seed);
  std::vector<int64_t> image_shape(aux_images.sizes().begin() + 1, aux_images.sizes().end());
  std::vector<int64_t> smashed_shape(z.sizes().begin() + 1, z.sizes().end());
  Decoder decoder(options.decoder, smashed_shape, image_shape);
  const int64_t n = aux_images.size(0);
  const int64_t n_val = std::min<int64_t>(n - 2, std::llround(options.val_fraction * n));
  const int64_t n_train = n - n_val;
  train::TrainOptions t;
  t.optimizer = "adam";
  t.lr = options.lr;
  t.weight_decay = 0.0;
  t.schedule = "constant";
  t.epochs = options.epochs;
  t.progress_label = "decoder";
  double best_val = std::numeric_limits<double>::infinity();
  int64_t since_best = 0;  // epochs since the best validation MSE
  State best;
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed + 5);
  train::fit_epochs(
      *decoder, t,
      [&](int64_t, const train::StepFn& step) {
        const torch::Tensor order = torch::randperm(n_train, gen, torch::kInt64);
        for (int64_t i = 0; i + 1 < n_train; i += options.batch_size) {
          // A last batch of one sample would break BN: it is skipped.
          const torch::Tensor idx = order.slice(0, i, std::min(i + options.batch_size, n_train));
          if (idx.size(0) < 2) continue;
          step(image::mse(decoder->forward(z.index_select(0, idx)),
                          aux_images.index_select(0, idx)));
        }
      },
      [&](const train::EpochStats&) {
        if (n_val == 0) return true;
        const double val =
            image::mse(decode_all(decoder, z.slice(0, n_train)), aux_images.slice(0, n_train))
                .item<double>();
        if (val_curve != nullptr) val_curve->push_back(val);
        if (val < best_val) {
          best_val = val;
          best = get_state(*decoder);
          since_best = 0;
        } else {
          ++since_best;
        }
        return options.patience == 0 || since_best < options.patience;
      });
  if (!best.empty()) load_state(*decoder, best);
  decoder->eval();
  return decoder;
}

InversionResult attack_training(ClientSide& client, const torch::Tensor& aux_images,
                                const torch::Tensor& targets, const InversionOptions& options,
                                const SmashedTransform& transform) {
  Timer timer;
  InversionResult result;
  Decoder decoder = train_decoder(client, aux_images, options, &result.val_curve);
  result.attack = decoder_name(options.decoder);
  result.reconstructions = decode_all(decoder, smashed_of(client, targets, transform));
  result.metrics = measure_inversion(result.reconstructions, targets);
  result.seconds = timer.elapsed_s();
  return result;
}

InversionResult attack_optimization(ClientSide& client, const torch::Tensor& targets,
                                    const OptimizationInversionOptions& options,
                                    const SmashedTransform& transform) {
  options.validate();
  Timer timer;
  const torch::Tensor observed = smashed_of(client, targets, transform);
  const bool was_training = client->is_training();
  client->eval();
  std::vector<bool>
  requires;
  for (auto& p : client->parameters()) {
    requires.push_back(p.requires_grad());
    p.requires_grad_(false);
  }
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < targets.size(0); i += options.batch_size) {
    const int64_t end = std::min(i + options.batch_size, targets.size(0));
    // RECONSTRUCTED: grey start (the paper starts at 0). With a bias-free conv and an untrained BN
    // the black image gives pre-activations of exactly 0, where ReLU passes no gradient.
    torch::Tensor x = torch::full_like(targets.slice(0, i, end), 0.5).requires_grad_(true);
    const torch::Tensor z = observed.slice(0, i, end);
    torch::optim::Adam optimizer({x},
                                 torch::optim::AdamOptions(options.lr).amsgrad(true).eps(1e-3));
    for (int64_t step = 0; step < options.steps; ++step) {
      optimizer.zero_grad();
      // Sum over the batch of per-image means: every image gets its own MSE gradient.
      const torch::Tensor loss = (client->forward(x) - z).pow(2).flatten(1).mean(1).sum();
      loss.backward();
      optimizer.step();
      torch::NoGradGuard no_grad;
      x.clamp_(0.0, 1.0);
    }
    parts.push_back(x.detach());
  }
  size_t k = 0;
  for (auto& p : client->parameters()) p.requires_grad_(requires[k++]);
  client->train(was_training);
  InversionResult result;
  result.attack = "optimization";
  result.reconstructions = torch::cat(parts);
  result.metrics = measure_inversion(result.reconstructions, targets);
  result.seconds = timer.elapsed_s();
  return result;
}

}  // namespace tessera::splitfed
