// Tessera LLM file format (safetensors + metadata) on top of core/safetensors.
#include "tessera/llm/io.h"

#include <set>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"

namespace tessera::llm {

void assign_weight(torch::Tensor& target, const torch::Tensor& value, const std::string& name) {
  TESSERA_CHECK(value.sizes() == target.sizes(),
                "weight {}: shape {} does not match the config's {}", name,
                fmt::format("{}", fmt::join(value.sizes(), "x")),
                fmt::format("{}", fmt::join(target.sizes(), "x")));
  TESSERA_CHECK(value.is_floating_point(), "weight {}: dtype {} is not floating point", name,
                std::string(c10::toString(value.scalar_type())));
  torch::NoGradGuard no_grad;
  target.copy_(value.to(torch::kFloat32));
}

void save_llm(const std::string& path, const Llama& model, const Tokenizer& tokenizer) {
  safetensors::File file;
  for (const auto& [name, tensor] : model->named_weights()) {
    file.tensors.emplace_back(name, tensor.detach().contiguous());
  }
  auto arch = model->config().to_json();
  arch["name"] = "llama";
  file.metadata["tessera.arch"] = arch.dump();
  file.metadata["tessera.tokenizer"] = tokenizer.to_json().dump();
  safetensors::save(path, file);
}

LlmBundle load_llm(const std::string& path) {
  const auto file = safetensors::load(path);
  auto it = file.metadata.find("tessera.arch");
  TESSERA_CHECK(it != file.metadata.end(), "{}: no tessera.arch metadata (not a Tessera LLM file)",
                path);
  nlohmann::json arch;
  try {
    arch = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "{}: tessera.arch is not valid JSON", path);
  }
  TESSERA_CHECK(arch.is_object() && arch.value("name", "") == "llama",
                "{}: architecture '{}' is not an LLM (expected name llama)", path, arch.dump());
  arch.erase("name");
  LlmBundle bundle;
  bundle.model = Llama(LlamaConfig::from_json(arch));
  auto tok = file.metadata.find("tessera.tokenizer");
  TESSERA_CHECK(tok != file.metadata.end(), "{}: no tessera.tokenizer metadata", path);
  try {
    bundle.tokenizer = Tokenizer::from_json(nlohmann::json::parse(tok->second));
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "{}: tessera.tokenizer is not valid JSON", path);
  }
  TESSERA_CHECK(bundle.tokenizer.vocab_size() <= bundle.model->config().vocab_size,
                "{}: tokenizer has {} tokens but the model only {}", path,
                bundle.tokenizer.vocab_size(), bundle.model->config().vocab_size);
  std::set<std::string> expected;
  for (auto& [name, tensor] : bundle.model->named_weights()) {
    expected.insert(name);
    TESSERA_CHECK(file.contains(name), "{}: missing tensor {}", path, name);
    assign_weight(tensor, file.at(name), name);
  }
  for (const auto& [name, tensor] : file.tensors) {
    TESSERA_CHECK(expected.count(name) == 1, "{}: unexpected tensor {}", path, name);
  }
  return bundle;
}

}  // namespace tessera::llm
