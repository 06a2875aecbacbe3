// Each obfuscation knob preserves the function on random inputs (the executor, the plain graph
// evaluator and the saved "graph" model file all agree with the original), and bad or
// inapplicable knobs give clear errors or skip messages.
#include <gtest/gtest.h>

#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/obfuscate/executor.h"
#include "tessera/obfuscate/knobs.h"
#include "tessera/obfuscate/random_net.h"
#include "test_support.h"

namespace tessera::obfuscate {
namespace {

using testing::error_of;

class Knobs : public testing::SeededTest {};

models::Model small_model(const std::string& name) {
  models::ModelConfig config;
  config.name = name;
  config.image_size = 16;
  config.width_mult = 0.125;
  if (name == "vgg11_bn") config.extra = {{"dropout", 0.0}};
  models::Model m = models::create(config);
  // Non-trivial BN statistics, so folding and widening are really exercised.
  torch::NoGradGuard no_grad;
  for (auto& b : m->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().normal_(0.0, 0.2);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 1.5);
  }
  m->eval();
  return m;
}

// The net computes `expected` on x through the executor, the plain evaluator and the model.
void expect_same_function(const Net& net, const torch::Tensor& x, const torch::Tensor& expected) {
  Executor executor(net);
  const double tol = 1e-4 * (1.0 + expected.abs().max().item<double>());
  EXPECT_LT((executor.run(x) - expected).abs().max().item<double>(), tol);
  EXPECT_LT((reference_forward(net, x) - expected).abs().max().item<double>(), tol);
  models::Model model = to_model(net);
  torch::NoGradGuard no_grad;
  EXPECT_LT((model->forward(x) - expected).abs().max().item<double>(), tol);
}

TEST_F(Knobs, ConversionMatchesTheModel) {
  for (const char* name : {"resnet18", "vgg11_bn"}) {
    SCOPED_TRACE(name);
    models::Model m = small_model(name);
    const Net net = from_model(m);
    const torch::Tensor x = torch::randn({3, 1, 16, 16});
    torch::NoGradGuard no_grad;
    expect_same_function(net, x, m->forward(x));
  }
}

TEST_F(Knobs, EachKnobPreservesTheFunction) {
  models::Model m = small_model("resnet18");
  const Net clean = from_model(m);
  const torch::Tensor x = torch::randn({2, 1, 16, 16});
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = m->forward(x);
  }
  const std::string conv = "block1_conv1_conv";  // feeds block1_conv2: widenable
  const std::string fc = "fc";
  const auto check = [&](const char* what, const std::function<void(Net&)>& knob,
                         size_t min_extra_nodes) {
    SCOPED_TRACE(what);
    Net net = clean;
    knob(net);
    EXPECT_GE(net.spec.nodes.size(), clean.spec.nodes.size() + min_extra_nodes);
    expect_same_function(net, x, expected);
  };
  check(
      "widen", [&](Net& n) { widen_layer(n, conv, 4); }, 0);
  check(
      "branch 2", [&](Net& n) { branch_layer(n, conv, 2); }, 4);
  check(
      "branch 4", [&](Net& n) { branch_layer(n, "block3_conv2_conv", 4); }, 7);
  check(
      "deepen conv", [&](Net& n) { deepen_layer(n, conv); }, 1);
  check(
      "deepen fc", [&](Net& n) { deepen_layer(n, fc); }, 1);
  check(
      "skip", [&](Net& n) { zero_skip(n, conv); }, 2);
  check(
      "skip fc", [&](Net& n) { zero_skip(n, fc); }, 2);
  check(
      "kernel", [&](Net& n) { widen_kernel(n, conv); }, 0);
  check(
      "dummy", [&](Net& n) { add_dummies(n, "block2_conv2_conv", 3); }, 4);
  check(
      "dummy fc", [&](Net& n) { add_dummies(n, fc, 2); }, 3);
  check(
      "decoy", [&](Net& n) { add_decoys(n, conv, 3); }, 4);
  check(
      "decoy full size", [&](Net& n) { add_decoys(n, "block4_conv2_conv", 2, 1); }, 3);
  check(
      "unfuse", [&](Net& n) { set_fusion(n, conv, false); }, 0);
  check(
      "im2col", [&](Net& n) { set_schedule(n, conv, ConvSchedule::im2col); }, 0);
  check(
      "split", [&](Net& n) { set_schedule(n, "stem_conv", ConvSchedule::split); }, 0);
  // Widening the kernel really gives a 5x5 kernel; unfusing really adds kernels to the trace.
  Net k = clean;
  widen_kernel(k, conv);
  EXPECT_EQ(k.tensor(conv + ".weight").size(2), 5);
  Net u = clean;
  set_fusion(u, conv, false);
  EXPECT_EQ(Executor(u).n_steps(), Executor(clean).n_steps() + 2);
  // Decoys are kernels in the trace, on a shrunk zero tensor that nothing reads.
  Net d = clean;
  add_decoys(d, conv, 3, 4);
  EXPECT_EQ(Executor(d).n_steps(), Executor(clean).n_steps() + 3);
  const auto shapes = d.shapes();
  const int64_t first = d.spec.find(conv + "_decoy0");
  ASSERT_GE(first, 0);
  const auto full = clean.shapes()[clean.spec.find(conv)];
  EXPECT_EQ(shapes[first], (models::SampleShape{full[0], (full[1] + 3) / 4, (full[2] + 3) / 4}));
  EXPECT_TRUE(d.spec.consumers()[d.spec.find(conv + "_decoy2")].empty());
}

