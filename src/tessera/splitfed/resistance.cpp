// Attacker-aware training, ResSFL transfer and the baseline defenses (see resistance.h).
#include "tessera/splitfed/resistance.h"

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/image.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"

namespace tessera::splitfed {

const std::vector<DefenseKind>& all_defenses() {
  static const std::vector<DefenseKind> kinds = {
      DefenseKind::none,    DefenseKind::attacker_aware, DefenseKind::ressfl,
      DefenseKind::laplace, DefenseKind::gaussian,       DefenseKind::dropout,
      DefenseKind::topk,    DefenseKind::nopeek,         DefenseKind::bottleneck};
  return kinds;
}

std::string defense_name(DefenseKind kind) {
  switch (kind) {
    case DefenseKind::none:
      return "none";
    case DefenseKind::attacker_aware:
      return "attacker_aware";
    case DefenseKind::ressfl:
      return "ressfl";
    case DefenseKind::laplace:
      return "laplace";
    case DefenseKind::gaussian:
      return "gaussian";
    case DefenseKind::dropout:
      return "dropout";
    case DefenseKind::topk:
      return "topk";
    case DefenseKind::nopeek:
      return "nopeek";
    case DefenseKind::bottleneck:
      return "bottleneck";
  }
  return "none";
}

DefenseKind parse_defense(const std::string& name) {
  std::vector<std::string> names;
  for (const DefenseKind kind : all_defenses()) {
    if (defense_name(kind) == name) return kind;
    names.push_back(defense_name(kind));
  }
  TESSERA_CHECK(false, "unknown defense '{}' (known: {})", name, fmt::join(names, ", "));
  return DefenseKind::none;
}

void DefenseOptions::validate() const {
  TESSERA_CHECK(std::isfinite(lambda) && lambda >= 0.0,
                "lambda {} must be a finite number >= 0 (hinge weight)", lambda);
  TESSERA_CHECK(std::isfinite(tau) && tau >= 0.0 && tau < 1.0,
                "tau {} must be in [0, 1) (SSIM threshold)", tau);
  decoder.validate();
  TESSERA_CHECK(interval >= 1, "decoder interval {} must be >= 1", interval);
  TESSERA_CHECK(inner_steps >= 1, "decoder inner steps {} must be >= 1", inner_steps);
  TESSERA_CHECK(decoder_lr > 0.0, "decoder learning rate {} must be positive", decoder_lr);
  TESSERA_CHECK(decoder_pretrain_epochs >= 0, "decoder pre-training epochs {} must be >= 0",
                decoder_pretrain_epochs);
  TESSERA_CHECK(delta > 0.0 && delta < 1.0, "delta {} must be in (0, 1)", delta);
  const double s = effective_strength();
  TESSERA_CHECK(std::isfinite(s), "defense strength {} must be finite", s);
  if (kind == DefenseKind::dropout || kind == DefenseKind::topk) {
    TESSERA_CHECK(s < 1.0, "{} strength {} must be in (0, 1)", defense_name(kind), s);
  }
}

double DefenseOptions::effective_strength() const {
  if (strength > 0.0) return strength;
  switch (kind) {
    case DefenseKind::laplace:
    case DefenseKind::gaussian:
      return 10.0;
    case DefenseKind::dropout:
      return 0.2;
    case DefenseKind::topk:
      return 0.6;
    case DefenseKind::nopeek:
      return 1.0;
    default:
      return 0.0;
  }
}

nlohmann::json DefenseOptions::to_json() const {
  return {{"name", defense_name(kind)},
          {"lambda", lambda},
          {"tau", tau},
          {"decoder", decoder_name(decoder)},
          {"interval", interval},
          {"hinge_every_batch", hinge_every_batch},
          {"inner_steps", inner_steps},
          {"decoder_lr", decoder_lr},
          {"decoder_pretrain_epochs", decoder_pretrain_epochs},
          {"strength", effective_strength()},
          {"delta", delta},
          {"seed", seed}};
}

SmashedTransform smashed_transform(const DefenseOptions& options, uint64_t stream) {
  options.validate();
  const DefenseKind kind = options.kind;
  if (kind != DefenseKind::laplace && kind != DefenseKind::gaussian &&
      kind != DefenseKind::dropout && kind != DefenseKind::topk) {
    return {};
  }
  const double s = options.effective_strength();
  auto gen = std::make_shared<torch::Generator>(
      at::make_generator<at::CPUGeneratorImpl>(options.seed * 7919 + stream + 1));
  auto mutex = std::make_shared<std::mutex>();
  if (kind == DefenseKind::laplace) {
    const double b = 1.0 / s;  // Laplace(0, 1/eps)
    return [=](const torch::Tensor& z) {
      torch::Tensor u;
      {
        std::lock_guard<std::mutex> lock(*mutex);
        u = torch::rand(z.sizes(), *gen, z.options()) - 0.5;
      }
      // Inverse CDF: -b sign(u) ln(1 - 2|u|).
      const torch::Tensor noise = -b * u.sign() * torch::log1p(-2.0 * u.abs().clamp_max(0.4999999));
      return z + noise;
    };
  }
  if (kind == DefenseKind::gaussian) {
    const double sigma = std::sqrt(2.0 * std::log(1.25 / options.delta)) / s;
    return [=](const torch::Tensor& z) {
      std::lock_guard<std::mutex> lock(*mutex);
      return z + sigma * torch::randn(z.sizes(), *gen, z.options());
    };
  }
  if (kind == DefenseKind::dropout) {
    return [=](const torch::Tensor& z) {
      std::lock_guard<std::mutex> lock(*mutex);
      return z * (torch::rand(z.sizes(), *gen, z.options()) >= s).to(z.dtype());
    };
  }
  return [=](const torch::Tensor& z) {  // topk: keep the largest (1 - ratio) values
    const int64_t n = z.numel();
    const auto k = static_cast<int64_t>(std::floor(s * static_cast<double>(n)));
    if (k <= 0) return z;
    const torch::Tensor order = z.detach().flatten().argsort();
    torch::Tensor mask = torch::ones({n}, z.options());
    mask.index_fill_(0, order.slice(0, 0, k), 0.0);
    return z * mask.view(z.sizes());
  };
}

torch::Tensor ssim_hinge(const torch::Tensor& reconstruction, const torch::Tensor& x, double lambda,
                         double tau) {
  return lambda * torch::relu(image::ssim(reconstruction, x) - tau);
}

torch::Tensor distance_correlation(const torch::Tensor& x, const torch::Tensor& z) {
  TESSERA_CHECK(x.size(0) == z.size(0) && x.size(0) >= 2,
                "distance correlation needs two batches of one size >= 2, got {} and {}", x.size(0),
                z.size(0));
  const auto centred = [](const torch::Tensor& t) {
    const torch::Tensor f = t.flatten(1);
    // Pairwise Euclidean distances; the epsilon keeps sqrt differentiable at 0.
    const torch::Tensor d = ((f.unsqueeze(1) - f.unsqueeze(0)).pow(2).sum(-1) + 1e-12).sqrt();
    return d - d.mean(0, true) - d.mean(1, true) + d.mean();
  };
  const torch::Tensor a = centred(x), b = centred(z);
  const torch::Tensor dcov_xz = (a * b).mean().clamp_min(0.0);
  const torch::Tensor dvar_x = (a * a).mean(), dvar_z = (b * b).mean();
  return (dcov_xz / ((dvar_x * dvar_z).sqrt() + 1e-12)).sqrt();
}

double pretrain_decoder(Decoder& decoder, ClientSide& client, const torch::Tensor& images,
                        int64_t epochs, double lr, uint64_t seed) {
  TESSERA_CHECK(images.dim() == 4 && images.size(0) >= 2,
                "decoder pre-training needs at least 2 images [N, C, H, W]");
  constexpr int64_t kBatch = 64;
  const torch::Tensor z = smashed_of(client, images);
  const int64_t n = images.size(0);
  train::TrainOptions t;
  t.optimizer = "adam";
  t.lr = lr;
  t.weight_decay = 0.0;
  t.schedule = "constant";
  t.epochs = epochs;
  t.progress_label = "decoder pre-training";
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 7);
  decoder->train();
  const auto stats = train::fit_epochs(*decoder, t, [&](int64_t, const train::StepFn& step) {
    const torch::Tensor order = torch::randperm(n, gen, torch::kInt64);
    for (int64_t i = 0; i + 1 < n; i += kBatch) {
      // A last batch of one sample would break BN: it is skipped.
      const torch::Tensor idx = order.slice(0, i, std::min(i + kBatch, n));
      if (idx.size(0) < 2) continue;
      step(-image::ssim(decoder->forward(z.index_select(0, idx)), images.index_select(0, idx)));
    }
  });
  return stats.empty() ? 0.0 : -stats.back().train_loss;
}

