// CP-ViT cascade pruning: the gathered forward against the masked reference, keep ratio 1 against
// the unpruned model, the schedule against hand computations, scores against naive loops, heads
// against the model's own head mask, and every bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "tessera/vit_prune/cascade.h"
#include "test_support.h"
#include "vit_fixture.h"

namespace tessera::vit_prune {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;
using testing::small_images;
using testing::small_vit;

class Cascade : public SeededTest {};

CascadeOptions options_with(double keep, double heads, PatchScore score) {
  CascadeOptions o;
  o.keep_ratio = keep;
  o.head_keep_ratio = heads;
  o.patch_score = score;
  o.ramp_fraction = 1.0;  // every block prunes a share: the strictest cascade to compare
  return o;
}

TEST_F(Cascade, KeepRatioOneEqualsUnprunedModelExactly) {
  torch::NoGradGuard no_grad;
  models::Model model = small_vit();
  const auto images = small_images(6);
  for (const PatchScore score :
       {PatchScore::column_max, PatchScore::cls_row, PatchScore::column_mean}) {
    const CascadeSchedule schedule =
        calibrate_cascade(model, small_images(16), options_with(1.0, 1.0, score));
    CascadeVit pruned(model, schedule, score);
    const ReducedOutput out = pruned.forward(images);
    EXPECT_TRUE(torch::equal(out.logits, model->forward(images))) << patch_score_name(score);
    EXPECT_EQ(out.tokens.tokens(), 17);
  }
  ReducedVit plain(model);
  EXPECT_TRUE(torch::equal(plain.forward(images, nullptr).logits, model->forward(images)));
}

TEST_F(Cascade, GatheredForwardEqualsMaskedForwardOnKeptTokens) {
  torch::NoGradGuard no_grad;
  models::Model model = small_vit(4);
  const auto images = small_images(5);
  for (const PatchScore score :
       {PatchScore::column_max, PatchScore::cls_row, PatchScore::column_mean}) {
    for (const double heads : {1.0, 0.5}) {
      const CascadeSchedule schedule =
          calibrate_cascade(model, small_images(32), options_with(0.4, heads, score));
      CascadeVit pruned(model, schedule, score);
      const ReducedOutput gathered = pruned.forward(images);
      const MaskedOutput masked = cascade_forward_masked(model, images, schedule, score);
      const std::string what = patch_score_name(score) + " heads " + std::to_string(heads);
      EXPECT_TRUE(torch::allclose(gathered.logits, masked.logits, 1e-4, 1e-5)) << what;
      // The kept set is the same, and each kept token has the same value.
      const auto index = gathered.tokens.index;
      ASSERT_EQ(index.size(1), schedule.kept_patches.back() + 1) << what;
      EXPECT_TRUE(torch::equal(masked.keep.sum(1), torch::full({5}, index.size(1), torch::kLong)));
      EXPECT_TRUE(masked.keep.gather(1, index).all().item<bool>()) << what;
      const auto rows = index.unsqueeze(-1).expand({-1, -1, masked.x.size(2)});
      EXPECT_TRUE(torch::allclose(masked.x.gather(1, rows), gathered.tokens.x, 1e-4, 1e-5)) << what;
      EXPECT_TRUE(torch::equal(index.select(1, 0), torch::zeros({5}, torch::kLong)))
          << "CLS must stay first";
    }
  }
}

TEST_F(Cascade, ScheduleMatchesHandComputation) {
  CascadeOptions o;
  o.keep_ratio = 0.5;
  o.ramp_fraction = 1.0 / 3.0;  // 1 of 3 blocks prunes everything
  EXPECT_EQ(cascade_kept_patches(16, 3, o), (std::vector<int64_t>{8, 8, 8}));
  o.ramp_fraction = 1.0;  // weights 1, 1, 2 of 8 pruned patches: 2, 2, 4
  EXPECT_EQ(cascade_kept_patches(16, 3, o, {1.0, 1.0, 2.0}), (std::vector<int64_t>{14, 12, 8}));
  o.keep_ratio = 1.0;
  EXPECT_EQ(cascade_kept_patches(16, 3, o), (std::vector<int64_t>{16, 16, 16}));
  o.keep_ratio = 0.01;  // never below one patch
  EXPECT_EQ(cascade_kept_patches(16, 2, o).back(), 1);
  // DeiT-S: 196 patches, 12 blocks, ramp 1/3 = 4 blocks of 24.5 patches each (98 pruned).
  o.keep_ratio = 0.5;
  o.ramp_fraction = 1.0 / 3.0;
  const auto deit = cascade_kept_patches(196, 12, o);
  EXPECT_EQ(deit[0], 172);  // 196 - 24.5 = 171.5 rounds away from zero
  EXPECT_EQ(deit[1], 147);
  EXPECT_EQ(deit[3], 98);
  EXPECT_EQ(deit[11], 98);
}

TEST_F(Cascade, CalibrationIsLayerAwareAndKeepsHeads) {
  models::Model model = small_vit(3);
  CascadeOptions o = options_with(0.5, 0.75, PatchScore::column_max);
  const CascadeSchedule s = calibrate_cascade(model, small_images(40), o);
  ASSERT_EQ(s.kept_patches.size(), 3u);
  EXPECT_EQ(s.kept_patches.back(), 8);
  for (size_t l = 0; l < 3; ++l) {
    EXPECT_EQ(s.kept_heads[l].size(), 3u);
    EXPECT_GE(s.range_weight[l], 0.25);
    EXPECT_LE(s.range_weight[l], 4.0);
    EXPECT_GT(s.attention_range[l], 0.0);
    // The kept heads are the three best scored.
    const auto& scores = s.head_scores[l];
    std::set<int64_t> kept(s.kept_heads[l].begin(), s.kept_heads[l].end());
    for (int64_t h = 0; h < 4; ++h)
      if (!kept.count(h))
        for (const int64_t k : kept) EXPECT_GE(scores[k], scores[h]);
  }
  // Equal shares when layer-aware is off.
  o.layer_aware = false;
  const CascadeSchedule flat = calibrate_cascade(model, small_images(40), o);
  EXPECT_EQ(flat.kept_patches, cascade_kept_patches(16, 3, o));
}

TEST_F(Cascade, PatchScoresMatchNaiveLoops) {
  const auto probs = torch::softmax(torch::randn({2, 3, 5, 5}), -1);
  const auto p = probs.accessor<float, 4>();
  for (const PatchScore kind :
       {PatchScore::column_max, PatchScore::cls_row, PatchScore::column_mean}) {
    torch::Tensor score = torch::zeros({2, 5});
    accumulate_patch_score(score, probs, kind);
    for (int b = 0; b < 2; ++b) {
      for (int j = 0; j < 5; ++j) {
        double expected = 0.0;
        for (int h = 0; h < 3; ++h) {
          double m = 0.0, sum = 0.0;
          for (int i = 0; i < 5; ++i) {
            m = std::max(m, static_cast<double>(p[b][h][i][j]));
            sum += p[b][h][i][j];
          }
          expected += kind == PatchScore::column_max ? m
                      : kind == PatchScore::cls_row  ? p[b][h][0][j]
                                                     : sum / 5.0;
        }
        EXPECT_NEAR(score[b][j].item<double>(), expected, 1e-6) << patch_score_name(kind);
      }
    }
  }
}

TEST_F(Cascade, PrunedHeadsEqualTheModelsHeadMask) {
  torch::NoGradGuard no_grad;
  models::Model model = small_vit(2);
  const auto images = small_images(3);
  ReducedVit engine(model, {{0, 2}, {1, 2, 3}});
  EXPECT_EQ(engine.heads(0), 2);
  EXPECT_EQ(engine.heads(1), 3);
  // Reference: the model's own blocks with its head_mask (a 0 removes the head).
  auto& vit = engine.vit();
  auto x = vit.patch_embed()->forward(images);
  x = vit.blocks()[0]->forward_with_probs(x, torch::tensor({1.0, 0.0, 1.0, 0.0})).first;
  x = vit.blocks()[1]->forward_with_probs(x, torch::tensor({0.0, 1.0, 1.0, 1.0})).first;
  const auto reference = vit.head()->forward(x);
  const ReducedOutput out = engine.forward(images, nullptr);
  EXPECT_TRUE(torch::allclose(out.logits, reference, 1e-4, 1e-5));
  EXPECT_EQ(out.trace.heads, (std::vector<int64_t>{2, 3}));
}

TEST_F(Cascade, BadInputIsAClearError) {
  models::Model model = small_vit();
  const auto images = small_images(4);
  for (const double keep : {0.0, -0.5, 1.5, std::nan("")}) {
    EXPECT_NE(error_of([&] {
                calibrate_cascade(model, images, options_with(keep, 1, {}));
              }).find("keep_ratio must be in (0, 1]"),
              std::string::npos)
        << keep;
  }
  EXPECT_NE(error_of([&] {
              calibrate_cascade(model, images, options_with(0.5, 0.1, {}));
            }).find("every head would be removed"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              calibrate_cascade(model, images, options_with(0.5, 0.0, {}));
            }).find("head_keep_ratio must be in (0, 1]"),
            std::string::npos);
  models::ModelConfig resnet;
  resnet.name = "resnet20";
  resnet.image_size = 8;
  resnet.width_mult = 0.25;
  models::Model not_vit = models::create(resnet);
  EXPECT_NE(
      error_of([&] { calibrate_cascade(not_vit, images, CascadeOptions{}); }).find("needs a ViT"),
      std::string::npos);
  EXPECT_NE(error_of([&] { ReducedVit engine(not_vit); }).find("got a 'resnet20' model"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              ReducedVit engine(model, {{0, 4}});
            }).find("not in [0, 4)"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              ReducedVit engine(model, {{1, 1}});
            }).find("repeats a head"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_patch_score("row-max"); }).find("unknown patch score"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera::vit_prune
