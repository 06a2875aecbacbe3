// The bench on tiny synthetic options: every method's row, the threshold sweep, goals, JSON,
// plot; the statistics helpers; bad options.
#include <gtest/gtest.h>

#include "tessera/metagater/bench.h"
#include "test_support.h"

namespace tessera::metagater {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;

class Bench : public SeededTest {};

MetagaterBenchOptions tiny_options() {
  MetagaterBenchOptions o;
  o.net.image_size = 8;
  o.net.width = 4;
  o.net.layers = 2;
  o.task.ways = 2;
  o.task.shots = 1;
  o.task.queries = 2;
  o.fed.rounds = 2;
  o.fed.nodes_per_round = 2;
  o.fed.local.steps = 1;
  o.fed.local.tasks_per_step = 1;
  o.train_nodes = 2;
  o.classes_per_node = 3;
  o.test_nodes = 2;
  o.test_tasks = 4;
  o.latency_images = 3;
  o.thresholds = {-100.0, 0.0, 1e9};
  o.synthetic = true;
  o.synthetic_images = 200;
  o.cache = false;
  return o;
}

TEST_F(Bench, EveryMethodGetsARowAndTheSweepRuns) {
  const MetagaterBenchResult r = run_metagater_bench(tiny_options());
  ASSERT_EQ(r.rows.size(), 5u);
  for (const auto& row : r.rows) {
    EXPECT_GE(row.accuracy, 0.0);
    EXPECT_LE(row.accuracy, 1.0);
    EXPECT_GE(row.ci95, 0.0);
    EXPECT_GT(row.latency_ms, 0.0);
    EXPECT_GT(row.train_seconds, 0.0);
    EXPECT_EQ(row.layer_active.size(), 2u);
  }
  EXPECT_DOUBLE_EQ(r.find("fedavg-ft")->macs_ratio, 1.0);
  EXPECT_DOUBLE_EQ(r.find("per-fedavg")->active_fraction, 1.0);
  EXPECT_LT(r.find("fedavg-ft-narrow")->macs_ratio, 0.5);  // width 2 of 4
  ASSERT_EQ(r.sweep.size(), 3u);
  EXPECT_DOUBLE_EQ(r.sweep[0].active_fraction, 1.0);  // threshold -100: every channel on
  EXPECT_DOUBLE_EQ(r.sweep[2].active_fraction, 0.0);  // 1e9: every channel off
  EXPECT_LT(r.sweep[2].macs, r.sweep[0].macs);
  EXPECT_EQ(r.goals_table().n_rows(), 5u);
  const auto j = r.to_json();
  EXPECT_EQ(j.at("methods").size(), 5u);
  EXPECT_TRUE(j.contains("sweep_spearman"));
  EXPECT_NE(r.svg().find("<svg"), std::string::npos);
  EXPECT_NE(r.to_string().find("metagater"), std::string::npos);
}

TEST_F(Bench, StatisticsHelpers) {
  const auto [mean, ci] = mean_ci95({1.0, 2.0, 3.0, 4.0});
  EXPECT_DOUBLE_EQ(mean, 2.5);
  EXPECT_NEAR(ci, 1.96 * std::sqrt(5.0 / 3.0 / 4.0), 1e-12);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3}, {10, 20, 30}), 1.0);
  EXPECT_DOUBLE_EQ(spearman({1, 2, 3}, {3, 2, 1}), -1.0);
  EXPECT_NEAR(spearman({1, 2, 2, 3}, {1, 2, 2, 3}), 1.0, 1e-12);
}

TEST_F(Bench, NodesAreSeededAndHeldOut) {
  const MetagaterBenchOptions o;
  const auto train = train_nodes(o), test = test_nodes(o);
  EXPECT_EQ(train.size(), 8u);
  EXPECT_EQ(test.size(), 20u);
  for (const auto& n : train) EXPECT_LT(n.rotation, 2);
  for (const auto& n : test) EXPECT_GE(n.rotation, 2);
  EXPECT_EQ(train_nodes(o)[3].classes, train[3].classes);
  EXPECT_EQ(method_job(Method::fedavg_ft_narrow, o).net.width, 16);
  EXPECT_FALSE(method_job(Method::per_fedavg, o).net.gated);
  EXPECT_FALSE(method_fed(Method::gated_fedavg, o).local.meta);
  EXPECT_EQ(method_test_adapt(Method::fedavg_ft, o).steps, o.finetune_steps);
  EXPECT_EQ(method_test_adapt(Method::metagater, o).steps, 1);
  // The cache key names the method and changes with anything that changes the training.
  const std::string name = method_cache_name(Method::metagater, o);
  EXPECT_EQ(name.rfind("metagater-metagater-", 0), 0u);
  MetagaterBenchOptions longer = o;
  longer.fed.rounds += 1;
  EXPECT_NE(method_cache_name(Method::metagater, longer), name);
  MetagaterBenchOptions more_tests = o;
  more_tests.test_tasks += 1;  // evaluation only: same trained model
  EXPECT_EQ(method_cache_name(Method::metagater, more_tests), name);
}

TEST_F(Bench, BadOptionsAreErrors) {
  MetagaterBenchOptions o = tiny_options();
  o.task.ways = 4;
  EXPECT_NE(error_of([&] { o.validate(); }).find("more than the 3 classes"), std::string::npos);
  o = tiny_options();
  o.test_rotations = {0};
  o.train_rotations = {0, 1};
  EXPECT_NE(error_of([&] { o.validate(); }).find("both a training and a test rotation"),
            std::string::npos);
  o = tiny_options();
  o.adapt.backbone_lr = 0.0;
  EXPECT_NE(error_of([&] { o.validate(); }).find("inner"), std::string::npos);
  o = tiny_options();
  o.methods = {"maml++"};
  EXPECT_NE(error_of([&] { o.validate(); }).find("unknown method"), std::string::npos);
  EXPECT_EQ(parse_method("gated-fedavg"), Method::gated_fedavg);
  EXPECT_EQ(method_name(Method::fedavg_ft_narrow), "fedavg-ft-narrow");
}

}  // namespace
}  // namespace tessera::metagater
