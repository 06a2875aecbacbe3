// The plane-budget bench on tiny options: a MobileNetV2 donor trained on synthetic images, two
// mean budgets fine-tuned through the model cache, ratios against every named baseline, paired
// drops and the cost table; bad budgets.
#include <gtest/gtest.h>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/models/model_io.h"
#include "tessera/reram/bench_budget.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

class ReramBudgetBench : public testing::SeededTest {};

ImageLoader synthetic_images() {
  return [](const std::string& split, int64_t size) {
    return split == "train" ? data::make_synthetic(160, 1, size, 10, 1)
                            : data::make_synthetic(64, 1, size, 10, 2);
  };
}

TEST_F(ReramBudgetBench, FineTunesEveryBudgetAndComparesEveryBaseline) {
  testing::TempDir dir;
  train::set_cache_dir(dir.file("cache"));
  BudgetBenchOptions o;
  BenchOptions& b = o.base;
  b.networks = {ImagenetNetwork::MobileNetV2};
  b.mobilenet_donor = dir.file("donor.safetensors");
  b.mobilenet_image_size = 8;
  b.train_images = 64;
  b.val_images = 32;
  b.test_images = 48;
  b.fine_tune.steps = 2;
  b.fine_tune.batch_size = 16;
  b.max_drop_points = 100;  // every budget is within the accuracy budget
  o.mobilenet_budgets = {1.0, 3.0};
  o.fisher_images = 32;
  DonorTraining t = b.donor_training(ImagenetNetwork::MobileNetV2);
  t.epochs = 2;
  t.batch_size = 16;
  models::Model donor = train_fashion_model(t, synthetic_images()("train", 8), nullptr);
  models::save(b.mobilenet_donor, donor);

  const BudgetBenchResult r = run_budget_bench(o, synthetic_images());
  ASSERT_EQ(r.networks.size(), 1u);
  const BudgetNetwork& nb = r.networks[0];
  ASSERT_EQ(nb.baselines.size(), 4u);
  EXPECT_EQ(nb.baselines[0].crossbars,
            map_network(mobilenetv2_imagenet(), {}, named_baselines()[0], {}).total.crossbars);
  ASSERT_EQ(nb.points.size(), 2u);
  for (const BudgetPoint& p : nb.points) {
    EXPECT_TRUE(file_exists(p.model_file));
    EXPECT_EQ(p.val.images, 32);
    EXPECT_EQ(p.test.images, 48);
    EXPECT_GT(p.sme.crossbars, 0);
    EXPECT_LE(p.sme.crossbars, p.crossbars_no_residual);
    EXPECT_GT(p.mean_budget, 0.0);
    EXPECT_TRUE(p.sme.energy_pj.has_value());  // the diff8 spec has ISAAC-like figures
  }
  // A smaller mean budget keeps fewer planes: fewer crossbars, and it is chosen.
  EXPECT_LT(nb.points[0].sme.crossbars, nb.points[1].sme.crossbars);
  EXPECT_LT(nb.points[0].mean_budget, nb.points[1].mean_budget);
  EXPECT_EQ(nb.chosen, 0);
  EXPECT_GT(nb.map_seconds, 0.0);
  EXPECT_EQ(r.ratio_table().n_rows(), 2u);
  EXPECT_EQ(r.cost_table().n_rows(), 5u);  // four baselines + the chosen SME mapping
  const nlohmann::json j = r.to_json()["mobilenetv2"];
  EXPECT_EQ(j["points"][0]["reduction"].size(), 4u);
  EXPECT_DOUBLE_EQ(j["points"][0]["reduction"]["diff8"].get<double>(),
                   static_cast<double>(nb.baselines[0].crossbars) / nb.points[0].sme.crossbars);

  // A rerun finds both fine-tuned models and the control in the cache: the same numbers.
  const BudgetBenchResult again = run_budget_bench(o, synthetic_images());
  EXPECT_EQ(again.networks[0].points[0].sme.crossbars, nb.points[0].sme.crossbars);
  EXPECT_DOUBLE_EQ(again.networks[0].points[1].test.points, nb.points[1].test.points);

  o.mobilenet_budgets = {3.5};
  EXPECT_NE(
      testing::error_of([&] { run_budget_bench(o, synthetic_images()); }).find("must be in (0, 3]"),
      std::string::npos);
  train::set_cache_dir("");
}

}  // namespace
}  // namespace tessera::reram
