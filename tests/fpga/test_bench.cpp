// fpga's bench functions on tiny options: latency with its timing, the search bench on ResNet-18
// shapes, the mixed-precision model against the float model, QAT through train::fit, the tour.
#include <gtest/gtest.h>

#include "tessera/core/fs.h"
#include "tessera/data/dataset.h"
#include "tessera/fpga/bench.h"
#include "tessera/fpga/workloads.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::fpga {
namespace {

class FpgaBench : public testing::SeededTest {};

// A tiny ResNet-20 whose BatchNorm statistics match its training-mode activations (a fresh
// model's running statistics would make eval-mode activations far smaller than in training).
models::Model tiny_resnet(int64_t image_size = 8) {
  models::ModelConfig c;
  c.name = "resnet20";
  c.in_channels = 1;
  c.image_size = image_size;
  c.num_classes = 10;
  c.width_mult = 0.5;
  models::Model m = models::create(c);
  {
    torch::NoGradGuard no_grad;
    m->train();
    for (int i = 0; i < 20; ++i) m->forward(data::make_synthetic(64, 1, image_size, 10, 1).images);
  }
  m->eval();
  return m;
}

TEST_F(FpgaBench, LatencyEvaluatesResNet18AndTimesIt) {
  LatencyOptions o;
  o.repeats = 20;
  const LatencyResult r = run_latency(o);
  EXPECT_EQ(r.network, "resnet18-imagenet");
  EXPECT_EQ(r.layers().n_rows(), 21u);
  EXPECT_GT(r.evaluation.latency.ms, 0.0);
  EXPECT_GT(r.us_per_evaluation, 0.0);
  EXPECT_LE(r.us_min, r.us_per_evaluation);
  EXPECT_NE(r.summary().find("resnet18-imagenet"), std::string::npos);
  o.weight_bits = 9;
  EXPECT_THROW(run_latency(o), Error);
}

TEST_F(FpgaBench, ShippedWorkloadFileIsTheBuiltInResNet18) {
  const workload::Workload shipped = workload::load(workload_dir() + "/resnet18_imagenet.json");
  EXPECT_EQ(shipped.to_json(), resnet18_imagenet().to_json());
}

TEST_F(FpgaBench, BenchOnResNet18ShapesReportsBaselinesAndCurves) {
  FpgaBenchOptions o;
  o.fmnist = false;
  o.search.evaluations = 25;
  o.ddpg.warmup_episodes = 5;
  o.ddpg.hidden = 32;
  o.ddpg.batch_size = 16;
  const FpgaBenchResult r = run_bench(o);
  ASSERT_EQ(r.networks.size(), 1u);
  const NetworkBench& nb = r.networks[0];
  ASSERT_EQ(nb.rows.size(), 4u);
  EXPECT_DOUBLE_EQ(nb.rows[0].speedup, 1.0);  // the all-DSP row is the reference
  EXPECT_EQ(nb.table().n_rows(), 4u);
  EXPECT_EQ(nb.layer_table().n_rows(), 21u);
  EXPECT_EQ(nb.random.best_reward_curve.size(), 25u);
  EXPECT_EQ(nb.ddpg.best_reward_curve.size(), 25u);
  EXPECT_NE(r.svg().find("ddpg"), std::string::npos);
  EXPECT_TRUE(r.to_json()["networks"][0].contains("searched_layers"));
}

TEST_F(FpgaBench, MixedPrecisionModelWithoutBitsIsTheFloatModel) {
  models::Model model = tiny_resnet();
  const std::vector<GemmShape> g = gemm_shapes(model->workload());
  std::vector<LayerQuantPlan> plan;
  for (const auto& s : g) plan.push_back({s.name, 0.5, 0, 0, 0});
  MixedPrecisionModel mixed(models::clone(model), plan);
  const torch::Tensor x = torch::randn({4, 1, 8, 8});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(mixed.forward(x), model->forward(x), 1e-5, 1e-5));
}

TEST_F(FpgaBench, FewerBitsChangeTheOutputMore) {
  models::Model model = tiny_resnet();
  const std::vector<GemmShape> g = gemm_shapes(model->workload());
  const torch::Tensor x = torch::rand({16, 1, 8, 8});
  torch::NoGradGuard no_grad;
  const torch::Tensor reference = model->forward(x);
  double previous = -1.0;
  for (int bits : {8, 4, 2}) {
    std::vector<LayerQuantPlan> plan;
    for (const auto& s : g) plan.push_back({s.name, 0.5, bits, bits, bits});
    MixedPrecisionModel mixed(models::clone(model), plan);
    mixed.calibrate(x);
    mixed.quantize_weights();
    const double err = (mixed.forward(x) - reference).pow(2).mean().item<double>();
    mixed.restore_weights();
    EXPECT_GT(err, previous) << bits << " bits";
    previous = err;
  }
}

TEST_F(FpgaBench, QuantizedAccuracyFineTunesThroughTheTrainingLoop) {
  models::Model model = tiny_resnet();
  const data::Dataset train_set = data::make_synthetic(128, 1, 8, 10, 1);
  const data::Dataset test_set = data::make_synthetic(64, 1, 8, 10, 2);
  const std::vector<GemmShape> g = gemm_shapes(model->workload());
  std::vector<LayerQuantPlan> plan;
  for (const auto& s : g) plan.push_back({s.name, 0.25, 3, 3, 4});
  AccuracyOptions o;
  o.fine_tune_steps = 4;
  o.batch_size = 32;
  o.calibration_images = 32;
  const auto before = model->named_parameters()["stem.conv.weight"].clone();
  const AccuracyResult r = quantized_accuracy(model, plan, train_set, test_set, o);
  EXPECT_EQ(r.n, 64);
  EXPECT_GE(r.accuracy, 0.0);
  EXPECT_LE(r.accuracy, 1.0);
  // The caller's model is untouched (the fine-tune works on a copy).
  EXPECT_TRUE(torch::equal(model->named_parameters()["stem.conv.weight"], before));
  plan[0].name = "nope";
  EXPECT_THROW(quantized_accuracy(model, plan, train_set, test_set, o), Error);
}

TEST_F(FpgaBench, ReferenceModelsAreTheFoundationResNet20) {
  const auto refs = reference_models();
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_EQ(refs[0].name, "resnet20-fmnist");
}

}  // namespace
}  // namespace tessera::fpga
