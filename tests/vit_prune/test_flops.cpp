// The analytic MACs model against hand computations (DeiT-S at 224 px, the published EViT and
// ToMe settings) and against the model's own workload description.
#include <gtest/gtest.h>

#include "tessera/vit_prune/flops.h"
#include "test_support.h"
#include "vit_fixture.h"

namespace tessera::vit_prune {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;

class Flops : public SeededTest {};

/// One DeiT-S block by hand: qkv, proj, QK^T and PV over 6 heads of 64, the two MLP layers.
int64_t deit_block(int64_t na, int64_t nm) {
  return na * 384 * 1152 + na * 384 * 384 + 2 * 6 * na * na * 64 + nm * 384 * 1536 * 2;
}
constexpr int64_t kDeitEmbed = 196 * 3 * 16 * 16 * 384, kDeitHead = 384 * 1000;

TEST_F(Flops, DeitSmallUnprunedIsFourPointSixGmacs) {
  const VitShape s = VitShape::deit_small();
  EXPECT_EQ(s.patches(), 196);
  const MacCount m = vit_macs(s, full_plan(s));
  EXPECT_EQ(m.total, kDeitEmbed + 12 * deit_block(197, 197) + kDeitHead);
  EXPECT_NEAR(static_cast<double>(m.total) / 1e9, 4.60, 0.005);  // published 4.6 G
  // 4 N D^2 + 2 N^2 D + 8 N D^2 per block (efficient.md 1.5).
  EXPECT_EQ(m.attention_linear + m.attention_matmul + m.mlp,
            int64_t{12} * (int64_t{4} * 197 * 384 * 384 + int64_t{2} * 197 * 197 * 384 +
                           int64_t{8} * 197 * 384 * 384));
}

TEST_F(Flops, PublishedEvitAndTomeSettingsMatchHandComputation) {
  const VitShape s = VitShape::deit_small();
  EvitOptions evit;  // keep 0.7 at blocks 3, 6, 9: 196 -> 138 -> 97 -> 68 patches
  evit.fuse = false;
  const TokenPlan ep = evit_plan(s, evit);
  EXPECT_EQ(evit_locations(evit, 12), (std::vector<int64_t>{3, 6, 9}));
  int64_t expected = kDeitEmbed + kDeitHead;
  const int64_t tokens[12][2] = {{197, 197}, {197, 197}, {197, 197}, {197, 139},
                                 {139, 139}, {139, 139}, {139, 98},  {98, 98},
                                 {98, 98},   {98, 69},   {69, 69},   {69, 69}};
  for (const auto& t : tokens) expected += deit_block(t[0], t[1]);
  EXPECT_EQ(vit_macs(s, ep).total, expected);
  EXPECT_NEAR(static_cast<double>(expected) / 1e9, 3.0, 0.01);  // published EViT 0.7: 3.0 G
  evit.fuse = true;  // one more token after each location
  EXPECT_EQ(evit_plan(s, evit).mlp_tokens[3], 140);
  EXPECT_EQ(evit_plan(s, evit).attention_tokens[6], 140);

  const TokenPlan tp = tome_plan(s, TomeOptions{13, true});
  int64_t tome = kDeitEmbed + kDeitHead, matching = 0;
  for (int64_t l = 0, n = 197; l < 12; ++l, n -= 13) {
    tome += deit_block(n, n - 13);
    matching += ((n + 1) / 2) * (n / 2) * 64;
  }
  const MacCount tm = vit_macs(s, tp);
  EXPECT_EQ(tm.total - tm.extra, tome);
  EXPECT_EQ(tm.extra, matching);
  EXPECT_NEAR(static_cast<double>(tome) / 1e9, 2.70, 0.01);  // efficient.md 1.6: 2.70 G
}

TEST_F(Flops, PrunedHeadsShrinkTheAttentionByHand) {
  VitShape s;
  s.image_size = 8;
  s.patch_size = 2;
  s.in_channels = 1;
  s.dim = 16;
  s.depth = 2;
  s.heads = 4;
  s.mlp_hidden = 32;
  s.num_classes = 4;
  // Block 0: 17 tokens, 2 of 4 heads (inner 8); block 1: 9 tokens in attention, 5 in the MLP.
  const TokenPlan plan = cascade_plan(s, {8, 4}, {2, 4});
  EXPECT_EQ(plan.attention_tokens, (std::vector<int64_t>{17, 9}));
  EXPECT_EQ(plan.mlp_tokens, (std::vector<int64_t>{9, 5}));
  const MacCount m = vit_macs(s, plan);
  EXPECT_EQ(m.patch_embed, 16 * 1 * 4 * 16);
  EXPECT_EQ(m.attention_linear, (17 * 16 * 24 + 17 * 8 * 16) + (9 * 16 * 48 + 9 * 16 * 16));
  EXPECT_EQ(m.attention_matmul, 2 * 2 * 17 * 17 * 4 + 2 * 4 * 9 * 9 * 4);
  EXPECT_EQ(m.mlp, 2 * 9 * 16 * 32 + 2 * 5 * 16 * 32);
  EXPECT_EQ(m.head, 16 * 4);
}

TEST_F(Flops, FullPlanEqualsTheModelWorkload) {
  models::Model model = testing::small_vit(3);
  auto* vit = dynamic_cast<models::VitImpl*>(model.ptr().get());
  ASSERT_NE(vit, nullptr);
  const VitShape s = VitShape::of(*vit);
  EXPECT_EQ(vit_macs(s, full_plan(s)).total, model->workload().total_macs());
}

TEST_F(Flops, BadPlansAreErrors) {
  const VitShape s = VitShape::deit_small();
  TokenPlan plan = full_plan(s);
  plan.heads[2] = 0;
  EXPECT_NE(error_of([&] { vit_macs(s, plan); }).find("0 heads"), std::string::npos);
  plan.heads.pop_back();
  EXPECT_NE(error_of([&] { vit_macs(s, plan); }).find("must have 12 blocks"), std::string::npos);
  EXPECT_NE(error_of([&] { cascade_plan(s, {1, 2}); }).find("2 kept counts"), std::string::npos);
}

}  // namespace
}  // namespace tessera::vit_prune
