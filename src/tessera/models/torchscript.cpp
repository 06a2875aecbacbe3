// TorchScript import (see torchscript.h): the module tree mirrored into torch::nn modules that
// share its tensors, the input-shape probe, and the op-level trace that gives its workload.
#include "tessera/models/torchscript.h"

#include <ATen/record_function.h>
#include <fmt/format.h>
#include <torch/script.h>

#include <fstream>
#include <map>
#include <sstream>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/models/describe.h"
#include "tessera/models/tensor_checks.h"

namespace tessera::models {

namespace {

using workload::Layer;
using workload::OpKind;

std::string error_text(const c10::Error& e) { return e.what_without_backtrace(); }

// A node of the mirrored tree: it only holds the TorchScript module's tensors under their names.
struct ScriptNodeImpl : torch::nn::Module {};

void mirror(torch::nn::Module& node, const torch::jit::Module& module) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    node.register_parameter(p.name, p.value, p.value.requires_grad());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    node.register_buffer(b.name, b.value);
  }
  for (const auto& child : module.named_children()) {
    auto sub = std::make_shared<ScriptNodeImpl>();
    mirror(*sub, child.value);
    node.register_module(child.name, sub);
  }
}

std::vector<int64_t> ints(const c10::IValue& value) {
  if (value.isInt()) return {value.toInt()};
  return value.toIntVector();
}

int64_t first_or(const std::vector<int64_t>& v, int64_t fallback) {
  return v.empty() ? fallback : v[0];
}

// Records the aten ops of one forward pass as workload layers. Only top-level ops count (a
// conv2d's inner _convolution is not a second layer); weights are named by storage.
class OpRecorder {
 public:
  OpRecorder(std::string prefix, torch::nn::Module& module) : prefix_(std::move(prefix)) {
    for (const auto& item : module.named_parameters(/*recurse=*/true)) {
      std::string name = item.key();
      const std::string suffix = ".weight";
      if (name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix) {
        name.resize(name.size() - suffix.size());
      }
      owners_[item.value().storage().unsafeGetStorageImpl()] = join_name(prefix_, name);
    }
  }

  void start(const at::RecordFunction& fn) {
    if (depth_++ > 0) return;
    try {
      record(fn.name(), fn.inputs());
    } catch (const std::exception& e) {
      if (error_.empty()) error_ = fmt::format("op {}: {}", fn.name(), e.what());
    }
  }
  void end() { --depth_; }

  std::vector<Layer> take_layers() { return std::move(layers_); }
  const std::string& error() const { return error_; }

 private:
  std::string weight_name(const torch::Tensor& weight) {
    const auto found = owners_.find(weight.storage().unsafeGetStorageImpl());
    const std::string base = found != owners_.end() ? found->second : prefix_ + ".weight";
    const int uses = ++uses_[base];
    return uses == 1 ? base : fmt::format("{}#{}", base, uses);
  }
  std::string op_name(const std::string& op) {
    return fmt::format("{}.op{}.{}", prefix_, ++n_ops_, op);
  }

  void record(const std::string& name, c10::ArrayRef<const c10::IValue> in) {
    const std::string op = name.rfind("aten::", 0) == 0 ? name.substr(6) : name;
    if (in.empty() || !in[0].isTensor()) return;
    const torch::Tensor x = in[0].toTensor();
    if ((op == "conv2d" || op == "_convolution" || op == "convolution") && x.dim() == 4) {
      conv(x, in);
    } else if (op == "linear" && in.size() >= 2 && in[1].isTensor()) {
      const torch::Tensor w = in[1].toTensor();
      Layer l;
      l.name = weight_name(w);
      l.kind = OpKind::Linear;
      l.in_channels = w.size(1);
      l.out_channels = w.size(0);
      l.in_h = l.out_h = x.numel() / w.size(1) / x.size(0);
      layers_.push_back(l);
    } else if ((op == "matmul" || op == "bmm") && in.size() >= 2 && in[1].isTensor() &&
               x.dim() >= 3) {
      const torch::Tensor y = in[1].toTensor();
      Layer l;
      l.name = op_name(op);
      l.kind = OpKind::MatMul;
      l.in_channels = x.size(-1);
      l.out_channels = y.size(-1);
      l.in_h = l.out_h = x.size(-2);
      l.groups = x.numel() / (x.size(-1) * x.size(-2)) / x.size(0);
      layers_.push_back(l);
    } else if (op == "max_pool2d" || op == "avg_pool2d" || op == "adaptive_avg_pool2d") {
      pool(op, x, in);
    } else if (op == "batch_norm" || op == "layer_norm" || op == "group_norm") {
      layers_.push_back(elementwise_layer(op_name(op), OpKind::Norm, sample_shape(x)));
    } else if (op == "relu" || op == "relu_" || op == "hardtanh" || op == "hardtanh_" ||
               op == "gelu" || op == "silu" || op == "silu_" || op == "sigmoid") {
      layers_.push_back(elementwise_layer(op_name(op), OpKind::Activation, sample_shape(x)));
    } else if ((op == "add" || op == "add_") && in.size() >= 2 && in[1].isTensor() &&
               in[1].toTensor().sizes() == x.sizes() && x.dim() >= 2) {
      layers_.push_back(elementwise_layer(op_name(op), OpKind::Add, sample_shape(x)));
    }
  }

