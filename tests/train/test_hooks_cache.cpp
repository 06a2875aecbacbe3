// Tests for the training loop's hooks and step budget, the model cache, and the foundation's
// bench functions (run_training, describe_model).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/train/bench.h"
#include "tessera/train/cache.h"
#include "tessera/train/train.h"
#include "test_support.h"

namespace tessera::train {
namespace {

using testing::SeededTest;
using testing::TempDir;

TEST(LearningRateAtStep, WarmsUpLinearlyThenFollowsTheCosine) {
  TrainOptions o;
  o.lr = 1.0;
  o.schedule = "cosine";
  o.per_step_schedule = true;
  o.warmup_steps = 10;
  EXPECT_DOUBLE_EQ(learning_rate_at_step(o, 0, 110), 0.1);
  EXPECT_DOUBLE_EQ(learning_rate_at_step(o, 5, 110), 0.55);
  EXPECT_DOUBLE_EQ(learning_rate_at_step(o, 10, 110), 1.0);
  EXPECT_NEAR(learning_rate_at_step(o, 60, 110), 0.5, 1e-12);
  o.schedule = "constant";
  EXPECT_DOUBLE_EQ(learning_rate_at_step(o, 60, 110), 1.0);
  o.schedule = "step";
  EXPECT_THROW(o.validate(), Error);
}

TEST_F(SeededTest, HooksRunInOrderOncePerStepUnderAStepBudget) {
  auto train_set = data::make_synthetic(40, 1, 4, 2, 3);  // 40 images, batch 16: 3 batches a pass
  torch::nn::Sequential net(torch::nn::Flatten(), torch::nn::Linear(16, 2));
  TrainOptions o;
  o.steps = 7;  // two full passes and one step of a third
  o.batch_size = 16;
  o.augment_pad = 0;
  o.augment_flip = false;
  o.per_step_schedule = true;
  o.warmup_steps = 2;
  std::vector<std::string> events;
  TrainHooks hooks;
  hooks.before_step = [&](int64_t s) { events.push_back("before" + std::to_string(s)); };
  hooks.loss = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    events.push_back("loss");
    auto logits = net->forward(images);
    return StepLoss{torch::nn::functional::cross_entropy(logits, labels), logits};
  };
  hooks.after_backward = [&](int64_t s) {
    // The gradient exists here and the optimizer has not consumed it yet.
    EXPECT_TRUE(net->parameters()[0].grad().defined());
    events.push_back("backward" + std::to_string(s));
  };
  hooks.after_step = [&](int64_t s) { events.push_back("after" + std::to_string(s)); };
  const auto history = fit(net, train_set, nullptr, o, hooks);
  ASSERT_EQ(history.size(), 3u) << "a partial last pass counts as an epoch";
  ASSERT_EQ(events.size(), 7u * 4u);
  for (int64_t s = 0; s < 7; ++s) {
    EXPECT_EQ(events[static_cast<size_t>(4 * s)], "before" + std::to_string(s));
    EXPECT_EQ(events[static_cast<size_t>(4 * s + 1)], "loss");
    EXPECT_EQ(events[static_cast<size_t>(4 * s + 2)], "backward" + std::to_string(s));
    EXPECT_EQ(events[static_cast<size_t>(4 * s + 3)], "after" + std::to_string(s));
  }
  EXPECT_DOUBLE_EQ(history[0].lr, learning_rate_at_step(o, 0, 7));
  EXPECT_DOUBLE_EQ(history[1].lr, learning_rate_at_step(o, 3, 7));
}

TEST_F(SeededTest, AfterBackwardCanFreezeAWeightByZeroingItsGradient) {
  auto train_set = data::make_synthetic(32, 1, 4, 2, 3);
  torch::nn::Linear linear(16, 2);
  torch::nn::Sequential net(torch::nn::Flatten(), linear);
  const torch::Tensor before = linear->weight.detach().clone();
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 8;
  o.weight_decay = 0;
  o.momentum = 0;
  TrainHooks hooks;
  hooks.after_backward = [&](int64_t) { linear->weight.mutable_grad().zero_(); };
  fit(net, train_set, nullptr, o, hooks);
  EXPECT_TRUE(torch::equal(linear->weight, before));
}

TEST_F(SeededTest, RunStepsMinimizesTheCallersLossWithClippingAndATimeBudget) {
  // Least squares on a fixed batch: the loop must drive the loss down from its start.
  torch::nn::Linear linear(4, 1);
  const auto x = torch::randn({64, 4});
  const auto y = x.matmul(torch::tensor({1.0f, -2.0f, 0.5f, 3.0f}).unsqueeze(1));
  TrainOptions o;
  o.optimizer = "adamw";
  o.beta2 = 0.95;
  o.lr = 0.05;
  o.weight_decay = 0;
  o.steps = 200;
  o.warmup_steps = 10;
  o.schedule = "cosine";
  o.min_lr_ratio = 0.1;
  o.clip_grad_norm = 1.0;
  std::vector<int64_t> seen;
  const StepRunResult r = run_steps(*linear, o, [&](int64_t step) {
    seen.push_back(step);
    return torch::mse_loss(linear->forward(x), y);
  });
  ASSERT_EQ(r.steps, 200);
  ASSERT_EQ(r.losses.size(), 200u);
  EXPECT_EQ(seen.front(), 0);
  EXPECT_EQ(seen.back(), 199);
  EXPECT_LT(r.losses.back(), 0.05 * r.losses.front());
  EXPECT_NEAR(learning_rate_at_step(o, 199, 200), 0.1 * 0.05, 1e-4) << "cosine ends at min ratio";
  o.max_seconds = 1e-9;  // the budget is spent before the second step
  EXPECT_LE(
      run_steps(*linear, o, [&](int64_t) { return torch::mse_loss(linear->forward(x), y); }).steps,
      1);
  o.steps = 0;
  EXPECT_THROW(run_steps(*linear, o, [&](int64_t) { return torch::zeros({}); }), Error);
}

TrainRecipe tiny_recipe() {
  TrainRecipe recipe;
  recipe.arch.name = "vgg11_bn";
  recipe.arch.width_mult = 0.125;
  recipe.arch.image_size = 32;
  recipe.options.epochs = 1;
  recipe.options.batch_size = 16;
  return recipe;
}

TEST(TrainRecipe, KeyIsStableAndChangesWithEveryIngredient) {
  const TrainRecipe a = tiny_recipe();
  EXPECT_EQ(a.key(), tiny_recipe().key());
  EXPECT_EQ(a.key().rfind("vgg11_bn-", 0), 0u);
  EXPECT_EQ(a.key().size(), std::string("vgg11_bn-").size() + 16);
  TrainRecipe b = tiny_recipe();
  b.options.lr = 0.01;
  TrainRecipe c = tiny_recipe();
  c.train_images = 100;
  TrainRecipe d = tiny_recipe();
  d.extra["bn_recalibration"] = 2000;
  TrainRecipe e = tiny_recipe();
  e.arch.width_mult = 0.25;
  for (const auto* r : {&b, &c, &d, &e}) EXPECT_NE(r->key(), a.key());
}

TEST_F(SeededTest, CachedModelTrainsOnceThenReusesTheFile) {
  TempDir dir;
  set_cache_dir(dir.path() + "/cache");
  const TrainRecipe recipe = tiny_recipe();
  auto train_set = data::make_synthetic(32, 1, 32, 10, 3);
  int trained = 0;
  auto make = [&] {
    ++trained;
    auto model = models::create(recipe.arch);
    fit(model, train_set, nullptr, recipe.options);
    return model;
  };
  models::Model first = cached_model(recipe, make);
  EXPECT_TRUE(file_exists(cached_path(recipe)));
  models::Model second = cached_model(recipe, make);
  EXPECT_EQ(trained, 1);
  auto x = torch::randn({2, 1, 32, 32});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(first->forward(x), second->forward(x)));
  // A file whose architecture differs from the recipe's is refused, not silently reused.
  TrainRecipe other = recipe;
  other.arch.width_mult = 0.25;
  std::filesystem::copy_file(cached_path(recipe), cached_path(other));
  EXPECT_NE(testing::error_of([&] { cached_model(other, make); }).find("architecture"),
            std::string::npos);
  set_cache_dir("");
}

