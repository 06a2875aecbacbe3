// Cutting a model: gradients through the cut equal the uncut model's, bottleneck shapes,
// server-layer conventions, and FedAvg state averaging against hand-computed values.
#include <gtest/gtest.h>

#include "sfl_test_util.h"
#include "tessera/core/error.h"
#include "tessera/models/registry.h"
#include "tessera/splitfed/split.h"
#include "test_support.h"

namespace tessera::splitfed {
namespace {

using testing_util::tiny_vgg;

class SplitTest : public testing::SeededTest {};

TEST_F(SplitTest, GradientsThroughTheCutEqualTheUncutModel) {
  for (const int64_t cut : {1, 4, 10, 14, 15}) {
    models::Model full = models::create(tiny_vgg());
    ClientSide client(models::clone(full), SplitOptions{cut});
    ServerSide server(models::clone(full), SplitOptions{cut});
    const torch::Tensor x = torch::rand({6, 1, 8, 8});
    const torch::Tensor y = torch::tensor({0, 1, 2, 2, 1, 0}, torch::kInt64);

    // Reference: the uncut model, one backward pass (training mode: BN batch statistics).
    torch::nn::functional::cross_entropy(full->forward(x), y).backward();

    // The SFL protocol: z goes up detached, dL/dz comes down, the client chains it.
    const torch::Tensor z = client->forward(x);
    torch::Tensor z_server = z.detach().clone().requires_grad_(true);
    torch::nn::functional::cross_entropy(server->forward(z_server), y).backward();
    (z * z_server.grad()).sum().backward();

    auto reference = full->named_parameters();
    size_t compared = 0;
    for (torch::nn::Module* side : {static_cast<torch::nn::Module*>(client.get()),
                                    static_cast<torch::nn::Module*>(server.get())}) {
      for (const auto& p : side->named_parameters()) {
        const torch::Tensor* ref = reference.find(p.key());
        ASSERT_NE(ref, nullptr) << p.key();
        ASSERT_TRUE(p.value().grad().defined()) << "cut " << cut << " " << p.key();
        EXPECT_TRUE(torch::allclose(p.value().grad(), ref->grad(), 1e-4, 1e-6))
            << "cut " << cut << " " << p.key() << " max diff "
            << (p.value().grad() - ref->grad()).abs().max().item<float>();
        ++compared;
      }
    }
    EXPECT_EQ(compared, reference.size()) << "every parameter is on exactly one side";
  }
}

TEST_F(SplitTest, BottleneckShapesAndServerAcceptsThem) {
  models::ModelConfig config = tiny_vgg();
  config.image_size = 16;
  for (const auto& [channels, stride] : std::vector<std::pair<int64_t, int64_t>>{{2, 1}, {1, 2}}) {
    SplitOptions options{4, channels, stride};
    auto [client, server] = make_split(config, options);
    const torch::Tensor z = client->forward(torch::rand({3, 1, 16, 16}));
    // cut 4 of VGG at 16x16: 8 channels (width 1/16 of 128) at 4x4.
    const std::vector<int64_t> expected = {3, channels, 4 / stride, 4 / stride};
    EXPECT_EQ(z.sizes().vec(), expected);
    EXPECT_EQ(client->smashed_shape(), std::vector<int64_t>(expected.begin() + 1, expected.end()));
    EXPECT_EQ(server->forward(z).sizes().vec(), (std::vector<int64_t>{3, 3}));
  }
  EXPECT_THROW(make_split(config, SplitOptions{4, 2, 3}), Error);   // stride 3
  EXPECT_THROW(make_split(config, SplitOptions{15, 2, 1}), Error);  // bottleneck after flatten
}

TEST_F(SplitTest, CutsOutsideTheModelAreRefused) {
  models::ModelConfig config = tiny_vgg();
  EXPECT_THROW(make_split(config, SplitOptions{0}), Error);
  EXPECT_THROW(make_split(config, SplitOptions{17}), Error);  // 17 units: cut must be < 17
  EXPECT_THROW(make_split(config, SplitOptions{-3}), Error);
}

TEST_F(SplitTest, ServerLayerConventions) {
  models::Model model = models::create(tiny_vgg());
  // Units: conv1 pool1 conv2 pool2 conv3 conv4 pool3 conv5 conv6 pool4 conv7 conv8 pool5
  // flatten fc1 fc2 fc3 (indices 0..16).
  // "weights": 5 layers = conv7, conv8(+pool5), fc1, fc2, fc3 -> cut 10 (the papers' cutlayer 10).
  EXPECT_EQ(cut_for_server_layers(model, 5, LayerConvention::weights), 10);
  EXPECT_EQ(cut_for_server_layers(model, 3, LayerConvention::weights), 14);
  // SFL-MEA's mapping file: cutlayer 5 -> 8 server layers, cutlayer 4 -> 9.
  EXPECT_EQ(cut_for_server_layers(model, 8, LayerConvention::weights), 5);
  EXPECT_EQ(cut_for_server_layers(model, 9, LayerConvention::weights), 4);
  // "units": 5 = conv8, pool5, fc1, fc2, fc3 -> cut 11.
  EXPECT_EQ(cut_for_server_layers(model, 5, LayerConvention::units), 11);
  EXPECT_EQ(cut_for_server_layers(model, 6, LayerConvention::units), 10);
  for (int64_t layers = 1; layers <= 10; ++layers) {
    EXPECT_EQ(server_layers_of_cut(model, cut_for_server_layers(model, layers)), layers);
  }
  EXPECT_THROW(cut_for_server_layers(model, 0), Error);
  EXPECT_THROW(cut_for_server_layers(model, 11), Error);  // 8 conv + 3 fc, first conv stays
  EXPECT_THROW(parse_layer_convention("pools"), Error);
  EXPECT_EQ(parse_layer_convention(layer_convention_name(LayerConvention::units)),
            LayerConvention::units);
}

TEST_F(SplitTest, AverageStatesIsTheUnweightedMeanIncludingIntegerBuffers) {
  const State a = {{"w", torch::tensor({1.0f, 2.0f})}, {"n", torch::tensor({1}, torch::kInt64)}};
  const State b = {{"w", torch::tensor({3.0f, 6.0f})}, {"n", torch::tensor({4}, torch::kInt64)}};
  const State c = {{"w", torch::tensor({2.0f, 1.0f})}, {"n", torch::tensor({4}, torch::kInt64)}};
  const State mean = average_states({a, b, c});
  EXPECT_TRUE(torch::allclose(mean[0].second, torch::tensor({2.0f, 3.0f})));
  EXPECT_EQ(mean[1].second.item<int64_t>(), 3);  // (1 + 4 + 4) / 3 = 3
  EXPECT_EQ(mean[1].second.scalar_type(), torch::kInt64);
  EXPECT_THROW(average_states({}), Error);
  const State renamed = {{"v", torch::tensor({1.0f, 2.0f})},
                         {"n", torch::tensor({1}, torch::kInt64)}};
  EXPECT_THROW(average_states({a, renamed}), Error);
  const State reshaped = {{"w", torch::tensor({1.0f})}, {"n", torch::tensor({1}, torch::kInt64)}};
  EXPECT_THROW(average_states({a, reshaped}), Error);
}

TEST_F(SplitTest, AveragingRealClientSidesAveragesBatchNormBuffers) {
  auto [c1, s1] = make_split(tiny_vgg(), SplitOptions{4});
  auto [c2, s2] = make_split(tiny_vgg(), SplitOptions{4});
  c1->forward(torch::rand({4, 1, 8, 8}));  // training mode: updates running stats
  c2->forward(torch::rand({4, 1, 8, 8}) * 3);
  const State s1_state = get_state(*c1), s2_state = get_state(*c2);
  const State mean = average_states({s1_state, s2_state});
  load_state(*c1, mean);
  const auto buffers = c1->named_buffers();
  const torch::Tensor* running_mean = buffers.find("conv1.bn.running_mean");
  ASSERT_NE(running_mean, nullptr) << "BN buffers are part of the client state";
  torch::Tensor expected;
  for (size_t i = 0; i < s1_state.size(); ++i) {
    if (s1_state[i].first == "conv1.bn.running_mean") {
      expected = (s1_state[i].second + s2_state[i].second) / 2;
    }
  }
  EXPECT_TRUE(torch::allclose(*running_mean, expected));
  State wrong = mean;
  wrong[0].second = torch::zeros({1});
  EXPECT_THROW(load_state(*c1, wrong), Error);
  EXPECT_THROW(load_state(*c1, State(mean.begin(), mean.end() - 1)), Error);
}

}  // namespace
}  // namespace tessera::splitfed