  static std::vector<int64_t> sample_shape(const torch::Tensor& x) {
    auto s = x.sizes().vec();
    s.erase(s.begin());
    return s;
  }

  void conv(const torch::Tensor& x, c10::ArrayRef<const c10::IValue> in) {
    TESSERA_CHECK(in.size() >= 7 && in[1].isTensor(), "unexpected convolution arguments");
    const torch::Tensor w = in[1].toTensor();
    TESSERA_CHECK(w.dim() == 4, "only 2-D convolutions are supported, got weight of {} dims",
                  w.dim());
    const auto stride = ints(in[3]);
    const auto dilation = ints(in[5]);
    const int64_t groups = in.size() > 8 && in[8].isInt() ? in[8].toInt() : in[6].toInt();
    TESSERA_CHECK(first_or(dilation, 1) == 1 && (dilation.size() < 2 || dilation[1] == 1),
                  "dilated convolutions have no workload representation");
    TESSERA_CHECK(!(in.size() > 6 && in[6].isBool() && in[6].toBool()),
                  "transposed convolutions have no workload representation");
    Layer l;
    l.name = weight_name(w);
    l.kind = OpKind::Conv2d;
    l.in_channels = x.size(1);
    l.out_channels = w.size(0);
    l.kernel_h = w.size(2);
    l.kernel_w = w.size(3);
    l.stride = first_or(stride, 1);
    l.groups = groups;
    l.in_h = x.size(2);
    l.in_w = x.size(3);
    if (in[4].isString()) {  // padding="same" or "valid"
      l.padding = in[4].toStringRef() == "same" ? (l.kernel_h - 1) / 2 : 0;
    } else {
      l.padding = first_or(ints(in[4]), 0);
    }
    l.out_h = window_output_size(l.in_h, l.kernel_h, l.stride, l.padding);
    l.out_w = window_output_size(l.in_w, l.kernel_w, l.stride, l.padding);
    layers_.push_back(l);
  }

  void pool(const std::string& op, const torch::Tensor& x, c10::ArrayRef<const c10::IValue> in) {
    TESSERA_CHECK(x.dim() == 4, "{} expects a 4-D input", op);
    Layer l;
    l.name = op_name(op);
    l.kind = OpKind::Pool;
    l.in_channels = l.out_channels = x.size(1);
    l.in_h = x.size(2);
    l.in_w = x.size(3);
    if (op == "adaptive_avg_pool2d") {
      const auto size = ints(in[1]);
      l.out_h = size.at(0);
      l.out_w = size.size() > 1 ? size[1] : size[0];
      l.kernel_h = l.in_h / l.out_h;
      l.kernel_w = l.in_w / l.out_w;
      l.stride = l.kernel_h;
    } else {
      const auto kernel = ints(in[1]);
      const auto stride = ints(in[2]);
      l.kernel_h = kernel.at(0);
      l.kernel_w = kernel.size() > 1 ? kernel[1] : kernel[0];
      l.stride = first_or(stride, l.kernel_h);
      l.padding = first_or(ints(in[3]), 0);
      const size_t ceil_at = op == "max_pool2d" ? 5 : 4;
      const bool ceil = in.size() > ceil_at && in[ceil_at].isBool() && in[ceil_at].toBool();
      l.out_h = window_output_size(l.in_h, l.kernel_h, l.stride, l.padding, ceil);
      l.out_w = window_output_size(l.in_w, l.kernel_w, l.stride, l.padding, ceil);
    }
    layers_.push_back(l);
  }

  std::string prefix_;
  std::map<const c10::StorageImpl*, std::string> owners_;
  std::map<std::string, int> uses_;
  std::vector<Layer> layers_;
  std::string error_;
  int depth_ = 0;
  int n_ops_ = 0;
};

thread_local OpRecorder* active_recorder = nullptr;

