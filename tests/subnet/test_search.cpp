// Noise ranking, BN calibration, progressive search (deterministic under a seed, bad targets),
// re-selection and the US-Net width helpers, on a tiny net and synthetic data.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/data/dataset.h"
#include "tessera/subnet/ranking.h"
#include "tessera/subnet/search.h"
#include "tessera/subnet/training.h"
#include "test_support.h"

namespace tessera::subnet {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;
using tessera::testing::TempDir;

class SearchTest : public SeededTest {};

SlimNetOptions tiny_options() {
  SlimNetOptions o;
  o.image_size = 8;
  o.num_classes = 4;
  o.stage_channels = {8, 12};
  o.blocks_per_stage = 1;
  return o;
}

data::Dataset synthetic(int64_t n, uint64_t seed) { return data::make_synthetic(n, 1, 8, 4, seed); }

train::TrainOptions few_steps(int64_t steps) {
  train::TrainOptions t;
  t.steps = steps;
  t.batch_size = 32;
  t.lr = 0.05;
  t.per_step_schedule = true;
  t.augment_pad = 0;
  t.augment_flip = false;
  return t;
}

SearchOptions tiny_search() {
  SearchOptions s;
  s.group = 2;
  s.targets = {0.6, 0.3};
  s.threshold = 0.0;  // fine-tune at every drop
  s.finetune_steps = 2;
  s.batch_size = 32;
  s.calibration_images = 64;
  s.reselect_window = 1;
  s.seed = 3;
  return s;
}

TEST_F(SearchTest, NoiseTrainingMovesTheScalesAndRankingSortsThem) {
  SlimNet net(tiny_options());
  const auto train_set = synthetic(256, 1);
  NoiseRankOptions noise;
  train_with_noise(net, train_set, few_steps(20), noise);
  EXPECT_FALSE(net->noise());
  const torch::Tensor a = net->alpha(0).detach().clone();
  EXPECT_GT((a - 0.25).abs().max().item<double>(), 1e-4);  // learnt, not the init
  const auto orders = rank_channels(net);
  ASSERT_EQ(orders.size(), size_t(net->n_slots()));
  for (int64_t slot = 0; slot < net->n_slots(); ++slot) {
    const torch::Tensor sorted = net->alpha(slot).detach();
    EXPECT_TRUE(torch::equal(sorted, std::get<0>(sorted.sort())));  // ascending: rank order
  }
  // The permutation applied is the argsort of the old scales.
  EXPECT_TRUE(torch::allclose(net->alpha(0).detach(),
                              a.index_select(0, torch::tensor(orders[0], torch::kLong))));
  const auto t = normalized_tolerance(net);
  double mean = 0;
  for (const double v : t[0]) mean += v / static_cast<double>(t[0].size());
  EXPECT_NEAR(mean, 1.0, 1e-9);
}

TEST_F(SearchTest, CalibrationGivesTheExactMeanOfTheStemOutputs) {
  SlimNet net(tiny_options());
  const torch::Tensor images = torch::rand({96, 1, 8, 8});
  calibrate_bn(net, 0, images, 32);
  torch::NoGradGuard no_grad;
  const auto params = net->named_parameters();
  const torch::Tensor conv = torch::conv2d(images, params["stem_weight"], {}, 1, 1);
  const torch::Tensor expected = conv.mean({0, 2, 3});
  EXPECT_TRUE(torch::allclose(net->bn_mean(0, 0), expected, 1e-5, 1e-5));
}

TEST_F(SearchTest, SearchIsDeterministicUnderASeed) {
  TempDir dir;
  const auto train_set = synthetic(256, 1), val_set = synthetic(96, 2);
  {
    SlimNet net(tiny_options());
    train_with_noise(net, train_set, few_steps(10), NoiseRankOptions());
    rank_channels(net);
    save_slim_net(dir.file("start.safetensors"), net);
  }
  auto run = [&] {
    SlimNet net = load_slim_net(dir.file("start.safetensors")).net;
    net->train();
    const SearchResult r = progressive_search(net, train_set, val_set, tiny_search());
    return std::make_pair(r, net->named_parameters()["fc_weight"].detach().clone());
  };
  const auto [a, wa] = run();
  const auto [b, wb] = run();
  ASSERT_EQ(a.subnets.size(), 3u);  // the full net and one per target
  EXPECT_EQ(a.to_json(), b.to_json());
  EXPECT_TRUE(torch::equal(wa, wb));  // the fine-tunes too
  EXPECT_GT(a.finetunes, 0);
  EXPECT_EQ(a.finetune_steps, 2 * a.finetunes);
  // Recorded sub-nets meet their targets and are nested prefixes.
  SlimNet net(tiny_options());
  const double full = static_cast<double>(net->macs(net->full_spec()));
  EXPECT_LE(static_cast<double>(a.macs[1]), 0.6 * full);
  EXPECT_LE(static_cast<double>(a.macs[2]), 0.3 * full);
  for (size_t i = 0; i < a.subnets[2].widths.size(); ++i)
    EXPECT_LE(a.subnets[2].widths[i], a.subnets[1].widths[i]);
  EXPECT_EQ(SearchResult::from_json(a.to_json()).to_json(), a.to_json());
  // Re-selection keeps a Pareto front: accuracy rises with MACs.
  SlimNet again = load_slim_net(dir.file("start.safetensors")).net;
  const ReselectResult sel = reselect(again, a, train_set, val_set, tiny_search());
  ASSERT_GE(sel.subnets.size(), 1u);
  EXPECT_EQ(sel.subnets[0], net->full_spec());
  for (size_t k = 2; k < sel.accuracy.size(); ++k) EXPECT_LT(sel.accuracy[k], sel.accuracy[k - 1]);
  EXPECT_EQ(again->n_subnets(), static_cast<int64_t>(sel.subnets.size()));
}

TEST_F(SearchTest, TargetBelowTheSmallestSubnetIsAClearError) {
  SlimNet net(tiny_options());
  const auto set = synthetic(64, 1);
  const SubnetSpec smallest = smallest_spec(*net, 4);
  EXPECT_EQ(smallest.widths, (std::vector<int64_t>{4, 4, 4, 4}));
  SearchOptions o = tiny_search();
  o.group = 4;
  o.targets = {0.5, 0.01};
  EXPECT_NE(error_of([&] { progressive_search(net, set, set, o); }).find("below the smallest"),
            std::string::npos);
  o.targets = {0.3, 0.5};
  EXPECT_NE(error_of([&] { o.validate(); }).find("descending"), std::string::npos);
  o.targets = {1.5};
  EXPECT_NE(error_of([&] { o.validate(); }).find("not in (0, 1)"), std::string::npos);
}

TEST_F(SearchTest, UniformWidthsForUsNet) {
  SlimNet net(tiny_options());
  EXPECT_EQ(uniform_spec(*net, 0.5).widths, (std::vector<int64_t>{4, 6, 4, 6}));
  EXPECT_EQ(uniform_spec(*net, 1.0), net->full_spec());
  const SubnetSpec half = uniform_spec(*net, 0.5);
  EXPECT_EQ(uniform_spec_for_macs(*net, net->macs(half), 0.25), half);
  EXPECT_NE(error_of([&] { uniform_spec(*net, 0.0); }), "");
}

TEST_F(SearchTest, MultiTermAndUsNetTrainingRun) {
  SlimNet net(tiny_options());
  const auto train_set = synthetic(128, 1);
  net->set_subnets({net->full_spec(), uniform_spec(*net, 0.5)});
  MultiTermOptions mo;
  mo.train = few_steps(3);
  mo.distill = true;
  const auto stats = train_multiterm(net, net->subnets(), train_set, mo);
  ASSERT_FALSE(stats.empty());
  EXPECT_GT(net->bn_mean(1, 0).abs().sum().item<double>(), 0.0);  // switchable BN updated set 1
  UsNetOptions uo;
  uo.train = few_steps(3);
  EXPECT_FALSE(train_usnet(net, train_set, uo).empty());
  mo.switchable_bn = true;
  EXPECT_NE(error_of([&] { train_multiterm(net, {net->full_spec()}, train_set, mo); }), "");
}

}  // namespace
}  // namespace tessera::subnet
