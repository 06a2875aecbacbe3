// The Tessera model file: a .safetensors file holding every parameter and buffer of a model
// under its named_parameters()/named_buffers() name, with the architecture in the metadata, so
// `--model m.safetensors` rebuilds the module without extra flags.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "tessera/models/model.h"

namespace tessera::models {

/// Metadata keys of a Tessera model file.
constexpr const char* kArchKey = "tessera.arch";      ///< ModelConfig::to_json() as a string
constexpr const char* kFormatKey = "tessera.format";  ///< kFormatVersion
constexpr const char* kFormatVersion = "1";

/// Writes `model` atomically (the file is replaced only once the new one is complete). Tensors
/// are stored as they are (float32 parameters, BN running stats, int64 num_batches_tracked).
void save(const std::string& path, Model& model);

/// Rebuilds the model from the file's metadata and loads every tensor. Throws tessera::Error,
/// naming the file, for: a file without Tessera metadata ("not a Tessera model"), an unknown
/// format version, an invalid architecture, and any tensor that is missing, unexpected, or of the
/// wrong shape or dtype (naming the tensor). The model is returned in training mode, like a
/// freshly created one: call ->eval() for inference.
Model load(const std::string& path);

/// The architecture stored in a model file (same checks on the metadata as load()).
ModelConfig read_config(const std::string& path);

/// Number of parameter elements (all parameters, trainable or not; buffers excluded).
int64_t count_parameters(torch::nn::Module& module);

}  // namespace tessera::models