// While alive: `recorder` sees this thread's aten ops and the module runs in eval mode; both are
// undone on exit, also when the forward throws.
class TraceScope {
 public:
  TraceScope(torch::jit::Module& module, OpRecorder& recorder)
      : module_(module), was_training_(module.is_training()) {
    module_.eval();
    active_recorder = &recorder;
    handle_ = at::addThreadLocalCallback(
        at::RecordFunctionCallback(
            [](const at::RecordFunction& fn) -> std::unique_ptr<at::ObserverContext> {
              if (active_recorder != nullptr) active_recorder->start(fn);
              return nullptr;
            },
            [](const at::RecordFunction&, at::ObserverContext*) {
              if (active_recorder != nullptr) active_recorder->end();
            })
            .needsInputs(true)
            .scopes({at::RecordScope::FUNCTION}));
  }
  ~TraceScope() {
    at::removeCallback(handle_);
    active_recorder = nullptr;
    module_.train(was_training_);
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  torch::jit::Module& module_;
  bool was_training_;
  at::CallbackHandle handle_;
};

// The TorchScript module as a torch::nn module: forward runs the script; the parameters are the
// script's own tensors; describe() reports the traced workload.
class ScriptModuleImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  ScriptModuleImpl(torch::jit::Module module, std::string path)
      : module_(std::move(module)), path_(std::move(path)) {
    mirror(*this, module_);
  }

  torch::Tensor forward(torch::Tensor x) {
    c10::IValue out;
    try {
      out = module_.forward({x});
    } catch (const c10::Error& e) {
      throw Error(fmt::format("'{}': the TorchScript forward failed on input {}: {}", path_,
                              shape_string(x.sizes().vec()), error_text(e)));
    }
    TESSERA_CHECK(out.isTensor(), "'{}': forward returned a {}, expected one logits tensor", path_,
                  out.tagKind());
    return out.toTensor();
  }

  void train(bool on) override {
    torch::nn::Module::train(on);
    module_.train(on);
  }

  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<Layer>& layers) override {
    TESSERA_CHECK(input.size() == 3, "'{}': an imported model takes [C, H, W] inputs, got {}",
                  path_, shape_string(input));
    std::vector<int64_t> batch = {1};
    batch.insert(batch.end(), input.begin(), input.end());
    OpRecorder recorder(prefix, *this);
    torch::Tensor out;
    {
      torch::NoGradGuard no_grad;
      const TraceScope scope(module_, recorder);
      out = forward(torch::zeros(batch));
    }
    TESSERA_CHECK(recorder.error().empty(), "'{}': cannot describe the traced forward: {}", path_,
                  recorder.error());
    for (Layer& l : recorder.take_layers()) layers.push_back(std::move(l));
    auto shape = out.sizes().vec();
    shape.erase(shape.begin());
    return shape;
  }

  const torch::jit::Module& script() const { return module_; }
  const std::string& path() const { return path_; }

 private:
  torch::jit::Module module_;
  std::string path_;
};
TORCH_MODULE(ScriptModule);

class ImportedModelImpl : public ModelImpl {
 public:
  ImportedModelImpl(ModelConfig config, ScriptModule script, nlohmann::json metadata)
      : ModelImpl(std::move(config)), script_(script), metadata_(std::move(metadata)) {
    add_unit(kScriptUnit, "script", script);
  }
  ScriptModule script_;
  nlohmann::json metadata_;  ///< the archive's tessera.json
};

const ImportedModelImpl& imported(const Model& model) {
  const auto* impl = dynamic_cast<const ImportedModelImpl*>(model.get());
  TESSERA_CHECK(impl != nullptr, "model '{}' is not an imported TorchScript model",
                model->config().name);
  return *impl;
}

// [1, K] logits for a zero sample of [C, S, S], or an empty tensor if the forward refuses it.
torch::Tensor probe(ScriptModuleImpl& script, int64_t channels, int64_t side) {
  try {
    torch::Tensor out = script.forward(torch::zeros({1, channels, side, side}));
    if (out.dim() == 2 && out.size(0) == 1) return out;
  } catch (const std::exception&) {
  }
  return {};
}

int64_t json_size(const nlohmann::json& json, const char* key, const std::string& path) {
  if (!json.contains(key)) return 0;
  const auto& v = json.at(key);
  TESSERA_CHECK(v.is_number_integer() && v.get<int64_t>() > 0,
                "'{}': {} '{}' must be a positive integer", path, kScriptExtraFile, key);
  return v.get<int64_t>();
}

