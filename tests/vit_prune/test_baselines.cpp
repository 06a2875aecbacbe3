// EViT and ToMe reducers on hand-built token states (which tokens survive, the fused token, the
// size-weighted merge), their no-op settings against the unpruned model, and their traces
// against the analytic plans.
#include <gtest/gtest.h>

#include "tessera/vit_prune/baselines.h"
#include "tessera/vit_prune/flops.h"
#include "test_support.h"
#include "vit_fixture.h"

namespace tessera::vit_prune {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;
using testing::small_images;
using testing::small_vit;

class Baselines : public SeededTest {};

TokenState five_tokens() {
  TokenState s;
  s.x = torch::arange(5 * 3, torch::kFloat).reshape({1, 5, 3});
  s.index = torch::arange(5, torch::kLong).unsqueeze(0);
  return s;
}

TEST_F(Baselines, EvitKeepsTheMostAttendedAndFusesTheRest) {
  TokenState s = five_tokens();
  const TokenState before = s;
  // Two heads whose class-token rows average to 0.1, 0.4, 0.2, 0.3 over tokens 1..4.
  auto probs = torch::zeros({1, 2, 5, 5});
  probs[0][0][0] = torch::tensor({0.0, 0.2, 0.3, 0.2, 0.3});
  probs[0][1][0] = torch::tensor({0.0, 0.0, 0.5, 0.2, 0.3});
  EvitOptions o;
  o.keep_rate = 0.5;  // ceil(0.5 x 4) = 2 tokens kept
  o.locations = {0};
  EvitPruner pruner(o, 1);
  pruner.reduce(0, s, AttentionPieces{probs, {}});
  EXPECT_TRUE(torch::equal(s.index, torch::tensor({{0, 2, 4, -1}}, torch::kLong)));
  const auto x = before.x[0];
  EXPECT_TRUE(torch::allclose(s.x[0][1], x[2]));
  EXPECT_TRUE(torch::allclose(s.x[0][2], x[4]));
  EXPECT_TRUE(torch::allclose(s.x[0][3], 0.1 * x[1] + 0.2 * x[3], 1e-5, 1e-6));
}

TEST_F(Baselines, TomeMergesTheMostSimilarPairBySize) {
  TokenState s = five_tokens();
  const TokenState before = s;
  TomeMerger merger(TomeOptions{1, true});
  merger.start(s);
  // Sets A = {0, 2, 4}, B = {1, 3}. Token 2's key equals token 1's: that edge merges.
  auto keys = torch::zeros({1, 1, 5, 2});
  keys[0][0][0] = torch::tensor({1.0, 0.0});
  keys[0][0][1] = torch::tensor({0.6, 0.8});
  keys[0][0][2] = torch::tensor({0.6, 0.8});
  keys[0][0][3] = torch::tensor({-1.0, 0.1});
  keys[0][0][4] = torch::tensor({0.1, -1.0});
  s.size = torch::tensor({{1.0, 3.0, 1.0, 1.0, 1.0}});  // token 1 already holds 3 patches
  merger.reduce(0, s, AttentionPieces{torch::Tensor(), keys});
  EXPECT_TRUE(torch::equal(s.index, torch::tensor({{0, 4, 1, 3}}, torch::kLong)));
  EXPECT_TRUE(torch::allclose(s.size, torch::tensor({{1.0, 1.0, 4.0, 1.0}})));
  const auto x = before.x[0];
  EXPECT_TRUE(torch::allclose(s.x[0][2], (3.0 * x[1] + x[2]) / 4.0));
  EXPECT_TRUE(torch::allclose(s.x[0][0], x[0]));
  EXPECT_EQ(tome_merged(5, 1), 1);
  EXPECT_EQ(tome_merged(5, 9), 2);  // at most half of the non-CLS tokens
}

TEST_F(Baselines, NoOpSettingsEqualTheUnprunedModelExactly) {
  torch::NoGradGuard no_grad;
  models::Model model = small_vit();
  const auto images = small_images(4);
  ReducedVit engine(model);
  EvitOptions evit;
  evit.keep_rate = 1.0;
  EvitPruner keep_all(evit, 3);
  EXPECT_TRUE(torch::equal(engine.forward(images, &keep_all).logits, model->forward(images)));
  TomeMerger merge_none(TomeOptions{0, false});
  EXPECT_TRUE(torch::equal(engine.forward(images, &merge_none).logits, model->forward(images)));
}

TEST_F(Baselines, TracesFollowTheAnalyticPlans) {
  torch::NoGradGuard no_grad;
  models::Model model = small_vit(4);
  ReducedVit engine(model);
  auto* vit = dynamic_cast<models::VitImpl*>(model.ptr().get());
  const VitShape shape = VitShape::of(*vit);
  const auto images = small_images(3);
  for (const bool fuse : {false, true}) {
    EvitOptions o;
    o.keep_rate = 0.6;
    o.fuse = fuse;
    EvitPruner pruner(o, 4);
    const auto trace = engine.forward(images, &pruner).trace;
    const TokenPlan plan = evit_plan(shape, o);
    EXPECT_EQ(trace.attention_tokens, plan.attention_tokens);
    EXPECT_EQ(trace.mlp_tokens, plan.mlp_tokens);
  }
  TomeMerger merger(TomeOptions{3, true});
  const ReducedOutput out = engine.forward(images, &merger);
  const TokenPlan plan = tome_plan(shape, TomeOptions{3, true});
  EXPECT_EQ(out.trace.mlp_tokens, plan.mlp_tokens);
  EXPECT_EQ(out.trace.mlp_tokens, (std::vector<int64_t>{14, 11, 8, 5}));
  // Every patch is in exactly one token: the sizes sum to 16 patches + CLS.
  EXPECT_TRUE(torch::allclose(out.tokens.size.sum(1), torch::full({3}, 17.0)));
  EXPECT_TRUE(torch::equal(out.tokens.index.select(1, 0), torch::zeros({3}, torch::kLong)));
}

TEST_F(Baselines, BadOptionsAreErrors) {
  EvitOptions o;
  o.keep_rate = 0.0;
  EXPECT_NE(error_of([&] { EvitPruner p(o, 4); }).find("keep_rate must be in (0, 1]"),
            std::string::npos);
  o.keep_rate = 0.5;
  o.locations = {7};
  EXPECT_NE(error_of([&] { EvitPruner p(o, 4); }).find("not a block of depth 4"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              TomeMerger m(TomeOptions{-1, true});
            }).find("r must be >= 0"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera::vit_prune
