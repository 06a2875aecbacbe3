// The five model-extraction attacks, their oracles and the surrogate training (see extraction.h).
#include "tessera/splitfed/extraction.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/train/train.h"

namespace tessera::splitfed {
namespace {

namespace F = torch::nn::functional;

/// Batches of row indices [0, n) (shuffled by rng).
std::vector<std::vector<int64_t>> index_batches(int64_t n, int64_t batch_size,
                                                std::mt19937_64& rng) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  random::shuffle(order, rng);
  std::vector<std::vector<int64_t>> batches;
  for (int64_t start = 0; start < n; start += batch_size) {
    batches.emplace_back(order.begin() + start, order.begin() + std::min(n, start + batch_size));
  }
  return batches;
}

torch::Tensor rows(const torch::Tensor& t, const std::vector<int64_t>& index) {
  return t.index_select(0, torch::tensor(index, torch::kInt64));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Budget and oracles

QueryBudget::QueryBudget(int64_t limit) : limit_(limit) {
  TESSERA_CHECK(limit >= 0, "query budget {} must be >= 0", limit);
}

void QueryBudget::charge(int64_t n) {
  TESSERA_CHECK(n >= 0, "cannot charge {} queries", n);
  TESSERA_CHECK(used_ + n <= limit_, "query budget exhausted: {} used + {} asked > limit {}", used_,
                n, limit_);
  used_ += n;
}

torch::Tensor GradientOracle::query(const torch::Tensor& z, const torch::Tensor& y) {
  TESSERA_CHECK(z.dim() >= 2 && y.dim() == 1 && z.size(0) == y.size(0),
                "oracle query: z {} and labels {} do not match", fmt::join(z.sizes(), "x"),
                fmt::join(y.sizes(), "x"));
  TESSERA_CHECK(z.size(0) <= budget_.remaining(),
                "query budget exhausted: {} used + {} asked > limit {}", budget_.used(), z.size(0),
                budget_.limit());
  // Charged once answered: a query an online run never answers (OracleClosed) costs nothing.
  torch::Tensor grad = answer(z.detach(), y);
  budget_.charge(z.size(0));
  return grad;
}

OfflineOracle::OfflineOracle(ServerSide target, int64_t budget, double grad_noise)
    : GradientOracle(budget), target_(std::move(target)), grad_noise_(grad_noise) {
  TESSERA_CHECK(grad_noise >= 0.0, "gradient noise {} must be >= 0", grad_noise);
}

torch::Tensor OfflineOracle::answer(const torch::Tensor& z, const torch::Tensor& y) {
  // Frozen target in eval mode (research/sfl.md 2.1); its weights get no gradient.
  target_->eval();
  torch::Tensor z_in = z.clone().requires_grad_(true);
  const torch::Tensor loss = F::cross_entropy(target_->forward(z_in), y);
  torch::Tensor grad = torch::autograd::grad({loss}, {z_in})[0].detach();
  if (grad_noise_ > 0.0) grad += grad_noise_ * torch::rand_like(grad);
  return grad;
}

bool OnlineOracle::serve_one(
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& exchange) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return pending_ || done_ || closed_; });
  if (!pending_) return false;
  const torch::Tensor z = z_, y = y_;
  lock.unlock();
  torch::Tensor grad = exchange(z, y);
  lock.lock();
  pending_ = false;
  if (!grad.defined()) {  // dropped from the epoch: the query is lost; ask again next step
    grad_ = torch::Tensor();
  } else {
    grad_ = grad;
  }
  answered_ = grad.defined();
  if (!answered_) pending_ = true;  // keep it pending for the next step
  changed_.notify_all();
  return grad.defined();
}

void OnlineOracle::attack_done() {
  std::lock_guard<std::mutex> lock(mutex_);
  done_ = true;
  changed_.notify_all();
}

void OnlineOracle::close() {
  std::lock_guard<std::mutex> lock(mutex_);
  closed_ = true;
  changed_.notify_all();
}

torch::Tensor OnlineOracle::answer(const torch::Tensor& z, const torch::Tensor& y) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (closed_) throw OracleClosed();
  z_ = z;
  y_ = y;
  pending_ = true;
  answered_ = false;
  changed_.notify_all();
  changed_.wait(lock, [&] { return answered_ || closed_; });
  if (!answered_) throw OracleClosed();
  answered_ = false;
  return grad_;
}