TEST_F(Knobs, WideningTheLastVggConvPadsTheClassifier) {
  models::Model m = small_model("vgg11_bn");
  const Net clean = from_model(m);
  const torch::Tensor x = torch::randn({2, 1, 16, 16});
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = m->forward(x);
  }
  Net net = clean;
  widen_layer(net, "conv8_conv", 8);  // -> pool5 -> flatten -> fc1
  widen_layer(net, "conv1_conv", 8);  // -> pool1 -> conv2
  EXPECT_EQ(net.spec.nodes[net.spec.find("fc1")].in_channels,
            clean.spec.nodes[clean.spec.find("fc1")].in_channels + 8);
  expect_same_function(net, x, expected);
}

TEST_F(Knobs, EveryGenomeOfRandomGenesPreservesTheFunction) {
  models::Model m = small_model("resnet18");
  const Net clean = from_model(m);
  const torch::Tensor x = torch::randn({2, 1, 16, 16});
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    expected = m->forward(x);
  }
  auto rng = make_rng(7, 1);
  for (int trial = 0; trial < 3; ++trial) {
    Genome g;
    g.layers.resize(weighted_layers(clean).size());
    for (auto& l : g.layers)
      for (int k = 0; k < kNumKnobs; ++k)
        if (random::uniform01(rng) < 0.3)
          l.set(static_cast<Knob>(k), static_cast<int>(random::uniform_int(
                                          rng, 1, LayerGenes::max_value(static_cast<Knob>(k)))));
    const Obfuscated o = apply_genome(clean, g);
    expect_same_function(o.net, x, expected);
  }
}

