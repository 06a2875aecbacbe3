// Tests of the byte-level BPE tokenizer and the Tessera LLM file format.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <random>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/io.h"
#include "tessera/llm/tokenizer.h"
#include "test_support.h"

namespace tessera::llm {
namespace {

class LlmTokenizerTest : public testing::SeededTest {};

const std::vector<std::string> kCorpus = {
    "the cat sat on the mat. the cat ate 12 apples.",
    "SELECT name FROM singer WHERE age > 30",
    "def f(x):\n    return x + 1\n",
    "the the the cat cat mat",
};

TEST_F(LlmTokenizerTest, SplitsChunksAsDocumented) {
  const std::string s = "Tom has 12 apples.\n  ok";
  std::vector<std::string> chunks;
  for (auto [b, e] : Tokenizer::split_chunks(s)) chunks.push_back(s.substr(b, e - b));
  const std::vector<std::string> expected = {"Tom",     " has", " ",  "1",  "2",
                                             " apples", ".",    "\n", "  ", "ok"};
  EXPECT_EQ(chunks, expected);
}

TEST_F(LlmTokenizerTest, LearnsTheMostFrequentPairFirst) {
  // "ab" occurs 3 times, "cd" twice: the first merge is (a, b) -> id 256.
  auto tok = Tokenizer::train({"ab ab ab cd cd"}, 256 + 1 + 1, {"<|eos|>"});
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(tok.piece(256), "ab");
  EXPECT_EQ(tok.encode("ab"), (std::vector<int64_t>{256}));
  EXPECT_EQ(tok.encode("abc"), (std::vector<int64_t>{256, 'c'}));
  EXPECT_EQ(tok.special_id("<|eos|>"), 257);
  EXPECT_EQ(tok.decode({256, 257}), "ab<|eos|>");
}

TEST_F(LlmTokenizerTest, RoundTripsArbitraryBytes) {
  auto tok = Tokenizer::train(kCorpus, 300, {"<|eos|>"});
  EXPECT_GT(tok.vocab_size(), 256);
  std::mt19937 rng(5);
  for (int i = 0; i < 50; ++i) {
    std::string s;
    const int len = rng() % 40;
    for (int k = 0; k < len; ++k) s.push_back(static_cast<char>(rng() % 256));
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  for (const auto& s : kCorpus) {
    auto ids = tok.encode(s);
    EXPECT_LT(ids.size(), s.size()) << "no compression on training text: " << s;
    EXPECT_EQ(tok.decode(ids), s);
  }
}

TEST_F(LlmTokenizerTest, JsonRoundTripAndBadInput) {
  auto tok = Tokenizer::train(kCorpus, 280, {"<|eos|>"});
  auto back = Tokenizer::from_json(tok.to_json());
  EXPECT_EQ(back.encode(kCorpus[0]), tok.encode(kCorpus[0]));
  EXPECT_EQ(back.vocab_size(), tok.vocab_size());
  EXPECT_THROW(Tokenizer::from_json({{"type", "other"}}), tessera::Error);
  EXPECT_THROW(
      Tokenizer::from_json(
          {{"type", "tessera-bpe"}, {"merges", {{1, 999}}}, {"specials", nlohmann::json::array()}}),
      tessera::Error);
  EXPECT_THROW(Tokenizer::from_json({{"type", "tessera-bpe"}, {"merges", "x"}}), tessera::Error);
  EXPECT_THROW(tok.decode({-1}), tessera::Error);
  EXPECT_THROW(tok.special_id("<|pad|>"), tessera::Error);
  EXPECT_THROW(Tokenizer::train(kCorpus, 100, {}), tessera::Error);
}

LlamaConfig io_config() {
  LlamaConfig c;
  c.vocab_size = 260;
  c.dim = 32;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.hidden_dim = 40;
  c.max_seq_len = 32;
  c.qkv_bias = true;
  c.qk_norm = true;
  c.tie_embeddings = false;
  return c;
}

TEST_F(LlmTokenizerTest, LlmFileRoundTripsModelAndTokenizer) {
  testing::TempDir dir;
  Llama model(io_config());
  auto tok = Tokenizer::train(kCorpus, 260, {"<|eos|>"});
  save_llm(dir.file("m.safetensors"), model, tok);
  auto b = load_llm(dir.file("m.safetensors"));
  EXPECT_EQ(b.model->config().to_json(), model->config().to_json());
  EXPECT_EQ(b.tokenizer.encode(kCorpus[1]), tok.encode(kCorpus[1]));
  auto tokens = torch::randint(0, 260, {1, 9}, torch::kInt64);
  EXPECT_TRUE(torch::equal(b.model->forward(tokens), model->forward(tokens)));
}

TEST_F(LlmTokenizerTest, LlmFileBadInputThrows) {
  testing::TempDir dir;
  Llama model(io_config());
  auto tok = Tokenizer::train(kCorpus, 260, {"<|eos|>"});
  save_llm(dir.file("m.safetensors"), model, tok);
  auto file = safetensors::load(dir.file("m.safetensors"));
  // Missing tensor.
  auto missing = file;
  missing.tensors.erase(missing.tensors.begin() + 3);
  safetensors::save(dir.file("missing.safetensors"), missing);
  EXPECT_THROW(load_llm(dir.file("missing.safetensors")), tessera::Error);
  // Shape disagreeing with the config.
  auto wrong = file;
  wrong.tensors[1].second = torch::zeros({7});
  safetensors::save(dir.file("wrong.safetensors"), wrong);
  EXPECT_THROW(load_llm(dir.file("wrong.safetensors")), tessera::Error);
  // Config disagreeing with the tensors.
  auto arch = file;
  auto j = nlohmann::json::parse(arch.metadata["tessera.arch"]);
  j["dim"] = 48;
  arch.metadata["tessera.arch"] = j.dump();
  safetensors::save(dir.file("arch.safetensors"), arch);
  EXPECT_THROW(load_llm(dir.file("arch.safetensors")), tessera::Error);
  // Truncated file and no metadata.
  auto bytes = safetensors::serialize(file);
  testing::write_bytes(dir.file("trunc.safetensors"), bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(load_llm(dir.file("trunc.safetensors")), tessera::Error);
  safetensors::File plain;
  plain.tensors.emplace_back("x", torch::zeros({2}));
  safetensors::save(dir.file("plain.safetensors"), plain);
  EXPECT_THROW(load_llm(dir.file("plain.safetensors")), tessera::Error);
}

}  // namespace
}  // namespace tessera::llm
