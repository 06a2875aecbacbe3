// Model-extraction (ME) attacks on SFL by one malicious client (research/sfl.md 2): Craft-ME,
// GAN-ME, GM-ME, Train-ME and SoftTrain-ME. The attacker knows its own client side f_c and can
// send any (z, y) to the server, getting back only dCE(f_s(z), y)/dz: a "gradient query", one
// per sample, counted against a budget. It trains a surrogate f_c o f^_s with f_c frozen.
#pragma once

#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/splitfed/client.h"
#include "tessera/splitfed/split.h"

namespace tessera::splitfed {

/// Counts gradient queries (1 query = 1 sample through f_s) against a limit.
class QueryBudget {
 public:
  explicit QueryBudget(int64_t limit);
  /// Records n queries; throws tessera::Error (and records nothing) if that exceeds the limit.
  void charge(int64_t n);
  int64_t limit() const { return limit_; }
  int64_t used() const { return used_; }
  int64_t remaining() const { return limit_ - used_; }

 private:
  int64_t limit_;
  int64_t used_ = 0;
};

/// Thrown by an online oracle whose SFL run ended before the attack finished querying.
class OracleClosed : public Error {
 public:
  OracleClosed() : Error("the SFL run ended before the attack finished its queries") {}
};

/// The only server output a client sees: dL/dz for L = mean-reduced CE(f_s(z), y).
class GradientOracle {
 public:
  explicit GradientOracle(int64_t budget) : budget_(budget) {}
  virtual ~GradientOracle() = default;
  /// z: [B, smashed...] float32, y: [B] int64 -> dL/dz [B, smashed...]. Refuses (tessera::Error)
  /// a query beyond the budget; charges B queries once answered.
  torch::Tensor query(const torch::Tensor& z, const torch::Tensor& y);
  QueryBudget& budget() { return budget_; }

 protected:
  virtual torch::Tensor answer(const torch::Tensor& z, const torch::Tensor& y) = 0;

 private:
  QueryBudget budget_;
};

/// Offline setting: the trained target f_s, frozen in eval mode; the server still applies its
/// gradient-noise defense (`grad_noise` * U[0, 1)).
class OfflineOracle : public GradientOracle {
 public:
  OfflineOracle(ServerSide target, int64_t budget, double grad_noise = 0.0);

 protected:
  torch::Tensor answer(const torch::Tensor& z, const torch::Tensor& y) override;

 private:
  ServerSide target_;
  double grad_noise_;
};

/// Online setting: the attacker is a client of a running SFL training; each query is one of its
/// SFL steps (the server trains on it). The attack runs in its own thread and blocks in
/// query() until the attacker's next turn. Use with OnlineAttackerStrategy.
class OnlineOracle : public GradientOracle {
 public:
  explicit OnlineOracle(int64_t budget) : GradientOracle(budget) {}
  /// Called by the attacker client's step: waits for the attack's next query (or its end),
  /// answers it with `exchange`. Returns false when the attack has no more queries.
  bool serve_one(
      const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& exchange);
  /// The attack thread is done querying.
  void attack_done();
  /// The SFL run is over: pending and later queries throw OracleClosed.
  void close();

 protected:
  torch::Tensor answer(const torch::Tensor& z, const torch::Tensor& y) override;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  torch::Tensor z_, y_, grad_;
  bool pending_ = false;
  bool answered_ = false;
  bool done_ = false;
  bool closed_ = false;
};

/// The five ME attacks (research/sfl.md 2.3). Craft, GAN and GM are data-free or use images
/// only; Train uses labelled data and no queries; SoftTrain uses both.
enum class ExtractionAttackKind { craft, gan, gm, train, softtrain };
/// Every attack, in the order above.
const std::vector<ExtractionAttackKind>& all_extraction_attacks();
/// "craft", "gan", "gm", "train" or "softtrain"; throws tessera::Error listing the valid names.
ExtractionAttackKind parse_extraction_attack(const std::string& name);
std::string extraction_attack_name(ExtractionAttackKind kind);
/// The paper's label: "Craft-ME", "GAN-ME", "GM-ME", "Train-ME", "SoftTrain-ME".
std::string extraction_attack_label(ExtractionAttackKind kind);

struct ExtractionOptions {
  ExtractionAttackKind attack = ExtractionAttackKind::train;
  int64_t budget = 10000;         ///< gradient queries (research/sfl.md 2.3: 1e3, 1e4, 1e5)
  int64_t surrogate_epochs = 20;  ///< paper: 200
  int64_t batch_size = 128;
  double lr = 0.02;             ///< surrogate SGD (0.005 for the deepest cut in the paper)
  int64_t craft_steps = 50;     ///< Craft-ME: Adam steps per crafted image batch
  int64_t gan_batch = 100;      ///< GAN-ME: generator samples per step
  int64_t gan_latent = 128;     ///< RECONSTRUCTED: 512 in the paper's generator
  double gan_diversity = 50.0;  ///< GAN-ME: weight of the mode-seeking term
  int64_t gan_iterations = 20;  ///< GAN-ME: surrogate iterations per epoch
  int64_t query_batch = 100;    ///< GM-ME / SoftTrain-ME: samples per query batch
  double soft_alpha = 0.9;      ///< SoftTrain-ME: weight of the true label
  bool augment = false;         ///< Train/SoftTrain: augment the attacker's data
  uint64_t seed = 0;
  void validate() const;
};

struct ExtractionResult {
  ExtractionAttackKind attack = ExtractionAttackKind::train;
  int64_t queries_used = 0;
  double best_accuracy = 0.0;  ///< best epoch by test accuracy (paper's protocol)
  double best_fidelity = 0.0;  ///< best epoch by agreement with the target's top-1
  double final_accuracy = 0.0;
  double final_fidelity = 0.0;
  double seconds = 0.0;
  nlohmann::json to_json() const;
};

/// One attack against one target: collect() asks the oracle (query phase); fit() trains the
/// surrogate f_c o f^_s (f_c frozen, f^_s fresh and Xavier-initialised) without further queries
/// and measures it on the test set. Each attack is its own subclass holding only what its
/// query phase gathers; make_extraction_attack() builds one.
class ExtractionAttack {
 public:
  virtual ~ExtractionAttack() = default;
  ExtractionAttack(const ExtractionAttack&) = delete;
  ExtractionAttack& operator=(const ExtractionAttack&) = delete;