Model wrap(torch::jit::Module module, const std::string& path, const nlohmann::json& metadata) {
  int64_t in_channels = json_size(metadata, "in_channels", path);
  int64_t image_size = json_size(metadata, "image_size", path);
  auto script = ScriptModule(std::move(module), path);
  TESSERA_CHECK(!script->parameters().empty(), "'{}': the TorchScript module has no parameters",
                path);
  for (const auto& item : script->named_parameters())
    check_tensor_values(path, item.key(), item.value());
  for (const auto& item : script->named_buffers())
    check_tensor_values(path, item.key(), item.value());
  if (in_channels == 0) {
    for (const auto& p : script->parameters()) {
      if (p.dim() == 4) {
        in_channels = p.size(1);
        break;
      }
    }
    TESSERA_CHECK(in_channels > 0,
                  "'{}': no convolution to read the input channels from; save the module with "
                  "_extra_files={{'{}': '{{\"in_channels\": C, \"image_size\": S}}'}}",
                  path, kScriptExtraFile);
  }
  script->eval();
  torch::NoGradGuard no_grad;
  torch::Tensor logits;
  if (image_size > 0) {
    logits = script->forward(torch::zeros({1, in_channels, image_size, image_size}));
    TESSERA_CHECK(logits.dim() == 2 && logits.size(0) == 1,
                  "'{}': forward of one [{}, {}, {}] sample gave shape {}, expected [1, K]", path,
                  in_channels, image_size, image_size, shape_string(logits.sizes().vec()));
  } else {
    for (const int64_t side : {32, 28, 64, 96, 128, 224, 256}) {
      logits = probe(*script, in_channels, side);
      if (logits.defined()) {
        image_size = side;
        break;
      }
    }
    TESSERA_CHECK(logits.defined(),
                  "'{}': no input side in {{32, 28, 64, 96, 128, 224, 256}} gives [1, K] logits "
                  "with {} channels; give the shape in the archive's {}",
                  path, in_channels, kScriptExtraFile);
  }
  ModelConfig config;
  config.name = kTorchScriptArch;
  config.in_channels = in_channels;
  config.image_size = image_size;
  config.num_classes = logits.size(1);
  Model model(
      std::shared_ptr<ModelImpl>(std::make_shared<ImportedModelImpl>(config, script, metadata)));
  model->train();
  return model;
}

}  // namespace

bool is_torchscript_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in.good(), "cannot open model file '{}'", path);
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  return in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4;
}

namespace {

torch::jit::Module read_archive(const std::string& path, nlohmann::json& metadata) {
  torch::jit::ExtraFilesMap extra{{kScriptExtraFile, ""}};
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU, extra);
  } catch (const c10::Error& e) {
    throw Error(fmt::format("'{}' is not a readable TorchScript file: {}", path, error_text(e)));
  }
  metadata = nlohmann::json::object();
  const std::string& text = extra[kScriptExtraFile];
  if (!text.empty()) {
    metadata = parse_json(text, fmt::format("'{}': {}", path, kScriptExtraFile));
    TESSERA_CHECK(metadata.is_object(), "'{}': {} must be a JSON object", path, kScriptExtraFile);
  }
  return module;
}

}  // namespace

Model load_torchscript(const std::string& path) {
  nlohmann::json metadata;
  torch::jit::Module module = read_archive(path, metadata);
  return wrap(std::move(module), path, metadata);
}

const nlohmann::json& torchscript_metadata(const Model& model) { return imported(model).metadata_; }

bool is_imported(const Model& model) {
  return dynamic_cast<const ImportedModelImpl*>(model.get()) != nullptr;
}

void save_torchscript(const std::string& path, const Model& model, const nlohmann::json& extra) {
  const ImportedModelImpl& impl = imported(model);
  const ModelConfig& config = model->config();
  TESSERA_CHECK(extra.is_object(), "save_torchscript: extra metadata must be a JSON object");
  nlohmann::json metadata = extra;
  metadata["in_channels"] = config.in_channels;
  metadata["image_size"] = config.image_size;
  std::ostringstream out;
  impl.script_->script().save(out, {{kScriptExtraFile, metadata.dump()}});
  write_file_atomic(path, out.str());
}

Model clone_torchscript(const Model& model) {
  const ImportedModelImpl& impl = imported(model);
  const ModelConfig& config = model->config();
  nlohmann::json metadata = impl.metadata_;
  metadata["in_channels"] = config.in_channels;
  metadata["image_size"] = config.image_size;
  Model copy = wrap(impl.script_->script().deepcopy(), impl.script_->path(), metadata);
  copy->train(model->is_training());
  return copy;
}

void require_units(const Model& model, const std::string& what) {
  TESSERA_CHECK(!is_imported(model),
                "{} needs Tessera's model units, and '{}' is an imported TorchScript model with "
                "none; use a Tessera model file (tessera models import) for it",
                what, imported(model).script_->path());
}

}  // namespace tessera::models