DefenseStrategy::DefenseStrategy(DefenseOptions options, uint64_t stream, torch::Tensor own_images)
    : options_(std::move(options)), own_images_(std::move(own_images)) {
  options_.validate();
  TESSERA_CHECK(
      options_.decoder_pretrain_epochs == 0 || !options_.attacker_aware() || own_images_.defined(),
      "decoder pre-training ({} epochs) needs the client's own images, which this "
      "client does not hold before its first step (in-process runs only)",
      options_.decoder_pretrain_epochs);
  transform_ = smashed_transform(options_, stream);
}

bool DefenseStrategy::step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y) {
  Timer timer;
  double exchange_s = 0.0;
  ClientSide& model = context.model;
  const bool aware = options_.attacker_aware();
  if (aware && !decoder_) {
    // Built from the data's shapes, so gRPC clients need no extra configuration. Seeded by the
    // defense seed (the decoder's initial weights are the client's private choice).
    torch::NoGradGuard no_grad;
    const torch::Tensor z = model->forward(x.slice(0, 0, 1));
    std::vector<int64_t> smashed(z.sizes().begin() + 1, z.sizes().end());
    std::vector<int64_t> image(x.sizes().begin() + 1, x.sizes().end());
    seed_everything(options_.seed + 101);
    decoder_ = Decoder(options_.decoder, smashed, image);
    decoder_optimizer_ = std::make_unique<torch::optim::Adam>(
        decoder_->parameters(), torch::optim::AdamOptions(options_.decoder_lr));
  }
  double pretrain_s = 0.0;
  if (aware && options_.decoder_pretrain_epochs > 0 && own_images_.defined()) {
    Timer pretrain_timer;
    pretrain_decoder(decoder_, model, own_images_, options_.decoder_pretrain_epochs,
                     options_.decoder_lr, options_.seed + 103);
    own_images_ = torch::Tensor();  // once, with the model the run starts from
    pretrain_s = pretrain_timer.elapsed_s();
  }
  const bool adversarial = aware && context.batch % options_.interval == 0;
  // 1. Simulated attacker: max_phi SSIM(g(f_c(x)), x) with f_c frozen (3.2 step 1), its features
  // in eval mode as in the reference (no batch statistics, no running-statistics update).
  if (adversarial) {
    decoder_->train();
    const torch::Tensor z = smashed_of(model, x);
    for (int64_t i = 0; i < options_.inner_steps; ++i) {
      decoder_optimizer_->zero_grad();
      const torch::Tensor loss = -image::ssim(decoder_->forward(z), x);
      loss.backward();
      decoder_optimizer_->step();
    }
  }
  // 2. Model step: CE (through the server's dL/dz) + the defense's client-side terms.
  context.optimizer.zero_grad();
  const torch::Tensor z = model->forward(x);
  const torch::Tensor sent = transform_ ? transform_(z) : z;
  Timer exchange_timer;
  const torch::Tensor grad = context.exchange(sent.detach(), y);
  exchange_s = exchange_timer.elapsed_s();
  if (!grad.defined()) return false;
  torch::Tensor loss = (sent * grad).sum();
  if (adversarial || (aware && options_.hinge_every_batch)) {
    // g is fixed here: its gradients are discarded by the next decoder step's zero_grad.
    decoder_->eval();
    const torch::Tensor reconstruction = decoder_->forward(z);
    loss = loss + ssim_hinge(reconstruction, x, options_.lambda, options_.tau);
    std::lock_guard<std::mutex> lock(mutex_);
    last_ssim_ = image::ssim(reconstruction.detach(), x).item<double>();
  }
  if (options_.kind == DefenseKind::nopeek) {
    loss = loss + options_.effective_strength() * distance_correlation(x, z);
  }
  const torch::Tensor penalty = client_weight_penalty(model, context.options);
  if (penalty.defined()) loss = loss + penalty;
  loss.backward();
  context.optimizer.step();
  std::lock_guard<std::mutex> lock(mutex_);
  compute_seconds_ += timer.elapsed_s() - exchange_s - pretrain_s;
  pretrain_seconds_ += pretrain_s;
  ++steps_;
  return true;
}