TEST_F(Knobs, InapplicableKnobsAreSkippedWithAMessage) {
  models::Model m = small_model("resnet18");
  const Net clean = from_model(m);
  // The stem's output feeds a residual add: widening it would change the sum.
  EXPECT_NE(knob_blocker(clean, Knob::widen, "stem_conv").find("add"), std::string::npos);
  EXPECT_NE(error_of([&] {
              Net n = clean;
              widen_layer(n, "stem_conv", 4);
            }).find("widen cannot apply to 'stem_conv'"),
            std::string::npos);
  EXPECT_NE(knob_blocker(clean, Knob::kernel, "fc").find("convs only"), std::string::npos);
  EXPECT_NE(knob_blocker(clean, Knob::decoy, "fc").find("network output"), std::string::npos);
  EXPECT_NE(error_of([&] {
              Net n = clean;
              add_decoys(n, "stem_conv", 1, 0);
            }).find("shrink factor"),
            std::string::npos);
  Genome g;
  g.layers.resize(weighted_layers(clean).size());
  g.layers[0].widen = 3;       // the stem: blocked
  g.layers.back().kernel = 1;  // the fc: blocked
  const Obfuscated o = apply_genome(clean, g);
  ASSERT_EQ(o.skipped.size(), 2u);
  EXPECT_NE(o.skipped[0].find("widen skipped"), std::string::npos);
  EXPECT_EQ(o.net.spec.nodes.size(), clean.spec.nodes.size());
  // Bad values and names are errors.
  EXPECT_NE(error_of([&] {
              Net n = clean;
              branch_layer(n, "block1_conv1_conv", 3);
            }).find("2 or 4"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              Net n = clean;
              deepen_layer(n, "nope");
            }).find("no layer 'nope'"),
            std::string::npos);
  Genome short_genome;
  EXPECT_NE(error_of([&] { apply_genome(clean, short_genome); }).find("genome has 0 layers"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_knob("twist"); }).find("unknown knob"), std::string::npos);
}

TEST_F(Knobs, ObfuscatedModelFileRoundTrips) {
  testing::TempDir dir;
  models::Model m = small_model("vgg11_bn");
  Net net = from_model(m);
  branch_layer(net, "conv2_conv", 2);
  add_dummies(net, "conv3_conv", 2);
  set_fusion(net, "conv4_conv", false);
  models::Model obf = to_model(net);
  models::save(dir.file("obf.safetensors"), obf);
  models::Model loaded = models::load(dir.file("obf.safetensors"));
  loaded->eval();
  const torch::Tensor x = torch::randn({2, 1, 16, 16});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(loaded->forward(x), m->forward(x), 1e-4, 1e-4));
  EXPECT_GT(loaded->n_units(), 10u);
  // The hints survive the file, and the file reads back into the same net.
  const Net back = from_model(loaded);
  EXPECT_EQ(back.spec.to_json(), net.spec.to_json());
  EXPECT_FALSE(back.spec.nodes[back.spec.find("conv4_conv")].hints.value("fuse", true));
  // The workload sees the branch convs.
  EXPECT_GT(loaded->workload().weighted_layers().size(), m->workload().weighted_layers().size());
}

TEST_F(Knobs, RandomNetsAreSeededAndRun) {
  RandomNetOptions o;
  o.max_log2_channels = 5;
  const Net a = random_net(o, 3), b = random_net(o, 3), c = random_net(o, 4);
  EXPECT_EQ(a.spec.to_json(), b.spec.to_json());
  EXPECT_TRUE(torch::equal(a.tensors.begin()->second, b.tensors.begin()->second));
  EXPECT_NE(a.spec.to_json(), c.spec.to_json());
  const torch::Tensor x = torch::randn({1, 1, 28, 28});
  Executor e(a);
  const Trace t = e.trace(x, 2);
  EXPECT_GE(t.steps.size(), 5u);
  EXPECT_EQ(t.steps.back().label, OpLabel::fc);
  EXPECT_TRUE(torch::allclose(e.run(x), reference_forward(a, x), 1e-4, 1e-4));
  for (const auto& s : t.steps) {
    EXPECT_GT(s.bytes_written, 0);
    EXPECT_GE(s.latency_us, 0);
  }
  RandomNetOptions bad;
  bad.min_conv_units = 9;
  bad.max_conv_units = 3;
  EXPECT_NE(error_of([&] { random_net(bad, 0); }).find("min_conv_units"), std::string::npos);
}

}  // namespace
}  // namespace tessera::obfuscate
