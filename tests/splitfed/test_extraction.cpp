// Model-extraction attacks: query-budget accounting, the oracle's gradient against autograd,
// each of the five attacks within its budget, and the online setting through a live SFL run.
#include <gtest/gtest.h>

#include <thread>

#include "sfl_test_util.h"
#include "tessera/core/error.h"
#include "tessera/splitfed/extraction.h"
#include "tessera/splitfed/runtime.h"
#include "test_support.h"

namespace tessera::splitfed {
namespace {

using testing_util::tiny_options;
using testing_util::tiny_vgg;

class Extraction : public testing::SeededTest {};

TEST_F(Extraction, BudgetAccountingRefusesOverspending) {
  QueryBudget budget(100);
  budget.charge(60);
  budget.charge(40);
  EXPECT_EQ(budget.used(), 100);
  EXPECT_EQ(budget.remaining(), 0);
  EXPECT_THROW(budget.charge(1), Error);
  EXPECT_EQ(budget.used(), 100) << "a refused charge records nothing";
  EXPECT_THROW(QueryBudget(-1), Error);
  EXPECT_THROW(budget.charge(-5), Error);
}

TEST_F(Extraction, OfflineOracleReturnsTheCrossEntropyGradientAndCountsSamples) {
  auto [client, server] = make_split(tiny_vgg(), SplitOptions{4});
  server->eval();
  OfflineOracle oracle(server, 10);
  const torch::Tensor z = torch::randn({4, 8, 2, 2});
  const torch::Tensor y = torch::tensor({0, 2, 1, 1}, torch::kInt64);
  const torch::Tensor g = oracle.query(z, y);
  EXPECT_EQ(oracle.budget().used(), 4);
  // Independent check: central finite differences of the mean CE on two coordinates.
  auto loss_at = [&](const torch::Tensor& zz) {
    torch::NoGradGuard no_grad;
    return torch::nn::functional::cross_entropy(server->forward(zz.to(torch::kFloat32)), y)
        .item<double>();
  };
  for (const auto& index : std::vector<std::vector<int64_t>>{{0, 1, 0, 1}, {3, 7, 1, 0}}) {
    torch::Tensor plus = z.clone(), minus = z.clone();
    const double h = 1e-2;
    plus.index_put_({index[0], index[1], index[2], index[3]},
                    z.index({index[0], index[1], index[2], index[3]}) + h);
    minus.index_put_({index[0], index[1], index[2], index[3]},
                     z.index({index[0], index[1], index[2], index[3]}) - h);
    const double numeric = (loss_at(plus) - loss_at(minus)) / (2 * h);
    EXPECT_NEAR(g.index({index[0], index[1], index[2], index[3]}).item<double>(), numeric, 2e-3);
  }
  EXPECT_NO_THROW(oracle.query(z, y));      // 4 + 4 <= 10
  EXPECT_THROW(oracle.query(z, y), Error);  // 4 + 4 + 4 > 10
  EXPECT_EQ(oracle.budget().used(), 8);
  OfflineOracle noisy(server, 100, 0.1);
  EXPECT_FALSE(torch::allclose(noisy.query(z, y), g));
}

TEST_F(Extraction, EveryAttackStaysWithinItsBudget) {
  const data::Dataset attacker = data::make_synthetic(60, 1, 8, 3, 11);
  const data::Dataset test = data::make_synthetic(30, 1, 8, 3, 12);
  auto [client, server] = make_split(tiny_vgg(), SplitOptions{4});
  const torch::Tensor target_predictions = predict(client, server, test);
  for (const ExtractionAttackKind attack : all_extraction_attacks()) {
    ExtractionOptions options;
    options.attack = attack;
    options.budget = 400;
    options.surrogate_epochs = 2;
    options.craft_steps = 10;
    options.gan_batch = 20;
    options.query_batch = 20;
    options.gan_iterations = 2;
    const auto me = make_extraction_attack(options, client, tiny_vgg(), SplitOptions{4}, &attacker);
    EXPECT_EQ(me->kind(), attack);
    OfflineOracle oracle(server, options.budget);
    me->collect(oracle);
    const ExtractionResult r = me->fit(test, target_predictions);
    const std::string name = extraction_attack_name(attack);
    EXPECT_EQ(r.attack, attack);
    EXPECT_LE(r.queries_used, options.budget) << name;
    EXPECT_EQ(r.queries_used, oracle.budget().used()) << name;
    if (attack != ExtractionAttackKind::train) {
      EXPECT_GT(r.queries_used, 0) << name;
    }
    EXPECT_EQ(parse_extraction_attack(name), attack);
    EXPECT_GE(r.best_accuracy, 0.0);
    EXPECT_LE(r.best_fidelity, 1.0);
  }
  EXPECT_THROW(parse_extraction_attack("steal"), Error);
  ExtractionOptions bad;
  bad.budget = -1;
  EXPECT_THROW(make_extraction_attack(bad, client, tiny_vgg(), SplitOptions{4}, &attacker), Error);
  ExtractionOptions needs_data;
  needs_data.attack = ExtractionAttackKind::softtrain;
  EXPECT_THROW(make_extraction_attack(needs_data, client, tiny_vgg(), SplitOptions{4}, nullptr),
               Error);
}

TEST_F(Extraction, TrainMeLearnsFromLabelledDataAboveChance) {
  const data::Dataset attacker = data::make_synthetic(300, 1, 8, 3, 21);
  const data::Dataset test = data::make_synthetic(150, 1, 8, 3, 22);
  auto [client, server] = make_split(tiny_vgg(), SplitOptions{4});
  ExtractionOptions options;
  options.attack = ExtractionAttackKind::train;
  options.surrogate_epochs = 15;
  options.lr = 0.05;
  const auto me = make_extraction_attack(options, client, tiny_vgg(), SplitOptions{4}, &attacker);
  OfflineOracle oracle(server, 0);
  me->collect(oracle);
  const ExtractionResult r = me->fit(test, predict(client, server, test));
  EXPECT_GT(r.best_accuracy, 0.6) << "chance is 1/3";
}

TEST_F(Extraction, OnlineAttackQueriesThroughTheAttackersSflSteps) {
  const data::Dataset train = data::make_synthetic(48, 1, 8, 3, 31);
  const data::Dataset test = data::make_synthetic(30, 1, 8, 3, 32);
  SflOptions o = tiny_options(train.size(), 3, Ordering::v2);
  o.epochs = 2;
  auto oracle = std::make_shared<OnlineOracle>(60);
  std::thread attack_thread;
  std::unique_ptr<ExtractionAttack> me;
  ExtractionOptions options;
  options.attack = ExtractionAttackKind::craft;
  options.budget = 60;
  options.craft_steps = 2;
  options.surrogate_epochs = 1;
  auto strategy =
      std::make_shared<OnlineAttackerStrategy>(oracle, /*start_epoch=*/1, [&](const State& state) {
        auto sides = make_split(o.model, o.split);
        load_state(*sides.first, state);
        me = make_extraction_attack(options, sides.first, o.model, o.split, nullptr);
        attack_thread = std::thread([&] {
          me->collect(*oracle);
          oracle->attack_done();
        });
      });
  const RunResult run = run_in_process(o, train, &test, {}, {{2, strategy}});
  oracle->close();
  ASSERT_TRUE(attack_thread.joinable()) << "the attack started at epoch 1";
  attack_thread.join();
  // 2 batches per epoch (16 samples per shard, batch 8): the attacker has 2 steps in epoch 1,
  // each answering one Craft-ME query of 60 / 3 / 2 = 10 images. The third query was never
  // answered (the run ended) and is not counted.
  EXPECT_EQ(oracle->budget().used(), 2 * 10);
  EXPECT_EQ(run.history.size(), 2u);
}

}  // namespace
}  // namespace tessera::splitfed
