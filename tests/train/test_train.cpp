// Tests for the training loop, schedules and evaluation.
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/train/train.h"
#include "test_support.h"

namespace tessera::train {
namespace {

using testing::SeededTest;

TEST(LearningRate, CosineStartsAtPeakAndDecaysToNearZero) {
  TrainOptions o;
  o.epochs = 10;
  o.lr = 0.1;
  o.schedule = "cosine";
  EXPECT_DOUBLE_EQ(learning_rate(o, 0), 0.1);
  EXPECT_NEAR(learning_rate(o, 5), 0.05, 1e-12);
  EXPECT_NEAR(learning_rate(o, 9), 0.5 * 0.1 * (1 + std::cos(M_PI * 0.9)), 1e-12);
  for (int64_t e = 1; e < 10; ++e) EXPECT_LT(learning_rate(o, e), learning_rate(o, e - 1));
}

TEST(LearningRate, StepMultistepAndWarmupFollowTheirFormulas) {
  TrainOptions o;
  o.epochs = 100;
  o.lr = 1.0;
  o.gamma = 0.1;
  o.schedule = "step";
  o.step_size = 30;
  EXPECT_DOUBLE_EQ(learning_rate(o, 29), 1.0);
  EXPECT_NEAR(learning_rate(o, 30), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(o, 65), 0.01, 1e-12);
  o.schedule = "multistep";
  o.milestones = {50, 75};
  EXPECT_DOUBLE_EQ(learning_rate(o, 49), 1.0);
  EXPECT_NEAR(learning_rate(o, 50), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(o, 80), 0.01, 1e-12);
  o.schedule = "constant";
  o.warmup_epochs = 5;
  EXPECT_NEAR(learning_rate(o, 0), 0.1, 1e-12);
  EXPECT_NEAR(learning_rate(o, 5), 1.0, 1e-12);
}

TEST(TrainOptions, RejectsEachBadField) {
  struct Case {
    const char* what;
    std::function<void(TrainOptions&)> mutate;
  };
  const std::vector<Case> cases = {
      {"epochs", [](TrainOptions& o) { o.epochs = 0; }},
      {"batch", [](TrainOptions& o) { o.batch_size = -1; }},
      {"optimizer", [](TrainOptions& o) { o.optimizer = "rmsprop"; }},
      {"lr", [](TrainOptions& o) { o.lr = 0; }},
      {"momentum", [](TrainOptions& o) { o.momentum = 1.5; }},
      {"schedule", [](TrainOptions& o) { o.schedule = "linear"; }},
      {"warm-up", [](TrainOptions& o) { o.warmup_epochs = o.epochs; }},
      {"smoothing", [](TrainOptions& o) { o.label_smoothing = 1.0; }},
  };
  for (const auto& c : cases) {
    TrainOptions o;
    c.mutate(o);
    EXPECT_THROW(o.validate(), Error) << c.what;
  }
  EXPECT_NO_THROW(TrainOptions().validate());
}

TEST(SetLearningRate, ChangesEveryParamGroupForSgdAndAdam) {
  auto w = torch::zeros({3}, torch::requires_grad());
  for (const char* name : {"sgd", "adam"}) {
    TrainOptions o;
    o.optimizer = name;
    auto optimizer = make_optimizer({w}, o);
    set_learning_rate(*optimizer, 0.123);
    for (auto& group : optimizer->param_groups())
      EXPECT_DOUBLE_EQ(group.options().get_lr(), 0.123) << name;
  }
}

TEST_F(SeededTest, EvaluateCountsCorrectPredictions) {
  data::Dataset d;
  d.name = "hand";
  d.images = torch::zeros({5, 1, 2, 2});
  d.labels = torch::tensor({0, 1, 1, 0, 1}, torch::kInt64);
  d.num_classes = 2;
  // Always predicts class 1: 3 of 5 correct; loss is log(1 + e^-2)... computed independently.
  auto forward = [](const torch::Tensor& x) {
    return torch::tensor({0.0f, 2.0f}).repeat({x.size(0), 1});
  };
  auto result = evaluate(forward, d, /*batch_size=*/2);
  EXPECT_DOUBLE_EQ(result.accuracy, 0.6);
  const double loss_right = std::log(1 + std::exp(-2.0));
  const double loss_wrong = std::log(1 + std::exp(2.0));
  EXPECT_NEAR(result.loss, (3 * loss_right + 2 * loss_wrong) / 5, 1e-6);
  EXPECT_EQ(result.n, 5);
}

TEST_F(SeededTest, FitLearnsSyntheticDataAndReportsEachEpoch) {
  auto train_set = data::make_synthetic(512, 1, 8, 4, /*seed=*/1);
  auto test_set = data::make_synthetic(256, 1, 8, 4, /*seed=*/2);
  torch::nn::Sequential net(torch::nn::Flatten(), torch::nn::Linear(64, 32), torch::nn::ReLU(),
                            torch::nn::Linear(32, 4));
  const double before = evaluate(net, test_set).accuracy;
  TrainOptions o;
  o.epochs = 5;
  o.batch_size = 32;
  o.lr = 0.05;
  o.augment_pad = 0;
  o.augment_flip = false;
  int calls = 0;
  TrainHooks hooks;
  hooks.on_epoch = [&](const EpochStats& s) {
    ++calls;
    EXPECT_EQ(s.epoch, calls);
    return true;
  };
  auto history = fit(net, train_set, &test_set, o, hooks);
  ASSERT_EQ(history.size(), 5u);
  EXPECT_EQ(calls, 5);
  EXPECT_LT(history.back().train_loss, history.front().train_loss);
  EXPECT_GT(history.back().test_accuracy, 0.9) << "before training: " << before;
}

TEST_F(SeededTest, FitStopsWhenTheCallbackSaysSo) {
  auto train_set = data::make_synthetic(64, 1, 8, 2, 3);
  torch::nn::Sequential net(torch::nn::Flatten(), torch::nn::Linear(64, 2));
  TrainOptions o;
  o.epochs = 10;
  o.batch_size = 16;
  TrainHooks hooks;
  hooks.on_epoch = [](const EpochStats& s) { return s.epoch < 3; };
  auto history = fit(net, train_set, nullptr, o, hooks);
  EXPECT_EQ(history.size(), 3u);
  EXPECT_LT(history[0].test_accuracy, 0) << "no test set: test accuracy is marked -1";
}

}  // namespace
}  // namespace tessera::train
