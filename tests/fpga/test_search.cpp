// The search environment (decoding, reward), random search, DDPG, and the baseline designs.
#include <gtest/gtest.h>

#include "tessera/fpga/ddpg.h"
#include "tessera/fpga/search.h"
#include "tessera/fpga/workloads.h"
#include "test_support.h"

namespace tessera::fpga {
namespace {

class FpgaSearch : public testing::SeededTest {};

std::vector<GemmShape> resnet18() { return gemm_shapes(resnet18_imagenet()); }

TEST_F(FpgaSearch, DecodeFollowsTheRepositoryActionRanges) {
  SearchOptions o;
  const SearchProblem p(resnet18(), AcceleratorSpec(), o);
  EXPECT_EQ(p.n_steps(), 7 + 2 * 21);
  const Design lo = p.decode(std::vector<double>(p.n_steps(), 0.0));
  EXPECT_EQ(lo.spec.lut.dk, 64);
  EXPECT_EQ(lo.spec.lut.dm, 1);
  EXPECT_EQ(lo.spec.lut.bm, 1024);
  EXPECT_EQ(lo.spec.dsp.lmem, 1024);
  EXPECT_EQ(lo.spec.dsp.cols, 1);
  EXPECT_EQ(lo.precisions[5].weight_bits, 2);
  EXPECT_EQ(lo.precisions[5].activation_bits, 2);
  EXPECT_EQ(lo.precisions[0].weight_bits, 8);  // first and last layers stay 8-bit
  EXPECT_EQ(lo.precisions[20].activation_bits, 8);
  const Design hi = p.decode(std::vector<double>(p.n_steps(), 1.0));
  EXPECT_EQ(hi.spec.lut.dk, 256);
  EXPECT_EQ(hi.spec.lut.dn, 50);
  EXPECT_EQ(hi.spec.lut.bm, 51200);
  EXPECT_EQ(hi.spec.dsp.lmem, 25600);
  EXPECT_EQ(hi.spec.dsp.rmem, 4096);
  EXPECT_EQ(hi.spec.dsp.cols, 900 / 16);
  EXPECT_EQ(hi.precisions[5].weight_bits, 8);
  EXPECT_THROW(p.decode(std::vector<double>(3, 0.5)), Error);
}

TEST_F(FpgaSearch, RewardFollowsSection14) {
  SearchOptions o;
  o.target_ms = 10.0;
  o.float_accuracy = 70.0;
  const SearchProblem p(resnet18(), AcceleratorSpec(), o);
  DesignEvaluation e;
  e.latency.cycles = 1.0;
  e.resources.fits = true;
  e.latency.ms = 20.0;
  EXPECT_DOUBLE_EQ(p.reward(e, 69.0), -2.0);  // over the target: -latency / T
  e.latency.ms = 5.0;
  EXPECT_DOUBLE_EQ(p.reward(e, 69.0), -0.01);  // 0.01 (acc - acc_fp)
  e.resources.fits = false;
  e.resources.max_utilization = 1.5;
  EXPECT_DOUBLE_EQ(p.reward(e, 69.0), -2.5);  // rejected: below any design within the target
}

TEST_F(FpgaSearch, TargetDefaultsToTheAllDspLatencyOverTheSpeedup) {
  SearchOptions o;
  o.target_speedup = 2.0;
  const std::vector<GemmShape> g = resnet18();
  const SearchProblem p(g, AcceleratorSpec(), o);
  const double dsp_ms = evaluate_design(g, dsp_only_design(g, AcceleratorSpec())).latency.ms;
  EXPECT_DOUBLE_EQ(p.target_ms(), dsp_ms / 2.0);
}

TEST_F(FpgaSearch, RandomSearchCurveIsTheRunningBest) {
  SearchOptions o;
  o.evaluations = 40;
  const SearchProblem p(resnet18(), AcceleratorSpec(), o);
  const SearchResult r = random_search(p, o);
  ASSERT_EQ(r.best_reward_curve.size(), 40u);
  for (size_t i = 1; i < r.best_reward_curve.size(); ++i)
    EXPECT_GE(r.best_reward_curve[i], r.best_reward_curve[i - 1]);
  EXPECT_DOUBLE_EQ(r.best_reward_curve.back(), r.best.reward);
  // Same seed, same run.
  EXPECT_EQ(random_search(p, o).best_reward_curve, r.best_reward_curve);
}

TEST_F(FpgaSearch, DdpgRunsTheBudgetAndLearnsPastWarmup) {
  SearchOptions o;
  o.evaluations = 30;
  const SearchProblem p(resnet18(), AcceleratorSpec(), o);
  DdpgOptions d;
  d.warmup_episodes = 5;
  d.hidden = 32;
  d.batch_size = 16;
  const SearchResult r = ddpg_search(p, o, d);
  ASSERT_EQ(r.best_reward_curve.size(), 30u);
  EXPECT_DOUBLE_EQ(r.best_reward_curve.back(), r.best.reward);
  EXPECT_EQ(static_cast<int64_t>(r.best.design.precisions.size()), 21);
  const std::vector<float> s = p.state(10, std::vector<double>(10, 0.5));
  EXPECT_EQ(static_cast<int64_t>(s.size()), p.state_size());
}

TEST_F(FpgaSearch, BaselinesUseTheirCoresAndFitTheDevice) {
  const std::vector<GemmShape> g = resnet18();
  const AcceleratorSpec base;
  const Design dsp = dsp_only_design(g, base);
  EXPECT_FALSE(dsp.spec.lut.enabled);
  EXPECT_FALSE(dsp.spec.dsp.pack_middle);
  EXPECT_TRUE(evaluate_design(g, dsp).valid());
  // One more column would not fit.
  AcceleratorSpec wider = dsp.spec;
  wider.dsp.cols += 1;
  EXPECT_FALSE(estimate_resources(wider).fits && wider.dsp.cols * wider.dsp.rows <= 900);
  const Design lut = lut_only_design(g, base, 8);
  EXPECT_FALSE(lut.spec.dsp.enabled);
  const DesignEvaluation le = evaluate_design(g, lut);
  EXPECT_TRUE(le.valid());
  for (const auto& l : le.latency.layers) EXPECT_EQ(l.dsp_cols, 0);
  const Design mm = mix_and_match_design(g, base, 4);
  const DesignEvaluation me = evaluate_design(g, mm);
  EXPECT_TRUE(me.valid());
  for (const auto& l : me.latency.layers) EXPECT_DOUBLE_EQ(l.ratio, mm.ratios.front());
  EXPECT_LT(me.latency.ms, evaluate_design(g, dsp).latency.ms);
}

}  // namespace
}  // namespace tessera::fpga
