// Tessera model files (see model_io.h): saving, and loading with every tensor checked.
#include "tessera/models/model_io.h"

#include <fmt/format.h>

#include <map>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/json.h"
#include "tessera/core/limits.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/registry.h"
#include "tessera/models/tensor_checks.h"
#include "tessera/models/torchscript.h"

namespace tessera::models {

namespace {

std::string shape_text(const torch::Tensor& tensor) {
  return fmt::format("[{}]", fmt::join(tensor.sizes().vec(), ", "));
}

ModelConfig config_from_metadata(const std::string& path,
                                 const std::map<std::string, std::string>& metadata) {
  const auto arch = metadata.find(kArchKey);
  TESSERA_CHECK(arch != metadata.end(), "'{}' is not a Tessera model file: it has no '{}' metadata",
                path, kArchKey);
  const auto format = metadata.find(kFormatKey);
  TESSERA_CHECK(format != metadata.end(),
                "'{}' is not a Tessera model file: it has no '{}' metadata", path, kFormatKey);
  TESSERA_CHECK(format->second == kFormatVersion,
                "'{}' has Tessera model format '{}', this build reads format '{}'", path,
                format->second, kFormatVersion);
  const nlohmann::json json =
      parse_json(arch->second, fmt::format("'{}': metadata '{}'", path, kArchKey));
  try {
    return ModelConfig::from_json(json);
  } catch (const Error& e) {
    throw Error(fmt::format("'{}': invalid architecture: {}", path, e.what()));
  }
}

// Copies one file tensor into a model tensor after checking dtype and shape.
void load_tensor(const std::string& path, const std::string& name, const torch::Tensor& source,
                 torch::Tensor& target) {
  TESSERA_CHECK(source.scalar_type() == target.scalar_type(),
                "'{}': tensor '{}' has dtype {}, the model expects {}", path, name,
                c10::toString(source.scalar_type()), c10::toString(target.scalar_type()));
  TESSERA_CHECK(source.sizes() == target.sizes(),
                "'{}': tensor '{}' has shape {}, the model expects {}", path, name,
                shape_text(source), shape_text(target));
  target.copy_(source);
}

}  // namespace

void save(const std::string& path, Model& model) {
  if (is_imported(model)) return save_torchscript(path, model);
  safetensors::File file;
  for (const auto& item : model->named_parameters()) {
    file.tensors.emplace_back(item.key(), item.value().detach().contiguous());
  }
  for (const auto& item : model->named_buffers()) {
    file.tensors.emplace_back(item.key(), item.value().detach().contiguous());
  }
  file.metadata[kArchKey] = model->config().to_json().dump();
  file.metadata[kFormatKey] = kFormatVersion;
  safetensors::save(path, file);
}

ModelConfig read_config(const std::string& path) {
  if (is_torchscript_file(path)) return load_torchscript(path)->config();
  return config_from_metadata(path, safetensors::load(path).metadata);
}

Model load(const std::string& path) {
  if (is_torchscript_file(path)) return load_torchscript(path);
  const safetensors::File file = safetensors::load(path);
  ModelConfig config = config_from_metadata(path, file.metadata);
  uint64_t file_bytes = 0;
  for (const auto& [name, tensor] : file.tensors) {
    check_tensor_values(path, name, tensor);
    file_bytes += tensor.nbytes();
  }
  Model model{nullptr};
  try {
    // A legitimate build requests about the bytes of its tensors, which the file holds (plus
    // initialisation temporaries): a 250-byte file that declares a ViT of depth 256 is refused
    // here, before gigabytes are allocated.
    AllocationBudget budget(4 * file_bytes + kBuildSlackBytes,
                            fmt::format("architecture {}", json_excerpt(config.to_json())));
    model = create(config);
  } catch (const Error& e) {
    throw Error(fmt::format("'{}': invalid architecture: {}", path, e.what()));
  } catch (const std::bad_alloc&) {
    throw Error(fmt::format("'{}': out of memory building architecture {}", path,
                            json_excerpt(config.to_json())));
  }

  std::map<std::string, const torch::Tensor*> stored;
  for (const auto& [name, tensor] : file.tensors) stored[name] = &tensor;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  auto load_all = [&](torch::OrderedDict<std::string, torch::Tensor> targets) {
    for (auto& item : targets) {
      const auto found = stored.find(item.key());
      TESSERA_CHECK(found != stored.end(), "'{}': tensor '{}' of model '{}' is missing", path,
                    item.key(), config.name);
      load_tensor(path, item.key(), *found->second, item.value());
      used.insert(item.key());
    }
  };
  load_all(model->named_parameters());
  load_all(model->named_buffers());
  for (const auto& [name, tensor] : file.tensors) {
    TESSERA_CHECK(used.count(name) == 1, "'{}': unexpected tensor '{}' (not part of model '{}')",
                  path, name, config.name);
  }
  return model;
}

int64_t count_parameters(torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& parameter : module.parameters()) total += parameter.numel();
  return total;
}

}  // namespace tessera::models