double DefenseStrategy::compute_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return compute_seconds_;
}

double DefenseStrategy::pretrain_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return pretrain_seconds_;
}

int64_t DefenseStrategy::steps() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return steps_;
}

double DefenseStrategy::last_ssim() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return last_ssim_;
}

nlohmann::json DefendedRun::to_json() const {
  nlohmann::json j = run.to_json();
  j["defended_accuracy"] = accuracy;
  j["client_seconds_per_step"] = client_seconds_per_step;
  return j;
}

double defended_accuracy(ClientSide& client, ServerSide& server, const data::Dataset& test,
                         const SmashedTransform& transform) {
  client->eval();
  server->eval();
  torch::NoGradGuard no_grad;
  return train::evaluate(
             [&](const torch::Tensor& x) {
               const torch::Tensor z = client->forward(x);
               return server->forward(transform ? transform(z) : z);
             },
             test)
      .accuracy;
}

DefendedRun run_defended(const SflOptions& options, const DefenseOptions& defense,
                         const data::Dataset& train, const data::Dataset& test,
                         const std::vector<int64_t>& checkpoint_epochs, const State& initial_client,
                         const State& initial_server) {
  defense.validate();
  TESSERA_CHECK(defense.kind != DefenseKind::bottleneck || options.split.bottleneck_channels > 0,
                "defense 'bottleneck' needs a split with bottleneck channels > 0");
  DefendedRun result;
  const auto wanted = [&](int64_t e) {
    return std::find(checkpoint_epochs.begin(), checkpoint_epochs.end(), e) !=
           checkpoint_epochs.end();
  };
  if (wanted(0)) {
    if (!initial_client.empty()) {
      result.checkpoints.emplace_back(0, initial_client);
    } else {
      seed_everything(options.seed);  // the server's seeded initial model
      result.checkpoints.emplace_back(0,
                                      get_state(*make_split(options.model, options.split).first));
    }
  }
  ServerSettings settings;
  settings.initial_client_state = initial_client;
  settings.initial_server_state = initial_server;
  settings.on_epoch_end = [&](int64_t epoch, const State& state) {
    if (!wanted(epoch + 1)) return;
    State copy;
    for (const auto& [name, t] : state) copy.emplace_back(name, t.clone());
    result.checkpoints.emplace_back(epoch + 1, std::move(copy));
  };
  std::map<int64_t, std::shared_ptr<ClientStrategy>> strategies;
  std::vector<std::shared_ptr<DefenseStrategy>> mine;
  for (int64_t i = 0; i < options.n_clients; ++i) {
    torch::Tensor own;
    if (defense.decoder_pretrain_epochs > 0) {
      const auto shard = client_shard(options, train.labels, i);
      own = train.images.index_select(0, torch::tensor(shard, torch::kLong));
    }
    mine.push_back(std::make_shared<DefenseStrategy>(defense, static_cast<uint64_t>(i), own));
    strategies[i] = mine.back();
  }
  result.run = run_in_process(options, train, &test, settings, strategies);
  double seconds = 0.0;
  int64_t steps = 0;
  for (const auto& s : mine) {
    seconds += s->compute_seconds();
    steps += s->steps();
  }
  result.client_seconds_per_step = steps > 0 ? seconds / static_cast<double>(steps) : 0.0;
  auto [client, server] = restore_split(options, result.run.client_state, result.run.server_state);
  result.accuracy = defended_accuracy(client, server, test, smashed_transform(defense, 1000003));
  return result;
}

