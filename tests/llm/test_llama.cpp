// Tests of the Llama decoder: batch-invariant kernels, the inference engine against the autograd
// forward, bit-identical 1-token vs n-token logits, KV truncation, training and bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <random>

#include "tessera/core/error.h"
#include "tessera/llm/kernels.h"
#include "tessera/llm/llama.h"
#include "test_support.h"

namespace tessera::llm {
namespace {

class LlamaTest : public testing::SeededTest {};

std::vector<float> random_vector(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

LlamaConfig small_config() {
  LlamaConfig c;
  c.vocab_size = 97;
  c.dim = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.hidden_dim = 72;
  c.max_seq_len = 64;
  return c;
}

// Perturbs every weight so that norms and biases are not trivially 1 / 0.
void randomize(Llama& model) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.add_(torch::randn_like(p) * 0.1);
}

TEST_F(LlamaTest, MatmulRowsMatchesReferenceAndDotOrder) {
  std::mt19937 rng(1);
  for (int64_t n_in : {1, 7, 8, 33, 100}) {
    for (int64_t n_rows : {1, 3, 4, 9}) {
      const int64_t n_out = 37;
      auto x = random_vector(n_rows * n_in, rng);
      auto w = random_vector(n_out * n_in, rng);
      auto b = random_vector(n_out, rng);
      std::vector<float> y(n_rows * n_out), ref(n_rows * n_out);
      matmul_rows(x.data(), n_rows, n_in, n_in, w.data(), n_out, n_in, y.data(), n_out, b.data());
      matmul_rows_reference(x.data(), n_rows, n_in, w.data(), n_out, ref.data(), b.data());
      for (int64_t t = 0; t < n_rows; ++t) {
        for (int64_t j = 0; j < n_out; ++j) {
          const float v = y[t * n_out + j];
          EXPECT_NEAR(v, ref[t * n_out + j], 1e-4 * (1 + std::abs(ref[t * n_out + j])))
              << "n_in " << n_in << " n_rows " << n_rows << " t " << t << " j " << j;
          // The documented accumulation order, reproduced by the scalar twin, bit for bit.
          const float d = dot_invariant(&x[t * n_in], &w[j * n_in], n_in) + b[j];
          EXPECT_EQ(v, d) << "n_in " << n_in << " t " << t << " j " << j;
        }
      }
    }
  }
}

TEST_F(LlamaTest, MatmulRowsIsBatchInvariant) {
  std::mt19937 rng(2);
  // 203 has a scalar tail; 256 takes the kernels' vector-store epilogue.
  for (int64_t n_in : {203, 256}) {
    const int64_t n_out = 129, n_rows = 11;
    auto x = random_vector(n_rows * n_in, rng);
    auto w = random_vector(n_out * n_in, rng);
    std::vector<float> all(n_rows * n_out), one(n_out);
    matmul_rows(x.data(), n_rows, n_in, n_in, w.data(), n_out, n_in, all.data(), n_out);
    for (int64_t t = 0; t < n_rows; ++t) {
      matmul_rows(&x[t * n_in], 1, n_in, n_in, w.data(), n_out, n_in, one.data(), n_out);
      EXPECT_EQ(0, std::memcmp(one.data(), &all[t * n_out], n_out * sizeof(float)))
          << "n_in " << n_in << " row " << t;
      for (int64_t j = 0; j < n_out; ++j) {
        EXPECT_EQ(one[j], dot_invariant(&x[t * n_in], &w[j * n_in], n_in)) << "n_in " << n_in;
      }
    }
  }
}

// Every kernel the CPU has gives the scalar twin's bits, for every row count 1..17 (the AVX-512
// kernel's passes of up to 8 token pairs, odd counts with a dropped padding row) and thread count.
TEST_F(LlamaTest, MatmulKernelsAgreeBitForBitAtEveryRowCountAndThreadCount) {
  std::mt19937 rng(3);
  const int threads_before = at::get_num_threads();
  const MatmulKernel best = best_matmul_kernel();
  for (int64_t n_in : {8, 203, 256}) {
    const int64_t n_out = 45, max_rows = 17;
    auto x = random_vector(max_rows * n_in, rng);
    auto w = random_vector(n_out * n_in, rng);
    auto b = random_vector(n_out, rng);
    for (int64_t n_rows = 1; n_rows <= max_rows; ++n_rows) {
      set_matmul_kernel(MatmulKernel::kScalar);
      std::vector<float> expected(n_rows * n_out);
      matmul_rows(x.data(), n_rows, n_in, n_in, w.data(), n_out, n_in, expected.data(), n_out,
                  b.data());
      for (int k = 0; k <= static_cast<int>(best); ++k) {
        set_matmul_kernel(static_cast<MatmulKernel>(k));
        for (int threads : {1, 2, 3}) {
          at::set_num_threads(threads);
          std::vector<float> y(n_rows * n_out, -1.0f);
          matmul_rows(x.data(), n_rows, n_in, n_in, w.data(), n_out, n_in, y.data(), n_out,
                      b.data());
          EXPECT_EQ(0, std::memcmp(y.data(), expected.data(), y.size() * sizeof(float)))
              << matmul_kernel_name() << " n_in " << n_in << " rows " << n_rows << " threads "
              << threads;
        }
      }
    }
  }
  set_matmul_kernel(best);
  at::set_num_threads(threads_before);
}

struct Variant {
  const char* name;
  RopeStyle rope;
  int64_t n_kv_heads;
  bool qkv_bias;
  bool qk_norm;
  bool tie;
};

const Variant kVariants[] = {
    {"neox_gqa_tied", RopeStyle::kNeox, 2, false, false, true},
    {"gptj_mha_untied", RopeStyle::kGptj, 4, false, false, false},
    {"qwen2_bias", RopeStyle::kNeox, 1, true, false, true},
    {"qwen3_qknorm", RopeStyle::kNeox, 2, false, true, true},
};

LlamaConfig variant_config(const Variant& v) {
  auto c = small_config();
  c.rope_style = v.rope;
  c.n_kv_heads = v.n_kv_heads;
  c.qkv_bias = v.qkv_bias;
  c.qk_norm = v.qk_norm;
  c.tie_embeddings = v.tie;
  return c;
}

TEST_F(LlamaTest, EngineMatchesAutogradForward) {
  for (const auto& v : kVariants) {
    Llama model(variant_config(v));
    randomize(model);
    auto tokens = torch::randint(0, 97, {1, 20}, torch::kInt64);
    auto expected = model->forward(tokens).squeeze(0).contiguous();
    LlamaEngine engine(model);
    std::vector<int64_t> ids(tokens.data_ptr<int64_t>(), tokens.data_ptr<int64_t>() + 20);
    std::vector<float> logits;
    engine.forward(ids, logits);
    auto got = torch::from_blob(logits.data(), {20, 97}).clone();
    EXPECT_TRUE(torch::allclose(got, expected, 1e-4, 1e-4))
        << v.name << " max diff " << (got - expected).abs().max().item<float>();
  }
}

TEST_F(LlamaTest, OneTokenAndManyTokenForwardsGiveBitIdenticalLogits) {
  for (const auto& v : kVariants) {
    Llama model(variant_config(v));
    randomize(model);
    std::mt19937 rng(3);
    std::vector<int64_t> ids(30);
    for (auto& t : ids) t = static_cast<int64_t>(rng() % 97);
    // Reference: one token per forward.
    LlamaEngine single(model);
    std::vector<float> step, ref;
    for (auto t : ids) {
      single.forward(&t, 1, step);
      ref.insert(ref.end(), step.begin(), step.end());
    }
    // Chunks of varying sizes (prompt 7, then 1, 4, 5, 13) must give identical bits.
    LlamaEngine chunked(model);
    std::vector<float> got, chunk;
    int64_t pos = 0;
    for (int64_t size : {7, 1, 4, 5, 13}) {
      chunked.forward(&ids[pos], size, chunk);
      got.insert(got.end(), chunk.begin(), chunk.end());
      pos += size;
    }
    ASSERT_EQ(got.size(), ref.size());
    EXPECT_EQ(0, std::memcmp(got.data(), ref.data(), got.size() * sizeof(float))) << v.name;
  }
}

TEST_F(LlamaTest, TruncatedCacheRecomputesTheSameLogits) {
  Llama model(small_config());
  randomize(model);
  LlamaEngine engine(model);
  std::vector<int64_t> ids = {5, 9, 11, 3, 60, 61, 2, 8};
  std::vector<float> first, wrong, second;
  engine.forward(ids, first);
  // Roll back 5 positions, feed garbage, roll back again, feed the true tail.
  engine.truncate(3);
  std::vector<int64_t> garbage = {1, 1, 1, 1};
  engine.forward(garbage, wrong);
  engine.truncate(3);
  engine.forward(&ids[3], 5, second);
  EXPECT_EQ(engine.n_past(), 8);
  EXPECT_EQ(0, std::memcmp(&first[3 * 97], second.data(), 5 * 97 * sizeof(float)));
}

TEST_F(LlamaTest, LastLogitsOnlyMatchFullLogits) {
  Llama model(small_config());
  randomize(model);
  std::vector<int64_t> ids = {5, 9, 11, 3, 60};
  std::vector<float> all, last;
  LlamaEngine a(model), b(model);
  a.forward(ids, all);
  b.forward(ids, last, 1);
  ASSERT_EQ(last.size(), 97u);
  EXPECT_EQ(0, std::memcmp(&all[4 * 97], last.data(), 97 * sizeof(float)));
}

// GPT-J pairing with Q/K rows permuted (the GGUF convention) equals NeoX pairing on the
// original rows: row (h, i) of NeoX goes to (h, 2i) and (h, i + hd/2) to (h, 2i + 1).
TEST_F(LlamaTest, RopePairingsAgreeUnderTheGgufPermutation) {
  auto c = small_config();
  Llama neox(c);
  randomize(neox);
  c.rope_style = RopeStyle::kGptj;
  Llama gptj(c);
  const int64_t hd = c.resolved_head_dim();
  auto permute = [hd](const torch::Tensor& w) {
    const int64_t heads = w.size(0) / hd;
    return w.view({heads, 2, hd / 2, w.size(1)}).transpose(1, 2).reshape(w.sizes()).contiguous();
  };
  {
    torch::NoGradGuard no_grad;
    auto src = neox->named_parameters();
    auto dst = gptj->named_parameters();
    for (auto& item : src) {
      const std::string& name = item.key();
      const bool is_qk = name.size() > 3 && (name.substr(name.size() - 3) == "_wq" ||
                                             name.substr(name.size() - 3) == "_wk");
      dst[name].copy_(is_qk ? permute(item.value()) : item.value());
    }
  }
  auto tokens = torch::randint(0, 97, {2, 12}, torch::kInt64);
  auto a = neox->forward(tokens);
  auto b = gptj->forward(tokens);
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5)) << (a - b).abs().max().item<float>();
}

