// The subnet bench on tiny options and synthetic data in a scratch model cache: rows, MACs,
// latency, goals, JSON, plot, the cache reused on a second run, reference files, bad options.
#include <gtest/gtest.h>

#include <filesystem>

#include "tessera/subnet/bench.h"
#include "tessera/train/cache.h"
#include "test_support.h"

namespace tessera::subnet {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;
using tessera::testing::TempDir;

class Bench : public SeededTest {};

SubnetBenchOptions tiny_options() {
  SubnetBenchOptions o;
  o.net.image_size = 8;
  o.net.num_classes = 4;
  o.net.stage_channels = {8, 12};
  o.net.blocks_per_stage = 1;
  o.batch_size = 32;
  o.pretrain_steps = 6;
  o.train_steps = 4;
  o.search.group = 2;
  o.search.targets = {0.5, 0.25};
  o.search.finetune_steps = 2;
  o.search.batch_size = 32;
  o.search.calibration_images = 64;
  o.calibration_images = 64;
  o.latency_batches = {1, 4};
  o.latency_reps = 2;
  o.switch_reps = 5;
  return o;
}

TEST_F(Bench, ComparesEverySubnetWithUsNetAtEqualFlops) {
  TempDir dir;
  train::set_cache_dir(dir.path());
  const auto train_set = data::make_synthetic(256, 1, 8, 4, 1);
  const auto val_set = data::make_synthetic(64, 1, 8, 4, 2);
  const auto test_set = data::make_synthetic(64, 1, 8, 4, 3);
  const SubnetBenchResult r = run_subnet_bench(train_set, val_set, test_set, tiny_options());
  ASSERT_GE(r.rows.size(), 2u);  // the full net and at least one reduced sub-net survive
  EXPECT_EQ(r.eval_images, 64);
  EXPECT_EQ(r.rows[0].ours_macs, r.full_macs);
  EXPECT_EQ(r.rows[0].usnet_macs, r.full_macs);
  for (size_t k = 1; k < r.rows.size(); ++k) {
    EXPECT_LT(r.rows[k].ours_macs, r.rows[k - 1].ours_macs);
    // US-Net's width is the closest uniform width: within 25% of ours' MACs on this tiny net.
    EXPECT_NEAR(double(r.rows[k].usnet_macs), double(r.rows[k].ours_macs),
                0.25 * double(r.rows[k].ours_macs));
  }
  for (const auto& row : r.rows) {
    ASSERT_EQ(row.ours_ms.size(), 2u);
    EXPECT_GT(row.ours_ms[0], 0.0);
    EXPECT_GE(row.ours_accuracy, 0.0);
    EXPECT_LE(row.ours_accuracy, 1.0);
  }
  EXPECT_GT(r.switch_us, 0.0);
  EXPECT_GT(r.reload_ms, 0.0);
  EXPECT_EQ(r.usnet_steps, 4 + r.finetune_steps);  // equal training budget
  const auto json = r.to_json();
  EXPECT_EQ(json.at("rows").size(), r.rows.size());
  EXPECT_GE(r.goals_table().n_rows(), 4u);
  EXPECT_NE(r.accuracy_flops_plot().render().find("US-Net"), std::string::npos);
  EXPECT_NE(r.to_string().find("Goals"), std::string::npos);
  // The second run reuses the three cached files and measures the same accuracies.
  size_t files = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 3u);
  const SubnetBenchResult again = run_subnet_bench(train_set, val_set, test_set, tiny_options());
  ASSERT_EQ(again.rows.size(), r.rows.size());
  for (size_t k = 0; k < r.rows.size(); ++k)
    EXPECT_EQ(again.rows[k].ours_accuracy, r.rows[k].ours_accuracy);
  train::set_cache_dir("");
}

TEST_F(Bench, BadOptionsAreClearErrors) {
  SubnetBenchOptions o = tiny_options();
  o.latency_batches = {};
  EXPECT_NE(error_of([&] { o.validate(); }).find("latency_batches"), std::string::npos);
  o = tiny_options();
  o.usnet_min_width = 0;
  EXPECT_NE(error_of([&] { o.validate(); }).find("usnet_min_width"), std::string::npos);
  o = tiny_options();
  o.search.targets = {0.02};  // below the smallest sub-net groups of 2 reach
  TempDir dir;
  train::set_cache_dir(dir.path());
  const auto set = data::make_synthetic(128, 1, 8, 4, 1);
  EXPECT_NE(error_of([&] { prepare_models(set, set, o); }).find("below the smallest"),
            std::string::npos);
  train::set_cache_dir("");
}

TEST_F(Bench, ReferenceFilesNameTheThreeStages) {
  const auto files = reference_files();
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].name, "subnet-pretrain");
  EXPECT_EQ(files[1].name, "subnet-ours");
  EXPECT_EQ(files[2].name, "subnet-usnet");
  EXPECT_NE(files[0].path().find("subnet-pretrain-"), std::string::npos);
}

}  // namespace
}  // namespace tessera::subnet
