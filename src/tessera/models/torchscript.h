// Imported models: a TorchScript file saved from PyTorch (torch.jit.save of a scripted or traced
// module) wrapped behind Tessera's Model interface, so every command that reads a model file
// (eval, bitflip, reram, fpga, ...) runs it. See docs/import.md.
#pragma once

#include <string>

#include "tessera/models/model.h"

namespace tessera::models {

/// ModelConfig::name of an imported TorchScript model. It is not in the registry: such a model
/// is rebuilt from its file, never by name.
constexpr const char* kTorchScriptArch = "torchscript";
/// Name of the one unit of an imported model: its parameters are "script." + the PyTorch name.
constexpr const char* kScriptUnit = "script";
/// Optional JSON file inside the TorchScript archive (torch.jit.save(..., _extra_files=...)):
/// {"in_channels": C, "image_size": S}. Tessera writes it when it saves an imported model.
constexpr const char* kScriptExtraFile = "tessera.json";

/// True if the file starts like a TorchScript archive (a zip file). Reads 4 bytes; a missing or
/// unreadable file is a tessera::Error naming it.
bool is_torchscript_file(const std::string& path);

/// Loads a TorchScript file as a Model with one unit (kind "script"). The module's parameters and
/// buffers are shared, not copied, with the Model's named_parameters()/named_buffers() (names
/// "script." + the module path), so quantization, bit flips and gradients act on what the
/// TorchScript forward reads. The input shape comes from the archive's tessera.json, or else
/// in_channels from the first 4-D weight and image_size from the first of 32, 28, 64, 96, 128,
/// 224, 256 for which a forward of one sample gives [1, K] logits; num_classes is that K. The
/// workload (for the simulators) is recorded from the aten ops of one traced forward, matching
/// each convolution and linear op to its parameter by storage. Throws tessera::Error naming the
/// file for a corrupt archive, a module without parameters, a forward that does not return one
/// [B, K] tensor, or a non-finite parameter. Returned in training mode, like models::load.
Model load_torchscript(const std::string& path);

/// True for a Model built by load_torchscript.
bool is_imported(const Model& model);

/// Saves an imported model as TorchScript (its current weights, loadable by torch.jit.load and
/// by load_torchscript), atomically, with tessera.json holding the input shape plus the keys of
/// `extra` (e.g. the quantization steps of bitflip). Throws unless is_imported(model).
void save_torchscript(const std::string& path, const Model& model,
                      const nlohmann::json& extra = nlohmann::json::object());

/// The tessera.json object of the archive an imported model was loaded from ({} when it had
/// none). Throws unless is_imported(model).
const nlohmann::json& torchscript_metadata(const Model& model);

/// A deep copy of an imported model (its own TorchScript module and tensors).
Model clone_torchscript(const Model& model);

/// Throws a tessera::Error saying that `what` (e.g. "split learning") needs Tessera's units and
/// that an imported TorchScript model has none, if `model` is imported.
void require_units(const Model& model, const std::string& what);

}  // namespace tessera::models