TEST(DescribeModel, CountsParametersAndMacsOfTheWorkload) {
  models::ModelConfig config;
  config.name = "resnet20";
  auto model = models::create(config);
  const ModelInfo info = describe_model(model);
  EXPECT_EQ(info.parameters, models::count_parameters(*model));
  EXPECT_EQ(info.macs, model->workload().total_macs());
  EXPECT_EQ(info.units.n_rows(), model->n_units());
  EXPECT_GT(info.layers.n_rows(), 19u);  // 19 convolutions and the classifier
  EXPECT_NE(info.summary().find("parameters: "), std::string::npos);
}

TEST_F(SeededTest, RunTrainingTrainsOnFashionMnistAndReportsEveryEpoch) {
  TrainRunOptions o;
  o.arch.width_mult = 0.5;  // resnet20 at half width
  o.train.epochs = 2;
  o.train.batch_size = 32;
  o.train_subset = 1024;
  TempDir dir;
  o.checkpoint_path = dir.file("ckpt.safetensors");
  const TrainRunResult r = run_training(o);
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_EQ(r.train_images, 1024);
  EXPECT_EQ(r.test.n, 10000);
  EXPECT_GT(r.test.accuracy, 0.2) << "64 steps on 1024 images beat chance (10%)";
  EXPECT_DOUBLE_EQ(r.test.accuracy, r.epochs.back().test_accuracy);
  EXPECT_TRUE(file_exists(o.checkpoint_path));
  EXPECT_EQ(r.table().n_rows(), 2u);
  EXPECT_EQ(r.to_json()["epochs"].size(), 2u);
  EXPECT_NE(r.svg().find("<polyline"), std::string::npos);
  o.train_subset = -1;
  EXPECT_THROW(run_training(o), Error);
}

}  // namespace
}  // namespace tessera::train
