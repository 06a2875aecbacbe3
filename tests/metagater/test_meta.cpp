// Meta-learning: the second-order meta-gradient of a tiny model against central finite
// differences (plain and gated), first order against the gradient at the adapted parameters,
// and the bad inputs: more ways than classes, a zero inner learning rate.
#include <gtest/gtest.h>

#include "tessera/core/seed.h"
#include "tessera/metagater/meta.h"
#include "test_support.h"

namespace tessera::metagater {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;

class Meta : public SeededTest {};

GatedNetOptions tiny(bool gated) {
  GatedNetOptions o;
  o.image_size = 4;
  o.width = 2;
  o.layers = 1;
  o.ways = 2;
  o.gated = gated;
  o.gate_hidden = 2;
  o.gate_bias_init = 30.0;  // gates firmly on: no decision flips under a perturbation
  return o;
}

Task tiny_task() {
  Task t;
  auto d = torch::TensorOptions().dtype(torch::kDouble);
  t.support_x = torch::rand({4, 1, 4, 4}, d);
  t.support_y = torch::tensor({0, 1, 0, 1}, torch::kLong);
  t.query_x = torch::rand({6, 1, 4, 4}, d);
  t.query_y = torch::tensor({1, 0, 1, 0, 1, 1}, torch::kLong);
  return t;
}

Params to_double(const Params& p) {
  Params out;
  for (const auto& t : p.backbone) out.backbone.push_back(t.detach().to(torch::kDouble));
  for (const auto& t : p.gates) out.gates.push_back(t.detach().to(torch::kDouble));
  return out;
}

double meta_value(const GatedNetImpl& net, const Params& p, const Task& task, const AdaptOptions& a,
                  const LossOptions& l) {
  return meta_loss(net, p.leaves(), task, a, l, true).item<double>();
}

// Autograd's second-order meta-gradient against central differences of the meta-loss, for every
// backbone entry.
void check_meta_gradient(bool gated) {
  GatedNet net(tiny(gated));
  const Params p = to_double(net->params()).leaves();
  const Task task = tiny_task();
  AdaptOptions a;
  a.backbone_lr = 0.5;
  a.gate_lr = 0.5;
  LossOptions l;
  l.sparsity_weight = 0.0;
  meta_loss(*net, p, task, a, l, /*second_order=*/true).backward();
  const double h = 1e-6;
  for (size_t t = 0; t < p.backbone.size(); ++t) {
    const auto flat = p.backbone[t].detach().flatten();
    for (int64_t i = 0; i < flat.numel(); ++i) {
      Params plus = p.clone(), minus = p.clone();
      plus.backbone[t].view(-1)[i] += h;
      minus.backbone[t].view(-1)[i] -= h;
      const double fd =
          (meta_value(*net, plus, task, a, l) - meta_value(*net, minus, task, a, l)) / (2 * h);
      EXPECT_NEAR(p.backbone[t].grad().view(-1)[i].item<double>(), fd, 1e-5)
          << "tensor " << t << " entry " << i;
    }
  }
}

TEST_F(Meta, SecondOrderMetaGradientMatchesFiniteDifferences) { check_meta_gradient(false); }

TEST_F(Meta, GatedTwoStageMetaGradientMatchesFiniteDifferences) { check_meta_gradient(true); }

TEST_F(Meta, FirstOrderIsTheGradientAtTheAdaptedParameters) {
  GatedNet net(tiny(false));
  const Params p = to_double(net->params()).leaves();
  const Task task = tiny_task();
  AdaptOptions a;
  a.backbone_lr = 0.5;
  LossOptions l;
  meta_loss(*net, p, task, a, l, /*second_order=*/false).backward();
  const Params adapted = adapt(*net, p.leaves(), task, a, l, false).leaves();
  query_loss(*net, adapted, task, l).backward();
  Params second = p.leaves();
  meta_loss(*net, second, task, a, l, true).backward();
  double differs = 0.0;
  for (size_t t = 0; t < p.backbone.size(); ++t) {
    EXPECT_TRUE(torch::allclose(p.backbone[t].grad(), adapted.backbone[t].grad(), 1e-10, 1e-12));
    differs += (second.backbone[t].grad() - p.backbone[t].grad()).abs().sum().item<double>();
  }
  EXPECT_GT(differs, 1e-6);  // the second-order terms are really there
}

TEST_F(Meta, AdaptationLowersTheSupportLoss) {
  GatedNet net(tiny(true));
  const Params p = to_double(net->params());
  const Task task = tiny_task();
  AdaptOptions a;
  LossOptions l;
  const double before = support_loss(*net, p, task.support_x, task.support_y, l).item<double>();
  const Params after = adapt(*net, p.leaves(), task, a, l, false);
  EXPECT_LT(support_loss(*net, after, task.support_x, task.support_y, l).item<double>(), before);
}

TEST_F(Meta, ZeroInnerLearningRateIsAnError) {
  GatedNet net(tiny(true));
  const Task task = tiny_task();
  AdaptOptions a;
  a.backbone_lr = 0.0;
  const auto msg = error_of(
      [&] { adapt(*net, to_double(net->params()).leaves(), task, a, LossOptions{}, false); });
  EXPECT_NE(msg.find("inner (backbone) learning rate must be > 0"), std::string::npos) << msg;
  a.backbone_lr = 0.1;
  a.gate_lr = 0.0;
  EXPECT_NE(error_of([&] { a.validate(true); }).find("gate learning rate"), std::string::npos);
  EXPECT_NO_THROW(a.validate(false));  // a plain network has no gate step
}

TEST_F(Meta, MoreWaysThanClassesIsAnError) {
  const data::Dataset set = data::make_synthetic(60, 1, 8, 3, 1);
  const TaskSource source(set);
  auto rng = make_rng(0);
  NodeSpec node{0, {0, 1, 2}, 0};
  TaskOptions t;
  t.ways = 4;
  t.shots = 1;
  t.queries = 1;
  EXPECT_NE(error_of([&] { source.sample(node, t, rng); }).find("data set has only 3 classes"),
            std::string::npos);
  node.classes = {0, 1};
  t.ways = 3;
  EXPECT_NE(error_of([&] { source.sample(node, t, rng); }).find("node 0 holds only 2 classes"),
            std::string::npos);
  t.ways = 2;
  t.shots = 100;
  EXPECT_NE(error_of([&] { source.sample(node, t, rng); }).find("needed"), std::string::npos);
}

TEST_F(Meta, TasksHaveTheirShapeLabelsAndRotation) {
  const data::Dataset set = data::make_synthetic(200, 1, 8, 5, 1);
  const TaskSource source(set);
  auto rng = make_rng(3);
  const NodeSpec node{7, {4, 2, 0}, 1};
  TaskOptions t;
  t.ways = 3;
  t.shots = 2;
  t.queries = 4;
  const Task task = source.sample(node, t, rng);
  EXPECT_EQ(task.support_x.sizes(), (std::vector<int64_t>{6, 1, 8, 8}));
  EXPECT_EQ(task.query_x.sizes(), (std::vector<int64_t>{12, 1, 8, 8}));
  EXPECT_EQ(task.support_y.max().item<int64_t>(), 2);
  for (int64_t c : task.classes) EXPECT_TRUE(c == 4 || c == 2 || c == 0);
  // Every support image is a data set image of its class rotated by 90 degrees.
  const auto labels = set.labels;
  for (int64_t i = 0; i < 6; ++i) {
    const torch::Tensor back = torch::rot90(task.support_x[i], -1, {1, 2});
    const auto match =
        (set.images - back.unsqueeze(0)).abs().flatten(1).sum(1).argmin().item<int64_t>();
    EXPECT_TRUE(torch::equal(set.images[match], back));
    EXPECT_EQ(labels[match].item<int64_t>(),
              task.classes[static_cast<size_t>(task.support_y[i].item<int64_t>())]);
  }
}

}  // namespace
}  // namespace tessera::metagater