TEST_F(LlamaTest, TrainingReducesLossOnARepeatedSequence) {
  auto c = small_config();
  Llama model(c);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(3e-3));
  auto seq = torch::arange(0, 33, torch::kInt64).remainder(10).unsqueeze(0).repeat({4, 1});
  auto input = seq.narrow(1, 0, 32), target = seq.narrow(1, 1, 32);
  double first = 0, last = 0;
  for (int step = 0; step < 60; ++step) {
    auto logits = model->forward(input);
    auto loss = torch::cross_entropy_loss(logits.reshape({-1, c.vocab_size}), target.reshape({-1}));
    opt.zero_grad();
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_LT(last, 0.2 * first) << "first " << first << " last " << last;
}

TEST_F(LlamaTest, BadInputThrows) {
  auto c = small_config();
  c.n_kv_heads = 3;
  EXPECT_THROW(c.validate(), tessera::Error);
  EXPECT_THROW(LlamaConfig::from_json({{"dim", 8}, {"bogus", 1}}), tessera::Error);
  EXPECT_THROW(LlamaConfig::from_json({{"dim", "eight"}}), tessera::Error);
  Llama model(small_config());
  LlamaEngine engine(model);
  std::vector<float> logits;
  std::vector<int64_t> bad = {5, 97};
  EXPECT_THROW(engine.forward(bad, logits), tessera::Error);
  std::vector<int64_t> too_long(65, 1);
  EXPECT_THROW(engine.forward(too_long, logits), tessera::Error);
  EXPECT_THROW(engine.truncate(1), tessera::Error);
  auto roundtrip = LlamaConfig::from_json(small_config().to_json());
  EXPECT_EQ(roundtrip.to_json(), small_config().to_json());
}

}  // namespace
}  // namespace tessera::llm
