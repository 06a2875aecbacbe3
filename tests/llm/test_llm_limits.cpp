// Hostile LLM files (issue 22): configs beyond the parameter budget or the file's tensors,
// sizes given as floats, self-doubling tokenizer merges, non-finite weights, token ids outside
// the vocabulary. Each is a tessera::Error naming the file or the field, never an allocation.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/io.h"
#include "tessera/llm/llama.h"
#include "tessera/llm/loaders.h"
#include "tessera/llm/tokenizer.h"
#include "test_support.h"

namespace tessera::llm {
namespace {

using ::tessera::testing::error_of;
using ::tessera::testing::TempDir;

LlamaConfig small_config() {
  LlamaConfig c;
  c.vocab_size = 256;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.hidden_dim = 48;
  c.max_seq_len = 16;
  return c;
}

const std::string kByteTokenizer = R"({"type": "tessera-bpe", "merges": [], "specials": []})";

class LlmLimits : public testing::SeededTest {
 protected:
  /// A Tessera LLM file with the given metadata texts and no tensors.
  std::string tiny_file(const std::string& arch, const std::string& tokenizer = kByteTokenizer) {
    safetensors::File file;
    file.metadata["tessera.arch"] = arch;
    file.metadata["tessera.tokenizer"] = tokenizer;
    const std::string path = dir_.file("tiny.safetensors");
    safetensors::save(path, file);
    return path;
  }
  TempDir dir_;
};

TEST_F(LlmLimits, HugeConfigsAreRefusedBeforeAllocating) {
  // Over the parameter budget: the message names the fields and the way to raise it.
  const std::string budget = error_of([&] {
    load_llm(tiny_file(R"({"name": "llama", "vocab_size": 256, "n_layers": 1000000000})"));
  });
  EXPECT_NE(budget.find("n_layers 1000000000"), std::string::npos) << budget;
  EXPECT_NE(budget.find("TESSERA_MAX_PARAMS"), std::string::npos) << budget;
  // Under the budget (about 1.3 GB of float32) but not backed by the file's tensors.
  const std::string path =
      tiny_file(R"({"name": "llama", "vocab_size": 256, "dim": 1024, "n_layers": 64})");
  const std::string unbacked = error_of([&] { load_llm(path); });
  EXPECT_NE(unbacked.find(path), std::string::npos) << unbacked;
  EXPECT_NE(unbacked.find("needs more than"), std::string::npos) << unbacked;
}

TEST_F(LlmLimits, FloatSizesAndDeepNestingAreRefused) {
  const std::string error =
      error_of([&] { load_llm(tiny_file(R"({"name": "llama", "vocab_size": 2.5})")); });
  EXPECT_NE(error.find("vocab_size"), std::string::npos) << error;
  EXPECT_NE(error.find("integer"), std::string::npos) << error;
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  const std::string nested =
      error_of([&] { load_llm(tiny_file(R"({"name": "llama", "dim": )" + deep + "}")); });
  EXPECT_NE(nested.find("nested deeper"), std::string::npos) << nested.substr(0, 200);
}

TEST_F(LlmLimits, HuggingFaceConfigSizesMustBeIntegers) {
  // hidden_size 1e30 is a float: converting it to int64 would be undefined behaviour.
  const std::string config = R"({"hidden_size": 1e30, "intermediate_size": 64,
      "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 256})";
  testing::write_bytes(dir_.file("config.json"), config);
  const std::string error = error_of([&] { load_hf_dir(dir_.path()); });
  EXPECT_NE(error.find("hidden_size"), std::string::npos) << error;
  EXPECT_NE(error.find("integer"), std::string::npos) << error;
}

TEST_F(LlmLimits, SelfDoublingMergesAreBounded) {
  // Each merge joins the previous merge's piece with itself: 36 of them would ask for 2^36 bytes.
  nlohmann::json merges = nlohmann::json::array({{97, 97}});
  for (int k = 0; k < 35; ++k) merges.push_back({256 + k, 256 + k});
  const nlohmann::json tokenizer = {{"type", "tessera-bpe"}, {"merges", merges}, {"specials", {}}};
  const std::string error = error_of([&] { Tokenizer::from_json(tokenizer); });
  EXPECT_NE(error.find("makes a piece of 2048 bytes"), std::string::npos) << error;
  EXPECT_THROW(Tokenizer::from_json(nlohmann::json::parse(
                   R"({"type": "tessera-bpe", "merges": [[97.5, 97]], "specials": []})")),
               Error);
}

TEST_F(LlmLimits, NonFiniteWeightIsRefusedNamingFileAndTensor) {
  Llama model(small_config());
  const std::string path = dir_.file("nan.safetensors");
  {
    torch::NoGradGuard no_grad;
    model->named_weights().front().second.view(-1)[5] = std::nanf("");
  }
  const std::string name = model->named_weights().front().first;
  save_llm(path, model, Tokenizer::from_json(nlohmann::json::parse(kByteTokenizer)));
  const std::string error = error_of([&] { load_llm(path); });
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find(name), std::string::npos) << error;
  EXPECT_NE(error.find("NaN or Inf"), std::string::npos) << error;
}

TEST_F(LlmLimits, TokenIdOutsideTheVocabularyIsNamed) {
  Llama model(small_config());
  const std::string error = error_of([&] {
    model->forward(torch::tensor({{1, 2, 256}}, torch::kInt64));
  });
  EXPECT_NE(error.find("token id 256 is outside the vocabulary [0, 256)"), std::string::npos)
      << error;
  EXPECT_THROW(model->forward(torch::tensor({{-1}}, torch::kInt64)), Error);
}

}  // namespace
}  // namespace tessera::llm
