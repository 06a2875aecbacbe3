// Tessera LLM file format (safetensors + metadata) on top of core/safetensors.
#include "tessera/llm/io.h"

#include <set>

#include "tessera/core/error.h"
#include "tessera/core/json.h"
#include "tessera/core/limits.h"
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
  // Checked after the conversion: a finite F64 value can overflow float32.
  TESSERA_CHECK(torch::isfinite(target).all().item<bool>(), "weight {}: holds NaN or Inf", name);
}

Llama build_llama(const LlamaConfig& config, uint64_t source_bytes, const std::string& what) {
  // Counted in double: the int64 arithmetic of n_params() can overflow on a hostile config.
  const auto& c = config;
  const double head_dim = static_cast<double>(c.resolved_head_dim());
  const double q = static_cast<double>(c.n_heads) * head_dim;
  const double kv = static_cast<double>(c.n_kv_heads) * head_dim;
  const double dim = static_cast<double>(c.dim);
  const double per_layer = dim * (2 + 2 * q + 2 * kv + 3 * static_cast<double>(c.hidden_dim));
  const double n_params = static_cast<double>(c.vocab_size) * dim * (c.tie_embeddings ? 1 : 2) +
                          static_cast<double>(c.n_layers) * per_layer;
  TESSERA_CHECK(
      n_params <= static_cast<double>(max_parameters()),
      "{}: the architecture (n_layers {}, dim {}, hidden_dim {}, vocab_size {}) has {:.3g} "
      "parameters, over the budget of {} (set TESSERA_MAX_PARAMS to raise it)",
      what, c.n_layers, c.dim, c.hidden_dim, c.vocab_size, n_params, max_parameters());
  // Initialisation requests about twice the float32 weights, and the densest source format
  // (Q8_0) expands 3.8x into float32; anything beyond that is not backed by the file.
  AllocationBudget budget(10 * source_bytes + kBuildSlackBytes, what);
  return Llama(config);
}

void save_llm(const std::string& path, const Llama& model, const ModelTokenizer& tokenizer) {
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
  nlohmann::json arch = parse_json(it->second, path + ": metadata tessera.arch");
  TESSERA_CHECK(arch.is_object() && arch.contains("name") && arch["name"] == "llama",
                "{}: architecture {} is not an LLM (expected name llama)", path,
                json_excerpt(arch));
  arch.erase("name");
  uint64_t source_bytes = 0;
  for (const auto& [name, tensor] : file.tensors) source_bytes += tensor.nbytes();
  LlmBundle bundle;
  try {
    bundle.model = build_llama(LlamaConfig::from_json(arch), source_bytes, path);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "{}: tessera.arch: {}", path, e.what());
  }
  auto tok = file.metadata.find("tessera.tokenizer");
  TESSERA_CHECK(tok != file.metadata.end(), "{}: no tessera.tokenizer metadata", path);
  try {
    bundle.tokenizer =
        ModelTokenizer::from_json(parse_json(tok->second, path + ": metadata tessera.tokenizer"));
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "{}: tessera.tokenizer: {}", path, e.what());
  }
  TESSERA_CHECK(bundle.tokenizer.vocab_size() <= bundle.model->config().vocab_size,
                "{}: tokenizer has {} tokens but the model only {}", path,
                bundle.tokenizer.vocab_size(), bundle.model->config().vocab_size);
  std::set<std::string> expected;
  for (auto& [name, tensor] : bundle.model->named_weights()) {
    expected.insert(name);
    TESSERA_CHECK(file.contains(name), "{}: missing tensor {}", path, name);
    assign_weight(tensor, file.at(name), path + ": " + name);
  }
  for (const auto& [name, tensor] : file.tensors) {
    TESSERA_CHECK(expected.count(name) == 1, "{}: unexpected tensor {}", path, name);
  }
  return bundle;
}

}  // namespace tessera::llm
