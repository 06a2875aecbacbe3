// The vit_prune bench functions on tiny options: the sweep on a small trained ViT (rows, keep 1
// against unpruned, plans, latency, equal-FLOPs rows, goals, JSON, plots), the fine-tune with
// pruning active, the ImageNet FLOPs table, the method settings, the reference model recipe and
// bad options.
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/train/train.h"
#include "tessera/vit_prune/bench.h"
#include "test_support.h"
#include "vit_fixture.h"

namespace tessera::vit_prune {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;

class Bench : public SeededTest {};

data::Dataset small_data(int64_t n, uint64_t seed) {
  return data::make_synthetic(n, 1, 8, 4, seed);
}

models::Model trained_small_vit() {
  models::Model model = testing::small_vit(3);
  model->train();
  train::TrainOptions o;
  o.epochs = 3;
  o.batch_size = 32;
  o.optimizer = "adamw";
  o.lr = 3e-3;
  o.augment_pad = 0;
  o.augment_flip = false;
  o.progress_label = "small vit";
  train::fit(model, small_data(256, 1), nullptr, o);
  return model;
}

VitBenchOptions tiny_options() {
  VitBenchOptions o;
  o.keep_ratios = {1.0, 0.5};
  o.calibration_images = 32;
  o.latency_batches = {1, 4};
  o.latency_reps = 2;
  o.finetune_steps = 3;
  return o;
}

TEST_F(Bench, SweepReportsEveryMethodAndKeepRatio) {
  models::Model model = trained_small_vit();
  const auto train_set = small_data(128, 2), test_set = small_data(64, 3);
  const VitBenchResult r = run_vit_bench(model, train_set, test_set, tiny_options());
  // unpruned + 3 methods x (2 ratios + the fine-tuned copy at 0.5).
  ASSERT_EQ(r.rows.size(), 10u);
  EXPECT_EQ(r.rows[0].method, "unpruned");
  EXPECT_EQ(r.eval_images, 64);
  EXPECT_DOUBLE_EQ(r.rows[0].macs_saved, 0.0);
  for (const auto& row : r.rows) {
    ASSERT_EQ(row.latency_ms.size(), 2u) << row.method;
    EXPECT_GT(row.latency_ms[0], 0.0);
    EXPECT_GT(row.speedup[1], 0.0);
    if (row.target_keep == 1.0) {
      EXPECT_DOUBLE_EQ(row.accuracy, r.rows[0].accuracy) << row.method << " at keep 1";
      EXPECT_EQ(row.macs.total - row.macs.extra, r.rows[0].macs.total) << row.method;
    } else {
      EXPECT_GT(row.macs_saved, 0.1) << row.method;
      EXPECT_LT(row.final_tokens, 17) << row.method;
    }
  }
  EXPECT_EQ(r.rows[2].method, "cp-vit");
  EXPECT_EQ(r.rows[2].final_tokens, 9);  // 8 of 16 patches + CLS
  EXPECT_EQ(r.rows[3].method, "cp-vit+ft");
  EXPECT_EQ(r.rows[3].macs.total, r.rows[2].macs.total);
  EXPECT_EQ(r.rows[6].method, "evit+ft");
  EXPECT_EQ(r.rows[9].method, "tome+ft");
  ASSERT_EQ(r.equal_flops.size(), 2u);
  EXPECT_EQ(r.equal_flops[0].baselines, (std::vector<std::string>{"evit", "tome"}));
  EXPECT_FALSE(r.equal_flops[0].fine_tuned);
  EXPECT_EQ(r.equal_flops[1].baselines, (std::vector<std::string>{"evit+ft", "tome+ft"}));
  EXPECT_TRUE(r.equal_flops[1].fine_tuned);
  EXPECT_EQ(r.table().n_rows(), 10u);
  EXPECT_EQ(r.equal_flops_table().n_rows(), 2u);
  EXPECT_GE(r.goals_table().n_rows(), 1u);
  const auto json = r.to_json();
  EXPECT_EQ(json["rows"].size(), 10u);
  EXPECT_TRUE(json["rows"][2]["detail"]["schedule"].contains("kept_patches"));
  EXPECT_NE(r.svg().find("<svg"), std::string::npos);
  EXPECT_NE(r.to_string().find("Goals"), std::string::npos);
}

TEST_F(Bench, PrunedForwardTrainsTheKeptHeadsOnly) {
  models::Model model = trained_small_vit();
  CascadeOptions o;
  o.keep_ratio = 0.5;
  o.head_keep_ratio = 0.5;
  const CascadeSchedule s = calibrate_cascade(model, small_data(32, 4).images, o);
  // Gradients of one pruned training forward reach the kept heads' rows and no others.
  model->train();
  model->zero_grad();  // no gradients left over from training
  ReducedVit engine(model, s.kept_heads);
  CascadePruner pruner(s, o.patch_score);
  const auto batch = small_data(16, 5);
  torch::nn::functional::cross_entropy(engine.forward(batch.images, &pruner).logits, batch.labels)
      .backward();
  auto* vit = dynamic_cast<models::VitImpl*>(model.ptr().get());
  const torch::Tensor grad = vit->blocks()[0]->attn->qkv->weight.grad();
  const int64_t head_dim = 4;
  for (int64_t h = 0; h < 4; ++h) {
    const bool kept =
        std::find(s.kept_heads[0].begin(), s.kept_heads[0].end(), h) != s.kept_heads[0].end();
    const double norm = grad.slice(0, h * head_dim, (h + 1) * head_dim).abs().sum().item<double>();
    EXPECT_EQ(norm > 0.0, kept) << "head " << h;
  }
  model->zero_grad();
  // The fine-tune through train::fit moves the weights and ends with a finite loss.
  const torch::Tensor before = vit->blocks()[1]->fc1->weight.clone();
  FinetuneOptions fo;
  fo.steps = 4;
  fo.batch_size = 16;
  fo.lr = 1e-3;
  const double loss = finetune_reduced(model, s.kept_heads, pruner, small_data(64, 5), fo);
  EXPECT_TRUE(std::isfinite(loss));
  EXPECT_FALSE(torch::equal(before, vit->blocks()[1]->fc1->weight));
  EXPECT_FALSE(model->is_training());
}

TEST_F(Bench, FinetuneDistillsFromTheUnprunedModel) {
  models::Model model = trained_small_vit();
  CascadeOptions o;
  o.keep_ratio = 1.0;  // nothing pruned: the student starts equal to its teacher
  const CascadeSchedule s = calibrate_cascade(model, small_data(32, 4).images, o);
  FinetuneOptions fo;
  fo.steps = 3;
  fo.batch_size = 16;
  fo.lr = 1e-4;
  fo.distill_weight = 1.0;
  CascadePruner pruner(s, o.patch_score);
  const double kl = finetune_reduced(model, s.kept_heads, pruner, small_data(48, 6), fo);
  EXPECT_GE(kl, 0.0);
  EXPECT_LT(kl, 1e-4);  // the divergence of equal predictions; labels carry no weight
  fo.distill_weight = 0.0;
  const double ce = finetune_reduced(model, s.kept_heads, pruner, small_data(48, 6), fo);
  EXPECT_GT(ce, 0.1);  // cross-entropy on labels the tiny model does not fit
  fo.distill_weight = 1.5;
  EXPECT_NE(error_of([&] { fo.validate(); }).find("distill_weight"), std::string::npos);
}

TEST_F(Bench, MethodSettingsFollowTheTargetKeepRatio) {
  VitShape s = VitShape::deit_small();
  const auto evit = method_setting(Method::evit, 0.5, s, {}, true, true);
  EXPECT_NEAR(evit.evit.keep_rate, std::cbrt(0.5), 1e-12);
  const auto tome = method_setting(Method::tome, 0.5, s, {}, true, true);
  EXPECT_EQ(tome.tome.r, 8);  // round(0.5 x 196 / 12) = round(8.17)
  const auto cp = method_setting(Method::cpvit, 0.5, s, {}, true, true);
  EXPECT_DOUBLE_EQ(cp.cascade.keep_ratio, 0.5);
  EXPECT_EQ(parse_method(method_name(Method::tome)), Method::tome);
  EXPECT_NE(error_of([] { parse_method("dynamicvit"); }).find("unknown vit pruning method"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              method_setting(Method::evit, 0.0, s, {}, true, true);
            }).find("keep ratio must be in (0, 1]"),
            std::string::npos);
}