std::pair<State, State> transfer_states(const SflOptions& target, const SflOptions& source,
                                        const State& expert_client, const State& expert_server) {
  models::ModelConfig a = target.model, b = source.model;
  a.num_classes = b.num_classes = 0;
  TESSERA_CHECK(a.to_json() == b.to_json(),
                "resistance transfer needs the expert's architecture: source {} vs target {}",
                source.model.to_json().dump(), target.model.to_json().dump());
  TESSERA_CHECK(target.split.to_json() == source.split.to_json(),
                "resistance transfer needs the expert's split: source {} vs target {}",
                source.split.to_json().dump(), target.split.to_json().dump());
  seed_everything(target.seed);
  models::Model probe = models::create(target.model);
  const std::string classifier = probe->units().back().name + ".";
  auto [fresh_client, fresh_server] = make_split(target.model, target.split);
  State server = get_state(*fresh_server);
  for (auto& [name, tensor] : server) {
    if (name.rfind(classifier, 0) == 0) continue;  // re-initialised classifier
    const auto it = std::find_if(expert_server.begin(), expert_server.end(),
                                 [&](const auto& e) { return e.first == name; });
    TESSERA_CHECK(it != expert_server.end(), "the expert's server side has no tensor '{}'", name);
    TESSERA_CHECK(it->second.sizes() == tensor.sizes(), "expert tensor '{}' has another shape",
                  name);
    tensor = it->second.clone();
  }
  return {expert_client, server};
}

}  // namespace tessera::splitfed
