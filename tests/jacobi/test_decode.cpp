// Jacobi decoding must return exactly the greedy AR tokens, for both Jacobi forms, both initial
// guesses, many block sizes, prompts and random models; plus statistics, EOS, limits, bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "tessera/core/error.h"
#include "tessera/jacobi/decode.h"
#include "test_support.h"

namespace tessera::jacobi {
namespace {

class JacobiDecodeTest : public testing::SeededTest {};

llm::LlamaConfig tiny_config(int64_t seed) {
  llm::LlamaConfig c;
  c.vocab_size = 16 + seed % 7;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = seed % 2 == 0 ? 2 : 4;
  c.hidden_dim = 48;
  c.max_seq_len = 96;
  c.rope_style = seed % 3 == 0 ? llm::RopeStyle::kGptj : llm::RopeStyle::kNeox;
  c.qkv_bias = seed % 4 == 1;
  c.qk_norm = seed % 5 == 2;
  c.tie_embeddings = seed % 2 == 1;
  return c;
}

// Large random weights give peaked, repetitive greedy output, where Jacobi accepts several
// tokens per forward; small ones give near-ties, where exactness is hardest.
llm::Llama random_model(int64_t seed, double scale) {
  torch::manual_seed(seed);
  llm::Llama model(tiny_config(seed));
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * scale);
  return model;
}

std::vector<int64_t> random_prompt(std::mt19937& rng, int64_t vocab, int64_t length) {
  std::vector<int64_t> p(length);
  for (auto& t : p) t = static_cast<int64_t>(rng() % vocab);
  return p;
}

TEST_F(JacobiDecodeTest, JacobiOutputEqualsGreedyOverManyModelsAndPrompts) {
  std::mt19937 rng(7);
  int64_t n_cases = 0, n_multi = 0;
  for (int64_t seed = 0; seed < 8; ++seed) {
    for (double scale : {0.05, 1.0}) {
      auto model = random_model(seed, scale);
      llm::LlamaEngine engine(model);
      for (int prompt_i = 0; prompt_i < 3; ++prompt_i) {
        auto prompt = random_prompt(rng, model->config().vocab_size, 1 + rng() % 12);
        DecodeOptions o;
        o.max_new_tokens = 40;
        o.seed = rng();
        const auto ar = decode_greedy(engine, prompt, o);
        ASSERT_EQ(ar.tokens.size(), 40u);
        for (int64_t n : {1, 2, 3, 5, 8, 16}) {
          for (auto kind : {DecoderKind::kJacobi, DecoderKind::kJacobiWindow}) {
            for (auto init : {InitKind::kRandomPrompt, InitKind::kNgramPool}) {
              o.block_size = n;
              o.init = init;
              const auto got = decode(engine, prompt, kind, o);
              ASSERT_EQ(got.tokens, ar.tokens)
                  << "seed " << seed << " scale " << scale << " prompt " << prompt_i << " n " << n
                  << " " << decoder_name(kind) << " " << init_name(init);
              EXPECT_LE(got.stats.n_forwards, ar.stats.n_forwards);
              n_multi += got.stats.n_fast_forwarded > 0;
              ++n_cases;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(n_cases, 8 * 2 * 3 * 6 * 4);
  EXPECT_GT(n_multi, n_cases / 4) << "Jacobi rarely accepted more than one token per forward";
}

TEST_F(JacobiDecodeTest, StopsAtEosExactlyLikeGreedy) {
  auto model = random_model(3, 0.05);
  llm::LlamaEngine engine(model);
  std::vector<int64_t> prompt = {1, 2, 3};
  DecodeOptions o;
  o.max_new_tokens = 30;
  const auto full = decode_greedy(engine, prompt, o);
  o.eos_id = full.tokens[12];
  const auto ar = decode_greedy(engine, prompt, o);
  ASSERT_LE(ar.tokens.size(), 13u);
  EXPECT_EQ(ar.tokens.back(), o.eos_id);
  for (int64_t n : {2, 4, 7}) {
    o.block_size = n;
    EXPECT_EQ(decode_jacobi(engine, prompt, o).tokens, ar.tokens) << n;
    EXPECT_EQ(decode_jacobi_window(engine, prompt, o).tokens, ar.tokens) << n;
  }
}

TEST_F(JacobiDecodeTest, StopsAtTheContextEnd) {
  auto model = random_model(4, 1.0);  // max_seq_len 96
  llm::LlamaEngine engine(model);
  std::vector<int64_t> prompt(90, 1);
  DecodeOptions o;
  o.max_new_tokens = 100;
  o.block_size = 4;
  const auto ar = decode_greedy(engine, prompt, o);
  EXPECT_EQ(ar.tokens.size(), 6u);
  EXPECT_EQ(decode_jacobi(engine, prompt, o).tokens, ar.tokens);
  EXPECT_EQ(decode_jacobi_window(engine, prompt, o).tokens, ar.tokens);
}

TEST_F(JacobiDecodeTest, TrainedRepetitiveModelDecodesSeveralTokensPerForward) {
  llm::LlamaConfig c = tiny_config(0);
  c.vocab_size = 16;
  llm::Llama model(c);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(1e-2));
  auto seq = torch::arange(0, 65, torch::kInt64).remainder(10).unsqueeze(0);
  for (int step = 0; step < 80; ++step) {
    auto logits = model->forward(seq.narrow(1, 0, 64));
    auto loss =
        torch::cross_entropy_loss(logits.reshape({-1, 16}), seq.narrow(1, 1, 64).reshape({-1}));
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  llm::LlamaEngine engine(model);
  std::vector<int64_t> prompt = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1};
  DecodeOptions o;
  o.max_new_tokens = 48;
  o.block_size = 8;
  o.init = InitKind::kNgramPool;
  const auto ar = decode_greedy(engine, prompt, o);
  const auto jac = decode_jacobi(engine, prompt, o);
  ASSERT_EQ(jac.tokens, ar.tokens);
  EXPECT_DOUBLE_EQ(ar.stats.tokens_per_forward(), 1.0);
  EXPECT_GT(jac.stats.tokens_per_forward(), 3.0);
  EXPECT_GT(jac.stats.n_fast_forwarded, 0);
}

TEST_F(JacobiDecodeTest, TrajectoriesEndInFixedPointsThatConcatenateToGreedy) {
  for (int64_t seed : {1, 2, 5}) {
    auto model = random_model(seed, 1.0);
    llm::LlamaEngine engine(model);
    std::vector<int64_t> prompt = {3, 1, 4, 1, 5};
    DecodeOptions o;
    o.max_new_tokens = 30;
    o.block_size = 8;
    o.seed = 11;
    const auto ar = decode_greedy(engine, prompt, o);
    const auto trajs = collect_trajectories(engine, prompt, o);
    std::vector<int64_t> joined;
    for (const auto& t : trajs) {
      ASSERT_FALSE(t.states.empty());
      EXPECT_LE(t.states.size(), t.states.back().size() + 1);  // converges in <= n+1 states
      joined.insert(joined.end(), t.states.back().begin(), t.states.back().end());
    }
    EXPECT_EQ(joined, ar.tokens) << seed;
    EXPECT_EQ(trajs.size(), 4u);
    EXPECT_EQ(trajs[1].prompt.size(), prompt.size() + 8);
  }
}

TEST_F(JacobiDecodeTest, BadInputThrows) {
  auto model = random_model(0, 0.05);
  llm::LlamaEngine engine(model);
  DecodeOptions o;
  o.block_size = 0;
  EXPECT_THROW(decode_jacobi(engine, {1, 2}, o), tessera::Error);
  o.block_size = 4;
  EXPECT_THROW(decode_jacobi(engine, {}, o), tessera::Error);
  EXPECT_THROW(decode_greedy(engine, std::vector<int64_t>(96, 1), o), tessera::Error);
  EXPECT_THROW(decode_greedy(engine, {1, 999}, o), tessera::Error);
  EXPECT_THROW(parse_decoder("beam"), tessera::Error);
  EXPECT_THROW(parse_init("zeros"), tessera::Error);
}

}  // namespace
}  // namespace tessera::jacobi
