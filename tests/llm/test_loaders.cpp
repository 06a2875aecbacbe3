// Tests of the foreign checkpoint loaders and tokenizers on small files written here: each loaded
// model must reproduce the logits of the model the file was written from.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "checkpoint_writers.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/loaders.h"
#include "test_support.h"

namespace tessera::llm {
namespace {

class LlmLoaderTest : public testing::SeededTest {};

using writers::gguf_name;
using writers::hf_config;
using writers::hf_name;
using writers::llama2c_bytes;
using writers::permute_rows;
using writers::random_model;
using writers::sp_vocab;
using writers::tokenizer_bin;

/// The writers' small model with a vocabulary of 64 (the loaders need no tokenizer here).
LlamaConfig base_config() {
  LlamaConfig c = writers::small_config();
  c.vocab_size = 64;
  return c;
}

torch::Tensor logits_of(Llama& m) {
  torch::manual_seed(99);
  auto tokens = torch::randint(0, m->config().vocab_size, {1, 12}, torch::kInt64);
  return m->forward(tokens);
}

TEST_F(LlmLoaderTest, HuggingFaceDirectoryInF32F16Bf16AndShards) {
  auto c = base_config();
  c.qkv_bias = true;  // Qwen2
  auto model = random_model(c);
  auto expected = logits_of(model);
  for (auto dtype : {torch::kFloat32, torch::kFloat16, torch::kBFloat16}) {
    testing::TempDir dir;
    write_file_atomic(dir.file("config.json"), hf_config(c, "qwen2").dump());
    safetensors::File f;
    for (const auto& [name, t] : model->named_weights())
      f.tensors.emplace_back(hf_name(name), t.detach().to(dtype));
    safetensors::save(dir.file("model.safetensors"), f);
    auto loaded = load_hf_dir(dir.path());
    auto got = logits_of(loaded);
    const double tol = dtype == torch::kFloat32 ? 1e-6 : dtype == torch::kFloat16 ? 2e-3 : 2e-2;
    EXPECT_TRUE(torch::allclose(got, expected, tol, tol))
        << c10::toString(dtype) << " " << (got - expected).abs().max().item<float>();
  }
  // Two shards and an index.
  testing::TempDir dir;
  write_file_atomic(dir.file("config.json"), hf_config(c, "qwen2").dump());
  safetensors::File a, b;
  nlohmann::json index = {{"weight_map", nlohmann::json::object()}};
  int i = 0;
  for (const auto& [name, t] : model->named_weights()) {
    auto& shard = (i++ % 2 == 0) ? a : b;
    const std::string file =
        &shard == &a ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
    shard.tensors.emplace_back(hf_name(name), t.detach());
    index["weight_map"][hf_name(name)] = file;
  }
  safetensors::save(dir.file("model-00001-of-00002.safetensors"), a);
  safetensors::save(dir.file("model-00002-of-00002.safetensors"), b);
  write_file_atomic(dir.file("model.safetensors.index.json"), index.dump());
  auto sharded = load_hf_dir(dir.path());
  EXPECT_TRUE(torch::allclose(logits_of(sharded), expected, 1e-6, 1e-6));
}

TEST_F(LlmLoaderTest, HuggingFaceBadInputIsAClearError) {
  auto c = base_config();
  auto model = random_model(c);
  testing::TempDir dir;
  safetensors::File f;
  for (const auto& [name, t] : model->named_weights())
    f.tensors.emplace_back(hf_name(name), t.detach());
  safetensors::save(dir.file("model.safetensors"), f);
  auto cfg = hf_config(c, "llama");
  cfg["intermediate_size"] = 128;  // disagrees with the tensors
  write_file_atomic(dir.file("config.json"), cfg.dump());
  EXPECT_THROW(load_hf_dir(dir.path()), tessera::Error);
  cfg = hf_config(c, "llama");
  cfg["rope_scaling"] = {{"rope_type", "llama3"}};
  write_file_atomic(dir.file("config.json"), cfg.dump());
  EXPECT_THROW(load_hf_dir(dir.path()), tessera::Error);
  cfg = hf_config(c, "llama");
  write_file_atomic(dir.file("config.json"), cfg.dump());
  f.tensors.erase(f.tensors.begin() + 2);  // a missing tensor
  safetensors::save(dir.file("model.safetensors"), f);
  EXPECT_THROW(load_hf_dir(dir.path()), tessera::Error);
  write_file_atomic(dir.file("config.json"), "{not json");
  EXPECT_THROW(load_hf_dir(dir.path()), tessera::Error);
  EXPECT_THROW(load_hf_dir(dir.file("nonexistent")), tessera::Error);
}

TEST_F(LlmLoaderTest, Llama2cLegacyAndV1Checkpoints) {
  for (bool v1 : {false, true}) {
    for (bool tied : {false, true}) {
      auto c = base_config();
      c.rope_style = RopeStyle::kGptj;
      c.tie_embeddings = tied;
      auto model = random_model(c);
      testing::TempDir dir;
      const auto bytes = llama2c_bytes(model, v1, 32);
      testing::write_bytes(dir.file("m.bin"), bytes);
      auto loaded = load_llama2c(dir.file("m.bin"));
      EXPECT_EQ(loaded->config().rope_style, RopeStyle::kGptj);
      EXPECT_TRUE(torch::equal(logits_of(loaded), logits_of(model)))
          << "v1 " << v1 << " tied " << tied;
      testing::write_bytes(dir.file("t.bin"), bytes.substr(0, bytes.size() - 10));
      EXPECT_THROW(load_llama2c(dir.file("t.bin")), tessera::Error);
      testing::write_bytes(dir.file("x.bin"), bytes + "extra");
      EXPECT_THROW(load_llama2c(dir.file("x.bin")), tessera::Error);
    }
  }
  testing::TempDir dir;
  testing::write_bytes(dir.file("zero.bin"), std::string(28, '\0'));
  EXPECT_THROW(load_llama2c(dir.file("zero.bin")), tessera::Error);
}

TEST_F(LlmLoaderTest, Llama2cTokenizerEncodesByBestScoreMerges) {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  sp_vocab(pieces, scores, " ");
  testing::TempDir dir;
  testing::write_bytes(dir.file("tokenizer.bin"), tokenizer_bin(pieces, scores));
  auto tok = load_llama2c_tokenizer(dir.file("tokenizer.bin"));
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  auto id = [&](const std::string& p) {
    return static_cast<int64_t>(std::find(pieces.begin(), pieces.end(), p) - pieces.begin());
  };
  // " hello" is one piece. In " world", " w" and "wo" tie (score 2) and the first pair wins;
  // "rld" is unreachable since neither "rl" nor "ld" is a piece.
  EXPECT_EQ(tok.encode("hello world"),
            (std::vector<int64_t>{id(" hello"), id(" w"), id("o"), id("r"), id("l"), id("d")}));
  EXPECT_EQ(tok.encode("z"), (std::vector<int64_t>{id(" "), 3 + 'z'}));  // byte fallback
  for (const std::string s : {"hello world", "héllo\nz", " lead", "x"})
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  testing::write_bytes(dir.file("bad.bin"), tokenizer_bin(pieces, scores).substr(0, 100));
  EXPECT_THROW(load_llama2c_tokenizer(dir.file("bad.bin")), tessera::Error);
}

TEST_F(LlmLoaderTest, GgufLlamaWithPermutedQkMatchesTheHfModel) {
  auto c = base_config();  // NeoX, HF layout
  auto model = random_model(c);
  auto expected = logits_of(model);
  const int64_t hd = c.resolved_head_dim();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& [n, t] : model->named_weights()) {
    const bool qk =
        n.size() > 3 && (n.substr(n.size() - 3) == ".wq" || n.substr(n.size() - 3) == ".wk");
    tensors.emplace_back(gguf_name(n), qk ? permute_rows(t.detach(), hd) : t.detach());
  }
  std::vector<std::string> tokens;
  std::vector<float> scores;
  sp_vocab(tokens, scores, "\xe2\x96\x81");
  const std::vector<std::pair<std::string, uint32_t>> u32 = {
      {"llama.embedding_length", 64},       {"llama.block_count", 2},
      {"llama.feed_forward_length", 96},    {"llama.attention.head_count", 4},
      {"llama.attention.head_count_kv", 2}, {"llama.context_length", 32},
      {"tokenizer.ggml.bos_token_id", 1},   {"tokenizer.ggml.eos_token_id", 2}};
  const std::vector<std::pair<std::string, float>> f32 = {
      {"llama.attention.layer_norm_rms_epsilon", 1e-5f}, {"llama.rope.freq_base", 10000.0f}};
  const std::vector<std::pair<std::string, std::string>> str = {{"general.architecture", "llama"},
                                                                {"tokenizer.ggml.model", "llama"}};
  testing::TempDir dir;
  for (bool q8 : {false, true}) {
    const auto bytes = write_gguf(str, u32, f32, {{"tokenizer.ggml.tokens", tokens}}, tensors, q8);
    testing::write_bytes(dir.file("m.gguf"), bytes);
    auto loaded = load_gguf(dir.file("m.gguf"));
    EXPECT_EQ(loaded->config().rope_style, RopeStyle::kGptj);
    auto got = logits_of(loaded);
    const double tol = q8 ? 5e-2 : 1e-5;  // Q8_0: ~0.4% relative weight error
    EXPECT_TRUE(torch::allclose(got, expected, tol, tol))
        << "q8 " << q8 << " max diff " << (got - expected).abs().max().item<float>();
    // Truncation anywhere in the data is caught.
    testing::write_bytes(dir.file("t.gguf"), bytes.substr(0, bytes.size() - 40));
    EXPECT_THROW(load_gguf(dir.file("t.gguf")), tessera::Error);
  }
  // Without the permutation the logits differ: the loader really relies on it.
  {
    auto plain = tensors;
    for (auto& [n, t] : plain) {
      if (n.find("attn_q.") != std::string::npos || n.find("attn_k.") != std::string::npos) {
        for (const auto& [mn, mt] : model->named_weights()) {
          if (gguf_name(mn) == n) t = mt.detach();
        }
      }
    }
    testing::write_bytes(dir.file("p.gguf"), write_gguf(str, u32, f32, {}, plain, false));
    auto wrong = load_gguf(dir.file("p.gguf"));
    EXPECT_FALSE(torch::allclose(logits_of(wrong), expected, 1e-3, 1e-3));
  }
  // Tokenizer metadata: SentencePiece pieces with U+2581 spaces.
  testing::write_bytes(
      dir.file("m.gguf"),
      write_gguf(str, u32, f32, {{"tokenizer.ggml.tokens", tokens}}, tensors, false));
  auto tok = load_gguf_tokenizer(dir.file("m.gguf"));
  EXPECT_EQ(tok.encode("hello").size(), 1u);
  EXPECT_EQ(tok.decode(tok.encode("hello world")), "hello world");
  EXPECT_EQ(tok.eos_id(), 2);
  // Bad input: magic, unsupported arch, unsupported quant type.
  testing::write_bytes(dir.file("bad.gguf"), "GGUX" + std::string(40, '\0'));
  EXPECT_THROW(load_gguf(dir.file("bad.gguf")), tessera::Error);
  testing::write_bytes(dir.file("arch.gguf"), write_gguf({{"general.architecture", "gemma"}}, u32,
                                                         f32, {}, tensors, false));
  EXPECT_THROW(load_gguf(dir.file("arch.gguf")), tessera::Error);
  auto q4 = write_gguf(str, u32, f32, {}, tensors, false);
  // Patch the first tensor's type field (after its name, n_dims and dims) to Q4_0 (2).
  const std::string first = "token_embd.weight";
  const size_t at = q4.find(first) + first.size() + 4 + 2 * 8;
  const uint32_t q4_type = 2;
  std::memcpy(&q4[at], &q4_type, 4);
  testing::write_bytes(dir.file("q4.gguf"), q4);
  EXPECT_THROW(load_gguf(dir.file("q4.gguf")), tessera::Error);
}

// GPT-2 byte-level BPE (tokenizer.json and GGUF gpt2): "\xc4\xa0" is the alphabet's space.
TEST_F(LlmLoaderTest, ByteLevelBpeTokenizerJson) {
  nlohmann::json vocab = nlohmann::json::object();
  // GPT-2's alphabet: printable bytes map to themselves, the rest to U+0100 onwards.
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const uint32_t cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80)
      s.push_back(static_cast<char>(cp));
    else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    vocab[s] = b;
  }
  vocab["\xc4\xa0t"] = 256;
  vocab["he"] = 257;
  vocab["\xc4\xa0the"] = 258;
  nlohmann::json j = {
      {"model",
       {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\xc4\xa0 t", "h e", "\xc4\xa0t he"}}}},
      {"added_tokens", {{{"id", 259}, {"content", "<|endoftext|>"}}}}};
  testing::TempDir dir;
  write_file_atomic(dir.file("tokenizer.json"), j.dump());
  auto tok = load_tokenizer_json(dir.file("tokenizer.json"));
  EXPECT_EQ(tok.eos_id(), 259);
  EXPECT_EQ(tok.encode("the the"), (std::vector<int64_t>{'t', 257, 258}));
  for (const std::string s : {"the the", "a\n\tb  c", "\xff\x01 ok"})
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  write_file_atomic(dir.file("bad.json"), R"({"model": {"type": "Unigram"}})");
  EXPECT_THROW(load_tokenizer_json(dir.file("bad.json")), tessera::Error);
}

}  // namespace
}  // namespace tessera::llm
