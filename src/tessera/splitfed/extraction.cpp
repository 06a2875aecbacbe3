// The five model-extraction attacks, their oracles and the surrogate training (see extraction.h).
#include "tessera/splitfed/extraction.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/data/sampling.h"

namespace tessera::splitfed {
namespace {

namespace F = torch::nn::functional;

/// Batches of row indices [0, n) (shuffled by rng).
std::vector<std::vector<int64_t>> index_batches(int64_t n, int64_t batch_size,
                                                std::mt19937_64& rng) {
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  data::shuffle_indices(order, rng);
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

void ExtractionOptions::validate() const {
  TESSERA_CHECK(attack == "craft" || attack == "gan" || attack == "gm" || attack == "train" ||
                    attack == "softtrain",
                "unknown model-extraction attack \"{}\" (craft, gan, gm, train, softtrain)",
                attack);
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
  return {{"attack", attack},
          {"queries_used", queries_used},
          {"best_accuracy", best_accuracy},
          {"best_fidelity", best_fidelity},
          {"final_accuracy", final_accuracy},
          {"final_fidelity", final_fidelity},
          {"seconds", seconds}};
}

ModelExtraction::ModelExtraction(ExtractionOptions options, ClientSide attacker_client,
                                 const models::ModelConfig& model, const SplitOptions& split,
                                 const data::Dataset* attacker_data)
    : options_(std::move(options)),
      client_(std::move(attacker_client)),
      model_config_(model),
      split_(split),
      data_(attacker_data),
      n_classes_(model.num_classes) {
  options_.validate();
  if (options_.attack == "train" || options_.attack == "softtrain" || options_.attack == "gm") {
    TESSERA_CHECK(data_ != nullptr && data_->size() > 0,
                  "{}-ME needs attacker data (--attacker-fraction > 0)", options_.attack);
  }
  // The attacker's client side is frozen: it only maps inputs to smashed data.
  client_->eval();
  for (auto& p : client_->parameters()) p.set_requires_grad(false);
  surrogate_ = make_split(model_config_, split_).second;
  xavier_init(*surrogate_);
}

void ModelExtraction::collect(GradientOracle& oracle) {
  const int64_t before = oracle.budget().used();
  try {
    if (options_.attack == "craft") collect_craft(oracle);
    if (options_.attack == "gan") collect_gan(oracle);
    if (options_.attack == "gm") collect_gm(oracle);
    if (options_.attack == "softtrain") collect_softtrain(oracle);
  } catch (const OracleClosed&) {
    log::warn("{}-ME: the online run ended after {} queries", options_.attack,
              oracle.budget().used() - before);
  }
  queries_used_ += oracle.budget().used() - before;
}

void ModelExtraction::collect_craft(GradientOracle& oracle) {
  // research/sfl.md 2.3 (1): per class, n = budget / (steps * C) images optimised by Adam
  // (lr 0.1, amsgrad, eps 1e-3) to minimise CE(f_s(f_c(x)), c); n = 0 -> one image with
  // budget / C steps.
  const int64_t per_class_budget = options_.budget / n_classes_;
  int64_t n = per_class_budget / options_.craft_steps;
  int64_t steps = options_.craft_steps;
  if (n == 0) {
    n = 1;
    steps = per_class_budget;
  }
  TESSERA_CHECK(steps >= 1, "Craft-ME: budget {} is below one query per class", options_.budget);
  const auto& config = model_config_;
  std::vector<torch::Tensor> images, labels;
  // Online, the run can end first (OracleClosed): the surrogate then trains on the images
  // crafted so far, the current class's only partly optimised.
  auto keep = [&](const torch::Tensor& x, const torch::Tensor& y) {
    images.push_back(x.detach().clone());
    labels.push_back(y);
    inputs_ = torch::cat(images);
    input_labels_ = torch::cat(labels);
  };
  for (int64_t c = 0; c < n_classes_; ++c) {
    torch::Tensor x = torch::rand({n, config.in_channels, config.image_size, config.image_size})
                          .requires_grad_(true);
    torch::optim::Adam adam({x}, torch::optim::AdamOptions(0.1).amsgrad(true).eps(1e-3));
    const torch::Tensor y = torch::full({n}, c, torch::kInt64);
    try {
      for (int64_t s = 0; s < steps; ++s) {
        adam.zero_grad();
        const torch::Tensor z = client_->forward(x);
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

void ModelExtraction::collect_gan(GradientOracle& oracle) {
  // research/sfl.md 2.3 (2): a conditional generator trained so that the server classifies
  // G(z, y) as y, with a mode-seeking diversity term between the two halves of each batch.
  const auto& config = model_config_;
  const int64_t nz = options_.gan_latent;
  const int64_t base = std::max<int64_t>(1, (config.image_size + 3) / 4);
  const int64_t ngf = 64;  // RECONSTRUCTED: 128 in the paper's GeneratorC; CPU budget
  generator_embedding_ = torch::nn::Embedding(n_classes_, nz);
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
  std::vector<torch::Tensor> params = generator_->parameters();
  for (const auto& p : generator_embedding_->parameters()) params.push_back(p);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(2e-4).betas({0.5, 0.999}));
  const int64_t steps = options_.budget / options_.gan_batch;
  const int64_t half = options_.gan_batch / 2;
  generator_->train();
  for (int64_t s = 0; s < steps; ++s) {
    // Step decay at 10/30/50% of the steps, gamma 0.3 (research/sfl.md 2.3).
    double lr = 2e-4;
    for (const double m : {0.1, 0.3, 0.5}) {
      if (s >= static_cast<int64_t>(m * static_cast<double>(steps))) lr *= 0.3;
    }
    for (auto& group : adam.param_groups()) group.options().set_lr(lr);
    adam.zero_grad();
    const torch::Tensor y_half = torch::randint(0, n_classes_, {half}, torch::kInt64);
    const torch::Tensor y = torch::cat({y_half, y_half});
    const torch::Tensor noise = torch::randn({options_.gan_batch, nz});
    const torch::Tensor x =
        generator_->forward(torch::cat({noise, generator_embedding_->forward(y)}, 1));
    const torch::Tensor z = client_->forward(x);
    const torch::Tensor g = oracle.query(z.detach(), y);
    torch::Tensor loss = (z * g).sum();  // gradient of CE(f_s(z), y) w.r.t. G's weights
    if (options_.gan_diversity > 0.0) {
      const torch::Tensor dx = (x.slice(0, 0, half) - x.slice(0, half)).abs().mean({1, 2, 3});
      const torch::Tensor dn = (noise.slice(0, 0, half) - noise.slice(0, half)).abs().mean(1);
      loss = loss - options_.gan_diversity * (dx / dn).mean();
    }
    loss.backward();
    adam.step();
  }
  generator_->eval();
}

void ModelExtraction::collect_gm(GradientOracle& oracle) {
  // research/sfl.md 2.3 (3): for each auxiliary batch and every class j record dCE(., j)/dz.
  std::mt19937_64 rng = make_rng(options_.seed, 31);
  const auto batches = index_batches(data_->size(), options_.query_batch, rng);
  for (const auto& batch : batches) {
    const int64_t b = static_cast<int64_t>(batch.size());
    if ((b * n_classes_) > oracle.budget().remaining()) break;
    torch::Tensor z;
    {
      torch::NoGradGuard no_grad;
      z = client_->forward(rows(data_->images, batch));
    }
    for (int64_t j = 0; j < n_classes_; ++j) {
      const torch::Tensor y = torch::full({b}, j, torch::kInt64);
      gm_g_.push_back(oracle.query(z, y));
      gm_z_.push_back(z);
      gm_y_.push_back(y);
    }
  }
  TESSERA_CHECK(!gm_z_.empty(), "GM-ME: budget {} is below one batch of {} x {} classes",
                options_.budget, options_.query_batch, n_classes_);
}

void ModelExtraction::collect_softtrain(GradientOracle& oracle) {
  // research/sfl.md 2.3 (5): per batch, the gradient for every class c; soft label q from the
  // cosine similarity of g_c with the true label's gradient g_y.
  std::mt19937_64 rng = make_rng(options_.seed, 37);
  const auto batches = index_batches(data_->size(), options_.query_batch, rng);
  std::vector<torch::Tensor> xs, ys, qs;
  for (const auto& batch : batches) {
    const int64_t b = static_cast<int64_t>(batch.size());
    if (b * n_classes_ > oracle.budget().remaining()) break;
    const torch::Tensor x = rows(data_->images, batch);
    const torch::Tensor y = rows(data_->labels, batch);
    torch::Tensor z;
    {
      torch::NoGradGuard no_grad;
      z = client_->forward(x);
    }
    std::vector<torch::Tensor> grads;
    for (int64_t c = 0; c < n_classes_; ++c) {
      grads.push_back(oracle.query(z, torch::full({b}, c, torch::kInt64)).flatten(1));
    }
    const torch::Tensor g = torch::stack(grads, 1);               // [B, C, D]
    const torch::Tensor g_true = g.index({torch::arange(b), y});  // [B, D]
    const torch::Tensor s = F::cosine_similarity(
        g, g_true.unsqueeze(1), F::CosineSimilarityFuncOptions().dim(2));  // [B, C]
    // RECONSTRUCTED normalisation: q_y = alpha, the rest (1 - alpha) shared in proportion to
    // s_c + 1 over c != y (the code's denominator leaves q slightly unnormalised).
    torch::Tensor w = (s + 1.0).clamp_min(1e-6);
    w.index_put_({torch::arange(b), y}, 0.0);
    torch::Tensor q = (1.0 - options_.soft_alpha) * w / w.sum(1, true);
    q.index_put_({torch::arange(b), y}, options_.soft_alpha);
    xs.push_back(x);
    ys.push_back(y);
    qs.push_back(q);
  }
  if (!xs.empty()) {
    soft_x_ = torch::cat(xs);
    soft_y_ = torch::cat(ys);
    soft_q_ = torch::cat(qs);
  }
}

double ModelExtraction::train_epoch(torch::optim::Optimizer& optimizer, std::mt19937_64& rng) {
  const std::string& attack = options_.attack;
  double loss_sum = 0.0;
  int64_t n_batches = 0;
  auto smashed = [&](const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    return client_->forward(x);
  };
  auto run = [&](const torch::Tensor& loss) {
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    loss_sum += loss.item<double>();
    ++n_batches;
  };
  surrogate_->train();
  if (attack == "craft") {
    for (const auto& batch : index_batches(inputs_.size(0), options_.batch_size, rng)) {
      run(F::cross_entropy(surrogate_->forward(smashed(rows(inputs_, batch))),
                           rows(input_labels_, batch)));
    }
  } else if (attack == "gan") {
    for (int64_t i = 0; i < options_.gan_iterations; ++i) {
      torch::Tensor x;
      const torch::Tensor y = torch::randint(0, n_classes_, {options_.batch_size}, torch::kInt64);
      {
        torch::NoGradGuard no_grad;
        x = generator_->forward(
            torch::cat({torch::randn({options_.batch_size, options_.gan_latent}),
                        generator_embedding_->forward(y)},
                       1));
      }
      run(F::cross_entropy(surrogate_->forward(smashed(x)), y));
    }
  } else if (attack == "gm") {
    // Match the surrogate's own dCE/dz to the recorded gradients (second order through f^_s).
    // In eval mode, like the oracle's target: in train mode dropout (p = 0.5 in VGG's
    // classifier) and BN batch statistics make g_hat a different, random function of z, whose
    // gradients cannot match the target's; the surrogate is then evaluated in that same mode.
    surrogate_->eval();
    std::vector<int64_t> order(gm_z_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
    data::shuffle_indices(order, rng);
    for (const int64_t i : order) {
      torch::Tensor z = gm_z_[i].clone().requires_grad_(true);
      const torch::Tensor loss_ce = F::cross_entropy(surrogate_->forward(z), gm_y_[i]);
      const torch::Tensor g_hat = torch::autograd::grad({loss_ce}, {z}, {}, /*retain_graph=*/true,
                                                        /*create_graph=*/true)[0];
      const torch::Tensor g = gm_g_[i];
      run((g.flatten(1) - g_hat.flatten(1)).norm(2, 1).mean() /
          g.flatten(1).norm(2, 1).mean().clamp_min(1e-12));
    }
  } else {  // train, softtrain: CE on the attacker's labelled data
    for (const auto& batch : index_batches(data_->size(), options_.batch_size, rng)) {
      torch::Tensor x = rows(data_->images, batch);
      if (options_.augment) x = data::augment(x, 2, true, rng);
      run(F::cross_entropy(surrogate_->forward(smashed(x)), rows(data_->labels, batch)));
    }
    if (attack == "softtrain" && soft_x_.defined()) {
      // Second pass on the queried batches with mixed hard / soft labels (0.9 CE + 0.1 soft CE).
      for (const auto& batch : index_batches(soft_x_.size(0), options_.batch_size, rng)) {
        const torch::Tensor out = surrogate_->forward(smashed(rows(soft_x_, batch)));
        const torch::Tensor soft = -(rows(soft_q_, batch) * F::log_softmax(out, 1)).sum(1).mean();
        run(0.9 * F::cross_entropy(out, rows(soft_y_, batch)) + 0.1 * soft);
      }
    }
  }
  return n_batches > 0 ? loss_sum / static_cast<double>(n_batches) : 0.0;
}

ExtractionResult ModelExtraction::fit(const data::Dataset& test,
                                      const torch::Tensor& target_predictions) {
  TESSERA_CHECK(target_predictions.dim() == 1 && target_predictions.size(0) == test.size(),
                "target predictions ({}) must have one entry per test sample ({})",
                target_predictions.numel(), test.size());
  if (options_.attack == "craft") TESSERA_CHECK(inputs_.defined(), "Craft-ME: collect() first");
  if (options_.attack == "gan") TESSERA_CHECK(!generator_.is_empty(), "GAN-ME: collect() first");
  if (options_.attack == "gm") TESSERA_CHECK(!gm_z_.empty(), "GM-ME: collect() first");
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
  auto optimizer = train::make_optimizer(surrogate_->parameters(), t);
  std::mt19937_64 rng = make_rng(options_.seed, 41);
  ExtractionResult result;
  result.attack = options_.attack;
  result.queries_used = queries_used_;
  // The attacker's client side is frozen, so the test set's smashed data is computed once and
  // each epoch's evaluation runs only the surrogate server part (same predictions as predict()).
  std::vector<torch::Tensor> test_z;
  {
    torch::NoGradGuard no_grad;
    for (int64_t start = 0; start < test.size(); start += 512) {
      test_z.push_back(
          client_->forward(test.images.slice(0, start, std::min(test.size(), start + 512))));
    }
  }
  for (int64_t epoch = 0; epoch < options_.surrogate_epochs; ++epoch) {
    train::set_learning_rate(*optimizer, train::learning_rate(t, epoch));
    train_epoch(*optimizer, rng);
    torch::Tensor predictions;
    {
      torch::NoGradGuard no_grad;
      surrogate_->eval();
      std::vector<torch::Tensor> out;
      for (const auto& z : test_z) out.push_back(surrogate_->forward(z).argmax(1));
      predictions = torch::cat(out);
    }
    const double accuracy = predictions.eq(test.labels).to(torch::kFloat64).mean().item<double>();
    const double fidelity =
        predictions.eq(target_predictions).to(torch::kFloat64).mean().item<double>();
    result.best_accuracy = std::max(result.best_accuracy, accuracy);
    result.best_fidelity = std::max(result.best_fidelity, fidelity);
    result.final_accuracy = accuracy;
    result.final_fidelity = fidelity;
  }
  result.seconds = timer.elapsed_s();
  return result;
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