OnlineAttackerStrategy::OnlineAttackerStrategy(std::shared_ptr<OnlineOracle> oracle,
                                               int64_t start_epoch,
                                               std::function<void(const State&)> start_attack)
    : oracle_(std::move(oracle)),
      start_epoch_(start_epoch),
      start_attack_(std::move(start_attack)) {}

void OnlineAttackerStrategy::begin_epoch(int64_t epoch, ClientSide& model) {
  if (!started_ && epoch >= start_epoch_) {
    started_ = true;
    start_attack_(get_state(*model));
  }
}

bool OnlineAttackerStrategy::step(StepContext& context, const torch::Tensor& x,
                                  const torch::Tensor& y) {
  if (!started_ || attack_finished_) return ClientStrategy::step(context, x, y);
  bool dropped = false;
  const bool served = oracle_->serve_one([&](const torch::Tensor& z, const torch::Tensor& labels) {
    torch::Tensor grad = context.exchange(z, labels);
    dropped = !grad.defined();
    return grad;
  });
  if (dropped) return false;
  if (!served) {  // the attack has spent its budget: back to honest steps
    attack_finished_ = true;
    return ClientStrategy::step(context, x, y);
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Attacks

const std::vector<ExtractionAttackKind>& all_extraction_attacks() {
  static const std::vector<ExtractionAttackKind> kinds = {
      ExtractionAttackKind::craft, ExtractionAttackKind::gan, ExtractionAttackKind::gm,
      ExtractionAttackKind::train, ExtractionAttackKind::softtrain};
  return kinds;
}

std::string extraction_attack_name(ExtractionAttackKind kind) {
  switch (kind) {
    case ExtractionAttackKind::craft:
      return "craft";
    case ExtractionAttackKind::gan:
      return "gan";
    case ExtractionAttackKind::gm:
      return "gm";
    case ExtractionAttackKind::train:
      return "train";
    case ExtractionAttackKind::softtrain:
      return "softtrain";
  }
  return "train";
}

std::string extraction_attack_label(ExtractionAttackKind kind) {
  switch (kind) {
    case ExtractionAttackKind::craft:
      return "Craft-ME";
    case ExtractionAttackKind::gan:
      return "GAN-ME";
    case ExtractionAttackKind::gm:
      return "GM-ME";
    case ExtractionAttackKind::train:
      return "Train-ME";
    case ExtractionAttackKind::softtrain:
      return "SoftTrain-ME";
  }
  return "Train-ME";
}

ExtractionAttackKind parse_extraction_attack(const std::string& name) {
  for (const ExtractionAttackKind kind : all_extraction_attacks()) {
    if (extraction_attack_name(kind) == name) return kind;
  }
  TESSERA_CHECK(false, "unknown model-extraction attack '{}' (craft, gan, gm, train, softtrain)",
                name);
  return ExtractionAttackKind::train;
}

void ExtractionOptions::validate() const {
  TESSERA_CHECK(budget >= 0, "budget {} must be >= 0", budget);
  TESSERA_CHECK(surrogate_epochs >= 1, "surrogate epochs {} must be >= 1", surrogate_epochs);
  TESSERA_CHECK(batch_size >= 1 && query_batch >= 1 && gan_batch >= 2 && gan_batch % 2 == 0,
                "batch sizes must be positive (gan_batch even): {}, {}, {}", batch_size,
                query_batch, gan_batch);
  TESSERA_CHECK(lr > 0.0, "surrogate lr {} must be positive", lr);
  TESSERA_CHECK(craft_steps >= 1, "craft steps {} must be >= 1", craft_steps);
  TESSERA_CHECK(soft_alpha > 0.0 && soft_alpha <= 1.0, "soft alpha {} must be in (0, 1]",
                soft_alpha);
}

nlohmann::json ExtractionResult::to_json() const {
  return {{"attack", extraction_attack_name(attack)},
          {"queries_used", queries_used},
          {"best_accuracy", best_accuracy},
          {"best_fidelity", best_fidelity},
          {"final_accuracy", final_accuracy},
          {"final_fidelity", final_fidelity},
          {"seconds", seconds}};
}

ExtractionAttack::ExtractionAttack(ExtractionOptions options, ClientSide attacker_client,
                                   const models::ModelConfig& model, const SplitOptions& split)
    : options_(std::move(options)), client_(std::move(attacker_client)), model_config_(model) {
  // The attacker's client side is frozen: it only maps inputs to smashed data.
  client_->eval();
  for (auto& p : client_->parameters()) p.set_requires_grad(false);
  surrogate_ = make_split(model_config_, split).second;
  xavier_init(*surrogate_);
}

torch::Tensor ExtractionAttack::smashed(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return client_->forward(x);
}

void ExtractionAttack::collect(GradientOracle& oracle) {
  const int64_t before = oracle.budget().used();
  try {
    query(oracle);
  } catch (const OracleClosed&) {
    log::warn("{}: the online run ended after {} queries", extraction_attack_label(kind()),
              oracle.budget().used() - before);
  }
  queries_used_ += oracle.budget().used() - before;
}

ExtractionResult ExtractionAttack::fit(const data::Dataset& test,
                                       const torch::Tensor& target_predictions) {
  TESSERA_CHECK(target_predictions.dim() == 1 && target_predictions.size(0) == test.size(),
                "target predictions ({}) must have one entry per test sample ({})",
                target_predictions.numel(), test.size());
  check_collected();
  Timer timer;
  train::TrainOptions t;
  t.optimizer = "sgd";
  t.lr = options_.lr;
  t.momentum = 0.9;
  t.weight_decay = 5e-4;
  t.epochs = options_.surrogate_epochs;
  t.schedule = "multistep";
  // Milestones at 20/50/80% of the epochs, gamma 0.2 (research/sfl.md 2.2).
  t.gamma = 0.2;
  for (const double m : {0.2, 0.5, 0.8}) {
    t.milestones.push_back(std::max<int64_t>(1, std::llround(m * options_.surrogate_epochs)));
  }
  std::mt19937_64 rng = make_rng(options_.seed, 41);
  ExtractionResult result;
  result.attack = kind();
  result.queries_used = queries_used_;
  // The attacker's client side is frozen, so the test set's smashed data is computed once and
  // each epoch's evaluation runs only the surrogate server part (same predictions as predict()).
  std::vector<torch::Tensor> test_z;
  for (int64_t start = 0; start < test.size(); start += 512) {
    test_z.push_back(smashed(test.images.slice(0, start, std::min(test.size(), start + 512))));
  }
  t.progress_label = "surrogate";
  train::fit_epochs(
      *surrogate_, t,
      [&](int64_t, const train::StepFn& step) {
        train_epoch([&](const torch::Tensor& loss) { step(loss); }, rng);
      },
      [&](const train::EpochStats&) {
        torch::Tensor predictions;
        {
          torch::NoGradGuard no_grad;
          surrogate_->eval();
          std::vector<torch::Tensor> out;
          for (const auto& z : test_z) out.push_back(surrogate_->forward(z).argmax(1));
          predictions = torch::cat(out);
        }
        const double accuracy =
            predictions.eq(test.labels).to(torch::kFloat64).mean().item<double>();
        const double fidelity =
            predictions.eq(target_predictions).to(torch::kFloat64).mean().item<double>();
        result.best_accuracy = std::max(result.best_accuracy, accuracy);
        result.best_fidelity = std::max(result.best_fidelity, fidelity);
        result.final_accuracy = accuracy;
        result.final_fidelity = fidelity;
        return true;
      });
  result.seconds = timer.elapsed_s();
  return result;
}

namespace {

using Step = std::function<void(const torch::Tensor&)>;

/// Craft-ME (research/sfl.md 2.3 (1)): per class, n = budget / (steps * C) images optimised by
/// Adam (lr 0.1, amsgrad, eps 1e-3) to minimise CE(f_s(f_c(x)), c); n = 0 -> one image with
/// budget / C steps. The surrogate trains on the crafted images.
class CraftAttack : public ExtractionAttack {
 public:
  CraftAttack(ExtractionOptions options, ClientSide client, const models::ModelConfig& model,
              const SplitOptions& split)
      : ExtractionAttack(std::move(options), std::move(client), model, split) {}

 protected:
  void query(GradientOracle& oracle) override {
    const int64_t per_class_budget = options().budget / n_classes();
    int64_t n = per_class_budget / options().craft_steps;
    int64_t steps = options().craft_steps;
    if (n == 0) {
      n = 1;
      steps = per_class_budget;
    }
    TESSERA_CHECK(steps >= 1, "Craft-ME: budget {} is below one query per class", options().budget);
    const auto& config = model_config();
    std::vector<torch::Tensor> images, labels;
    // Online, the run can end first (OracleClosed): the surrogate then trains on the images
    // crafted so far, the current class's only partly optimised.
    auto keep = [&](const torch::Tensor& x, const torch::Tensor& y) {
      images.push_back(x.detach().clone());
      labels.push_back(y);
      inputs_ = torch::cat(images);
      input_labels_ = torch::cat(labels);
    };
    for (int64_t c = 0; c < n_classes(); ++c) {
      torch::Tensor x = torch::rand({n, config.in_channels, config.image_size, config.image_size})
                            .requires_grad_(true);
      torch::optim::Adam adam({x}, torch::optim::AdamOptions(0.1).amsgrad(true).eps(1e-3));
      const torch::Tensor y = torch::full({n}, c, torch::kInt64);
      try {
        for (int64_t s = 0; s < steps; ++s) {
          adam.zero_grad();
          const torch::Tensor z = client()->forward(x);
          const torch::Tensor g = oracle.query(z.detach(), y);
          (z * g).sum().backward();  // chain the server's dL/dz through f_c to x
          adam.step();
          torch::NoGradGuard no_grad;
          x.clamp_(0.0, 1.0);  // stay a valid image
        }
      } catch (const OracleClosed&) {
        keep(x, y);
        throw;
      }
      keep(x, y);
    }
  }

  void check_collected() const override {
    TESSERA_CHECK(inputs_.defined(), "Craft-ME: collect() first");
  }

  void train_epoch(const Step& step, std::mt19937_64& rng) override {
    for (const auto& batch : index_batches(inputs_.size(0), options().batch_size, rng)) {
      step(F::cross_entropy(surrogate()->forward(smashed(rows(inputs_, batch))),
                            rows(input_labels_, batch)));
    }
  }

 private:
  torch::Tensor inputs_;        ///< crafted images [N, C, H, W]
  torch::Tensor input_labels_;  ///< their classes [N]
};

/// GAN-ME (research/sfl.md 2.3 (2)): a conditional generator trained so that the server
/// classifies G(z, y) as y, with a mode-seeking diversity term between the two halves of each
/// batch. The surrogate trains on fresh generator samples.
class GanAttack : public ExtractionAttack {
 public:
  GanAttack(ExtractionOptions options, ClientSide client, const models::ModelConfig& model,
            const SplitOptions& split)
      : ExtractionAttack(std::move(options), std::move(client), model, split) {}

 protected:
  void query(GradientOracle& oracle) override {
    build_generator();
    std::vector<torch::Tensor> params = generator_->parameters();
    for (const auto& p : embedding_->parameters()) params.push_back(p);
    torch::optim::Adam adam(params, torch::optim::AdamOptions(2e-4).betas({0.5, 0.999}));
    const ExtractionOptions& o = options();
    const int64_t steps = o.budget / o.gan_batch;
    const int64_t half = o.gan_batch / 2;
    generator_->train();
    for (int64_t s = 0; s < steps; ++s) {
      // Step decay at 10/30/50% of the steps, gamma 0.3 (research/sfl.md 2.3).
      double lr = 2e-4;
      for (const double m : {0.1, 0.3, 0.5}) {
        if (s >= static_cast<int64_t>(m * static_cast<double>(steps))) lr *= 0.3;
      }
      for (auto& group : adam.param_groups()) group.options().set_lr(lr);
      adam.zero_grad();
      const torch::Tensor y_half = torch::randint(0, n_classes(), {half}, torch::kInt64);
      const torch::Tensor y = torch::cat({y_half, y_half});
      const torch::Tensor noise = torch::randn({o.gan_batch, o.gan_latent});
      const torch::Tensor x = generator_->forward(torch::cat({noise, embedding_->forward(y)}, 1));
      const torch::Tensor z = client()->forward(x);
      const torch::Tensor g = oracle.query(z.detach(), y);
      torch::Tensor loss = (z * g).sum();  // gradient of CE(f_s(z), y) w.r.t. G's weights
      if (o.gan_diversity > 0.0) {
        const torch::Tensor dx = (x.slice(0, 0, half) - x.slice(0, half)).abs().mean({1, 2, 3});
        const torch::Tensor dn = (noise.slice(0, 0, half) - noise.slice(0, half)).abs().mean(1);
        loss = loss - o.gan_diversity * (dx / dn).mean();
      }
      loss.backward();
      adam.step();
    }
    generator_->eval();
  }

  void check_collected() const override {
    TESSERA_CHECK(!generator_.is_empty(), "GAN-ME: collect() first");
  }

  void train_epoch(const Step& step, std::mt19937_64& /*rng*/) override {
    const ExtractionOptions& o = options();
    for (int64_t i = 0; i < o.gan_iterations; ++i) {
      torch::Tensor x;
      const torch::Tensor y = torch::randint(0, n_classes(), {o.batch_size}, torch::kInt64);
      {
        torch::NoGradGuard no_grad;
        x = generator_->forward(
            torch::cat({torch::randn({o.batch_size, o.gan_latent}), embedding_->forward(y)}, 1));
      }
      step(F::cross_entropy(surrogate()->forward(smashed(x)), y));
    }
  }

 private:
  void build_generator() {
    const auto& config = model_config();
    const int64_t nz = options().gan_latent;
    const int64_t base = std::max<int64_t>(1, (config.image_size + 3) / 4);
    const int64_t ngf = 64;  // RECONSTRUCTED: 128 in the paper's GeneratorC; CPU budget
    embedding_ = torch::nn::Embedding(n_classes(), nz);
    generator_ = torch::nn::Sequential(
        torch::nn::Linear(2 * nz, 2 * ngf * base * base),
        torch::nn::Unflatten(torch::nn::UnflattenOptions(1, {2 * ngf, base, base})),
        torch::nn::BatchNorm2d(2 * ngf),
        torch::nn::Upsample(torch::nn::UpsampleOptions()
                                .scale_factor(std::vector<double>{2, 2})
                                .mode(torch::kNearest)),
        torch::nn::Conv2d(torch::nn::Conv2dOptions(2 * ngf, 2 * ngf, 3).padding(1)),
        torch::nn::BatchNorm2d(2 * ngf),
        torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)),
        torch::nn::Upsample(torch::nn::UpsampleOptions()
                                .scale_factor(std::vector<double>{2, 2})
                                .mode(torch::kNearest)),
        torch::nn::Conv2d(torch::nn::Conv2dOptions(2 * ngf, ngf, 3).padding(1)),
        torch::nn::BatchNorm2d(ngf),
        torch::nn::LeakyReLU(torch::nn::LeakyReLUOptions().negative_slope(0.2)),
        torch::nn::Conv2d(torch::nn::Conv2dOptions(ngf, config.in_channels, 3).padding(1)),
        // RECONSTRUCTED: Sigmoid to [0, 1] (our images are not normalised) instead of Tanh + BN.
        torch::nn::Sigmoid());
  }

  torch::nn::Sequential generator_{nullptr};
  torch::nn::Embedding embedding_{nullptr};
};

/// GM-ME (research/sfl.md 2.3 (3)): for each auxiliary batch and every class j it records
/// dCE(., j)/dz; the surrogate matches its own gradients to them.
class GmAttack : public ExtractionAttack {
 public:
  GmAttack(ExtractionOptions options, ClientSide client, const models::ModelConfig& model,
           const SplitOptions& split, const data::Dataset& aux)
      : ExtractionAttack(std::move(options), std::move(client), model, split), aux_(aux) {}

 protected:
  void query(GradientOracle& oracle) override {
    std::mt19937_64 rng = make_rng(options().seed, 31);
    for (const auto& batch : index_batches(aux_.size(), options().query_batch, rng)) {
      const int64_t b = static_cast<int64_t>(batch.size());
      if ((b * n_classes()) > oracle.budget().remaining()) break;
      const torch::Tensor z = smashed(rows(aux_.images, batch));
      for (int64_t j = 0; j < n_classes(); ++j) {
        const torch::Tensor y = torch::full({b}, j, torch::kInt64);
        g_.push_back(oracle.query(z, y));
        z_.push_back(z);
        y_.push_back(y);
      }
    }
    TESSERA_CHECK(!z_.empty(), "GM-ME: budget {} is below one batch of {} x {} classes",
                  options().budget, options().query_batch, n_classes());
  }

  void check_collected() const override { TESSERA_CHECK(!z_.empty(), "GM-ME: collect() first"); }

  void train_epoch(const Step& step, std::mt19937_64& rng) override {
    // Match the surrogate's own dCE/dz to the recorded gradients (second order through f^_s).
    // In eval mode, like the oracle's target: in train mode dropout (p = 0.5 in VGG's
    // classifier) and BN batch statistics make g_hat a different, random function of z, whose
    // gradients cannot match the target's; the surrogate is then evaluated in that same mode.
    surrogate()->eval();
    std::vector<int64_t> order(z_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    random::shuffle(order, rng);
    for (const int64_t i : order) {
      torch::Tensor z = z_[i].clone().requires_grad_(true);
      const torch::Tensor loss_ce = F::cross_entropy(surrogate()->forward(z), y_[i]);
      const torch::Tensor g_hat = torch::autograd::grad({loss_ce}, {z}, {}, /*retain_graph=*/true,
                                                        /*create_graph=*/true)[0];
      const torch::Tensor g = g_[i];
      step((g.flatten(1) - g_hat.flatten(1)).norm(2, 1).mean() /
           g.flatten(1).norm(2, 1).mean().clamp_min(1e-12));
    }
  }

 private:
  const data::Dataset& aux_;              ///< images only (labels unused)
  std::vector<torch::Tensor> z_, y_, g_;  ///< smashed, label, recorded gradient
};

/// Train-ME (research/sfl.md 2.3 (4)): the surrogate trains on the attacker's labelled data,
/// no queries.
class TrainAttack : public ExtractionAttack {
 public:
  TrainAttack(ExtractionOptions options, ClientSide client, const models::ModelConfig& model,
              const SplitOptions& split, const data::Dataset& data)
      : ExtractionAttack(std::move(options), std::move(client), model, split), data_(data) {}

 protected:
  void query(GradientOracle& /*oracle*/) override {}

  void train_epoch(const Step& step, std::mt19937_64& rng) override {
    for (const auto& batch : index_batches(data_.size(), options().batch_size, rng)) {
      torch::Tensor x = rows(data_.images, batch);
      if (options().augment) x = data::augment(x, 2, true, rng);
      step(F::cross_entropy(surrogate()->forward(smashed(x)), rows(data_.labels, batch)));
    }
  }

  const data::Dataset& data_;
};

/// SoftTrain-ME (research/sfl.md 2.3 (5)): Train-ME plus, per queried batch, the gradient for
/// every class c; the soft label q comes from the cosine similarity of g_c with the true
/// label's gradient g_y, and a second pass trains on the mixed hard / soft labels.
class SoftTrainAttack : public TrainAttack {
 public:
  using TrainAttack::TrainAttack;

 protected:
  void query(GradientOracle& oracle) override {
    std::mt19937_64 rng = make_rng(options().seed, 37);
    std::vector<torch::Tensor> xs, ys, qs;
    for (const auto& batch : index_batches(data_.size(), options().query_batch, rng)) {
      const int64_t b = static_cast<int64_t>(batch.size());
      if (b * n_classes() > oracle.budget().remaining()) break;
      const torch::Tensor x = rows(data_.images, batch);
      const torch::Tensor y = rows(data_.labels, batch);
      const torch::Tensor z = smashed(x);
      std::vector<torch::Tensor> grads;
      for (int64_t c = 0; c < n_classes(); ++c) {
        grads.push_back(oracle.query(z, torch::full({b}, c, torch::kInt64)).flatten(1));
      }
      xs.push_back(x);
      ys.push_back(y);
      qs.push_back(soft_labels(torch::stack(grads, 1), y));
    }
    if (!xs.empty()) {
      x_ = torch::cat(xs);
      y_ = torch::cat(ys);
      q_ = torch::cat(qs);
    }
  }

  void train_epoch(const Step& step, std::mt19937_64& rng) override {
    TrainAttack::train_epoch(step, rng);
    if (!x_.defined()) return;
    // Second pass on the queried batches with mixed hard / soft labels (0.9 CE + 0.1 soft CE).
    for (const auto& batch : index_batches(x_.size(0), options().batch_size, rng)) {
      const torch::Tensor out = surrogate()->forward(smashed(rows(x_, batch)));
      const torch::Tensor soft = -(rows(q_, batch) * F::log_softmax(out, 1)).sum(1).mean();
      step(0.9 * F::cross_entropy(out, rows(y_, batch)) + 0.1 * soft);
    }
  }

 private:
  /// g: [B, C, D] per-class gradients, y: [B] -> q: [B, C].
  torch::Tensor soft_labels(const torch::Tensor& g, const torch::Tensor& y) const {
    const int64_t b = g.size(0);
    const torch::Tensor g_true = g.index({torch::arange(b), y});  // [B, D]
    const torch::Tensor s = F::cosine_similarity(
        g, g_true.unsqueeze(1), F::CosineSimilarityFuncOptions().dim(2));  // [B, C]
    // RECONSTRUCTED normalisation: q_y = alpha, the rest (1 - alpha) shared in proportion to
    // s_c + 1 over c != y (the code's denominator leaves q slightly unnormalised).
    torch::Tensor w = (s + 1.0).clamp_min(1e-6);
    w.index_put_({torch::arange(b), y}, 0.0);
    torch::Tensor q = (1.0 - options().soft_alpha) * w / w.sum(1, true);
    q.index_put_({torch::arange(b), y}, options().soft_alpha);
    return q;
  }

  torch::Tensor x_, y_, q_;  ///< queried data, labels, soft labels
};

const data::Dataset& required_data(ExtractionAttackKind kind, const data::Dataset* data) {
  TESSERA_CHECK(data != nullptr && data->size() > 0,
                "{} needs attacker data (--attacker-fraction > 0)", extraction_attack_label(kind));
  return *data;
}

}  // namespace

std::unique_ptr<ExtractionAttack> make_extraction_attack(const ExtractionOptions& options,
                                                         ClientSide attacker_client,
                                                         const models::ModelConfig& model,
                                                         const SplitOptions& split,
                                                         const data::Dataset* attacker_data) {
  options.validate();
  ClientSide& c = attacker_client;
  switch (options.attack) {
    case ExtractionAttackKind::craft:
      return std::make_unique<CraftAttack>(options, c, model, split);
    case ExtractionAttackKind::gan:
      return std::make_unique<GanAttack>(options, c, model, split);
    case ExtractionAttackKind::gm:
      return std::make_unique<GmAttack>(options, c, model, split,
                                        required_data(options.attack, attacker_data));
    case ExtractionAttackKind::train:
      return std::make_unique<TrainAttack>(options, c, model, split,
                                           required_data(options.attack, attacker_data));
    case ExtractionAttackKind::softtrain:
      return std::make_unique<SoftTrainAttack>(options, c, model, split,
                                               required_data(options.attack, attacker_data));
  }
  TESSERA_CHECK(false, "unknown model-extraction attack");
  return nullptr;
}

torch::Tensor predict(ClientSide& client, ServerSide& server, const data::Dataset& dataset) {
  const bool client_training = client->is_training();
  const bool server_training = server->is_training();
  client->eval();
  server->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (int64_t start = 0; start < dataset.size(); start += 512) {
    const int64_t end = std::min(dataset.size(), start + 512);
    out.push_back(server->forward(client->forward(dataset.images.slice(0, start, end))).argmax(1));
  }
  client->train(client_training);
  server->train(server_training);
  return torch::cat(out);
}

}  // namespace tessera::splitfed