  ExtractionAttackKind kind() const { return options_.attack; }
  /// Query phase. Stops early (keeping what it has) if an online oracle closes.
  void collect(GradientOracle& oracle);
  /// Surrogate training (SGD, momentum 0.9, wd 5e-4, milestones at 20/50/80 % of the epochs,
  /// gamma 0.2; research/sfl.md 2.2); target_predictions: the target's top-1 on `test` ([N]
  /// int64). Best accuracy and fidelity are over the epochs.
  ExtractionResult fit(const data::Dataset& test, const torch::Tensor& target_predictions);
  /// The surrogate server part (after fit()).
  ServerSide& surrogate() { return surrogate_; }

 protected:
  /// `attacker_client`: the attacker's client side (frozen here). `model`/`split` describe the
  /// surrogate server part's architecture (same family as the target).
  ExtractionAttack(ExtractionOptions options, ClientSide attacker_client,
                   const models::ModelConfig& model, const SplitOptions& split);
  /// The attack's queries (none for Train-ME).
  virtual void query(GradientOracle& oracle) = 0;
  /// Throws tessera::Error unless query() gathered what fit() needs.
  virtual void check_collected() const {}
  /// One surrogate epoch; `step(loss)` takes one optimizer step on the loss. The surrogate is
  /// in training mode when it is called.
  virtual void train_epoch(const std::function<void(const torch::Tensor& loss)>& step,
                           std::mt19937_64& rng) = 0;
  /// f_c(x) without gradients.
  torch::Tensor smashed(const torch::Tensor& x);

  const ExtractionOptions& options() const { return options_; }
  ClientSide& client() { return client_; }
  const models::ModelConfig& model_config() const { return model_config_; }
  int64_t n_classes() const { return model_config_.num_classes; }

 private:
  ExtractionOptions options_;
  ClientSide client_;
  models::ModelConfig model_config_;
  ServerSide surrogate_{nullptr};
  int64_t queries_used_ = 0;
};

/// The attack `options.attack`. `attacker_data`: its labelled data (Train-ME, SoftTrain-ME;
/// images only for GM-ME's auxiliary data; unused by Craft-ME and GAN-ME, may be null). Throws
/// tessera::Error for bad options or missing data.
std::unique_ptr<ExtractionAttack> make_extraction_attack(const ExtractionOptions& options,
                                                         ClientSide attacker_client,
                                                         const models::ModelConfig& model,
                                                         const SplitOptions& split,
                                                         const data::Dataset* attacker_data);

/// Top-1 predictions of f_s(f_c(x)) on a data set ([N] int64), in eval mode.
torch::Tensor predict(ClientSide& client, ServerSide& server, const data::Dataset& dataset);

/// The attacker as an SFL client: honest until `start_epoch`; then `start_attack` is called
/// with the averaged client state (the attack starts its thread), and each of the attacker's
/// steps answers one query of that attack through `oracle`. Crafted steps do not update the
/// attacker's client weights (the papers' online attacks zero them). Honest again once the
/// attack has spent its budget.
class OnlineAttackerStrategy : public ClientStrategy {
 public:
  OnlineAttackerStrategy(std::shared_ptr<OnlineOracle> oracle, int64_t start_epoch,
                         std::function<void(const State& client_state)> start_attack);
  void begin_epoch(int64_t epoch, ClientSide& model) override;
  bool step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y) override;

 private:
  std::shared_ptr<OnlineOracle> oracle_;
  int64_t start_epoch_;
  std::function<void(const State&)> start_attack_;
  bool started_ = false;
  bool attack_finished_ = false;
};

}  // namespace tessera::splitfed