TEST_F(Bench, ImagenetTableHasEveryMethodPerRatio) {
  const ImagenetFlopsResult r = imagenet_flops({1.0, 0.7, 0.5}, CascadeOptions{});
  // unpruned, 3 methods x 2 ratios (1.0 skipped), 2 published settings.
  EXPECT_EQ(r.table.n_rows(), 9u);
  const auto json = r.to_json();
  EXPECT_EQ(json["table"][0]["GMACs"], "4.599");  // 4,598,882,304 MACs
  EXPECT_EQ(json["shape"]["dim"], 384);
}

TEST_F(Bench, ReferenceModelIsTheDocumentedVit) {
  const train::TrainRecipe recipe = reference_recipe();
  EXPECT_EQ(recipe.arch.name, "vit");
  EXPECT_EQ(recipe.arch.image_size, 28);
  EXPECT_EQ(recipe.arch.extra["patch_size"], 4);
  EXPECT_EQ(recipe.arch.extra["depth"], 6);
  EXPECT_EQ(recipe.arch.extra["dim"], 64);
  const auto refs = reference_models();
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_EQ(refs[0].name, "vit-fmnist");
  EXPECT_EQ(refs[0].recipe().key(), recipe.key());
}

TEST_F(Bench, BadOptionsAndModelsAreErrors) {
  VitBenchOptions o = tiny_options();
  o.keep_ratios = {0.5, 1.2};
  EXPECT_NE(error_of([&] { o.validate(); }).find("keep ratio 1.2 not in (0, 1]"),
            std::string::npos);
  o = tiny_options();
  o.methods = {"cp-vit", "a-vit"};
  EXPECT_NE(error_of([&] { o.validate(); }).find("unknown vit pruning method 'a-vit'"),
            std::string::npos);
  o = tiny_options();
  o.cascade.head_keep_ratio = 0.1;  // round(0.4) = 0 of 4 heads
  models::Model model = testing::small_vit(3);
  const auto set = small_data(16, 6);
  EXPECT_NE(error_of([&] { run_vit_bench(model, set, set, o); }).find("every head"),
            std::string::npos);
  models::ModelConfig vgg;
  vgg.name = "vgg11_bn";
  vgg.image_size = 32;
  vgg.width_mult = 0.125;
  models::Model not_vit = models::create(vgg);
  EXPECT_NE(error_of([&] { run_vit_bench(not_vit, set, set, tiny_options()); }).find("needs a ViT"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera::vit_prune
