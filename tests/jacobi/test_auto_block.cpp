// `--block auto`: the cost curve (interpolation, measurement, cache), the block policy's choices
// on cost curves where the answer is known, and decoding with it, which must stay exactly greedy.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/jacobi/auto_block.h"
#include "tessera/jacobi/decode.h"
#include "test_support.h"

namespace tessera::jacobi {
namespace {

class AutoBlockTest : public testing::SeededTest {};

CostCurve curve(std::vector<int64_t> n, std::vector<double> ratio) {
  CostCurve c;
  c.n_tokens = std::move(n);
  c.ratio = std::move(ratio);
  return c;
}

llm::Llama peaked_model() {
  torch::manual_seed(3);
  llm::LlamaConfig c;
  c.vocab_size = 19;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.hidden_dim = 48;
  c.max_seq_len = 96;
  llm::Llama model(c);
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p));
  return model;
}

TEST_F(AutoBlockTest, CurveInterpolatesAndExtrapolatesAndRejectsBadJson) {
  const auto c = curve({1, 2, 4}, {1.0, 1.2, 2.0});
  EXPECT_DOUBLE_EQ(c.at(1), 1.0);
  EXPECT_DOUBLE_EQ(c.at(3), 1.6);
  EXPECT_DOUBLE_EQ(c.at(6), 2.8);  // the last slope, 0.4 per token, continues
  EXPECT_DOUBLE_EQ(CostCurve::from_json(c.to_json()).at(3), 1.6);
  EXPECT_THROW(CostCurve::from_json({{"n_tokens", {2, 3}}, {"ratio", {1.0, 1.1}}}), Error);
  EXPECT_THROW(CostCurve::from_json({{"n_tokens", {1, 2}}, {"ratio", {1.0}}}), Error);
  EXPECT_THROW(CostCurve::from_json({{"n_tokens", {1, 2}}, {"ratio", {1.0, -2.0}}}), Error);
  EXPECT_THROW(CostCurve::from_json(nlohmann::json::array()), Error);
}

TEST_F(AutoBlockTest, PolicyPicksTheBlockThatPaysAndFallsBackToAr) {
  // Free extra tokens and every guess accepted: the largest block.
  BlockPolicy flat(curve({1, 16}, {1.0, 1.0}), 16);
  for (int i = 0; i < 40; ++i) flat.observe(16, 16);
  EXPECT_EQ(flat.best_block(), 16);
  EXPECT_EQ(flat.next(), 16);
  // Each extra token costs a full forward: no block can pay, so AR, with rare probes.
  BlockPolicy linear(curve({1, 16}, {1.0, 16.0}), 16);
  for (int i = 0; i < 40; ++i) linear.observe(8, 8);
  EXPECT_EQ(linear.best_block(), 1);
  int64_t probes = 0;
  for (int i = 0; i < 1000; ++i) probes += linear.next() > 1 ? 1 : 0;
  EXPECT_GE(probes, 1);
  EXPECT_LE(probes, 8);  // intervals 16, 32, ..., 256: at most 8 probes in 1000 steps
  // Guesses always rejected: AR even on a flat curve.
  BlockPolicy rejected(curve({1, 16}, {1.0, 1.0}), 16);
  for (int i = 0; i < 200; ++i) rejected.observe(16, 1);
  EXPECT_LT(rejected.acceptance(), 0.05);
  EXPECT_NEAR(rejected.expected_speedup(16), 1.0, 0.06);
  EXPECT_THROW(rejected.observe(4, 5), Error);
  EXPECT_THROW(BlockPolicy(curve({1}, {1.0}), 0), Error);
}

TEST_F(AutoBlockTest, AutoDecodingEqualsGreedyOnAnyCurve) {
  auto model = peaked_model();
  llm::LlamaEngine engine(model);
  std::mt19937 rng(5);
  for (const auto& c : {curve({1, 16}, {1.0, 1.0}), curve({1, 16}, {1.0, 16.0}),
                        curve({1, 2, 8}, {1.0, 1.1, 2.0})}) {
    for (int prompt_i = 0; prompt_i < 3; ++prompt_i) {
      std::vector<int64_t> prompt(1 + rng() % 10);
      for (auto& t : prompt) t = static_cast<int64_t>(rng() % 19);
      DecodeOptions o;
      o.max_new_tokens = 48;
      const auto greedy = decode_greedy(engine, prompt, o);
      o.auto_block = true;
      o.block_policy = std::make_shared<BlockPolicy>(c, o.block_size);
      const auto jacobi = decode_jacobi(engine, prompt, o);
      o.block_policy = std::make_shared<BlockPolicy>(c, o.block_size);
      const auto window = decode_jacobi_window(engine, prompt, o);
      EXPECT_EQ(jacobi.tokens, greedy.tokens);
      EXPECT_EQ(window.tokens, greedy.tokens);
      if (c.ratio.back() == 16.0) {
        // AR but for the probes: hardly more forwards than greedy.
        EXPECT_LE(jacobi.stats.n_forwards, greedy.stats.n_forwards + 4);
      }
    }
  }
  DecodeOptions missing;
  missing.auto_block = true;
  EXPECT_THROW(decode_jacobi(engine, {1, 2}, missing), Error);
}

TEST_F(AutoBlockTest, MeasuredCurveIsCachedPerShapeAndDamageIsRemeasured) {
  auto model = peaked_model();
  llm::LlamaEngine engine(model);
  std::vector<float> logits;
  engine.forward(std::vector<int64_t>{1, 2, 3}, logits);
  const auto measured = measure_cost_curve(engine, {1, 2, 4}, 2);
  EXPECT_EQ(engine.n_past(), 3);
  ASSERT_EQ(measured.n_tokens, (std::vector<int64_t>{1, 2, 4}));
  EXPECT_DOUBLE_EQ(measured.ratio[0], 1.0);
  EXPECT_THROW(measure_cost_curve(engine, {2, 4}, 2), Error);
  EXPECT_THROW(measure_cost_curve(engine, {1, 200}, 2), Error);

  const testing::TempDir tmp;
  const auto dir = std::filesystem::path(tmp.path()) / "cost-curves";
  const auto first = cached_cost_curve(engine, dir.string());
  const auto file = dir / cost_curve_key(engine);
  ASSERT_TRUE(std::filesystem::exists(file));
  const auto second = cached_cost_curve(engine, dir.string());
  EXPECT_EQ(first.ratio, second.ratio);  // read back, not measured again
  write_file_atomic(file.string(), "{not json");
  const auto third = cached_cost_curve(engine, dir.string());
  EXPECT_EQ(third.n_tokens.front(), 1);
  EXPECT_NO_THROW(CostCurve::from_json(nlohmann::json::parse(read_file(file.string()))));
}

}  // namespace
}  // namespace tessera::jacobi
