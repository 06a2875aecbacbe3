// The torchvision name map (see torchvision.h): one translation rule per architecture, applied
// to every tensor name, and the checked import and export of safetensors state dicts.
#include "tessera/models/torchvision.h"

#include <fmt/format.h>

#include <set>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/limits.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/registry.h"
#include "tessera/models/resnet.h"
#include "tessera/models/tensor_checks.h"

namespace tessera::models {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

// Splits "head.rest" at the first dot.
std::pair<std::string, std::string> split_first(const std::string& name) {
  const size_t dot = name.find('.');
  TESSERA_CHECK(dot != std::string::npos, "tensor name '{}' has no module path", name);
  return {name.substr(0, dot), name.substr(dot + 1)};
}

// The tensors of a ConvBnAct ("conv.weight", "bn.running_mean", ...) under torchvision's names.
std::string conv_bn(const std::string& rest, const std::string& conv, const std::string& bn) {
  if (starts_with(rest, "conv.")) return conv + rest.substr(4);
  if (starts_with(rest, "bn.")) return bn + rest.substr(2);
  throw Error(fmt::format("unexpected conv tensor '{}'", rest));
}

// "block7" -> 7.
int block_number(const std::string& head, const std::string& kind) {
  TESSERA_CHECK(starts_with(head, kind), "unexpected module '{}'", head);
  return std::stoi(head.substr(kind.size()));
}

struct Rule {
  virtual ~Rule() = default;
  virtual std::string operator()(const std::string& name) const = 0;
};

// torchvision ResNet: conv1/bn1, layer{s}.{i}.{conv,bn}{1,2,3} and downsample.{0,1}, fc.
struct ResNetRule : Rule {
  std::vector<std::pair<int, int>> stage_of_block;  // block number - 1 -> (stage, index)
  explicit ResNetRule(const std::vector<int64_t>& blocks) {
    for (size_t s = 0; s < blocks.size(); ++s) {
      for (int64_t i = 0; i < blocks[s]; ++i) stage_of_block.emplace_back(s + 1, i);
    }
  }
  std::string operator()(const std::string& name) const override {
    const auto [head, rest] = split_first(name);
    if (head == "stem") return conv_bn(rest, "conv1", "bn1");
    if (head == "fc") return "fc" + rest.substr(rest.find('.'));  // fc.linear.weight
    const int n = block_number(head, "block");
    TESSERA_CHECK(n >= 1 && n <= static_cast<int>(stage_of_block.size()), "no block {}", n);
    const auto [stage, index] = stage_of_block[n - 1];
    const std::string p = fmt::format("layer{}.{}.", stage, index);
    const auto [sub, tensor] = split_first(rest);
    if (sub == "shortcut" || sub == "downsample") {
      return conv_bn(tensor, p + "downsample.0", p + "downsample.1");
    }
    TESSERA_CHECK(sub.size() == 5 && starts_with(sub, "conv"), "unexpected module '{}'", name);
    const std::string k = sub.substr(4);
    return conv_bn(tensor, p + "conv" + k, p + "bn" + k);
  }
};

// torchvision VGG-11-BN: features.{i} (conv, bn, relu, ..., pool), classifier.{0,3,6}.
struct VggRule : Rule {
  std::vector<int> conv_index;  // conv number - 1 -> index in features
  VggRule() {
    int i = 0;
    for (const int64_t entry : {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0}) {
      if (entry == 0) {
        i += 1;
      } else {
        conv_index.push_back(i);
        i += 3;
      }
    }
  }
  std::string operator()(const std::string& name) const override {
    const auto [head, rest] = split_first(name);
    const std::string tensor = rest.substr(rest.find('.'));  // ".weight" after linear./conv./bn.
    if (head == "fc") return "classifier" + tensor;
    if (starts_with(head, "fc")) {
      const int k = block_number(head, "fc");
      return fmt::format("classifier.{}{}", 3 * (k - 1), tensor);
    }
    const int k = block_number(head, "conv");
    TESSERA_CHECK(k >= 1 && k <= static_cast<int>(conv_index.size()), "no conv {}", k);
    const int i = conv_index[k - 1];
    return conv_bn(rest, fmt::format("features.{}", i), fmt::format("features.{}", i + 1));
  }
};

// torchvision MobileNetV2: features.0 (stem), features.{n}.conv.{...} (blocks), features.18
// (last conv), classifier.1.
struct MobileNetRule : Rule {
  std::set<int> expanded;  // blocks with an expansion conv
  int n_blocks = 0;
  explicit MobileNetRule(Model& model) {
    for (const auto& unit : model->units()) {
      if (unit.kind != "block") continue;
      ++n_blocks;
      for (const auto& child : unit.module.ptr()->named_children()) {
        if (child.key() == "expand") expanded.insert(n_blocks);
      }
    }
  }
  std::string operator()(const std::string& name) const override {
    const auto [head, rest] = split_first(name);
    if (head == "stem") return conv_bn(rest, "features.0.0", "features.0.1");
    if (head == "last_conv") {
      const std::string p = fmt::format("features.{}.", n_blocks + 1);
      return conv_bn(rest, p + "0", p + "1");
    }
    if (head == "fc") return "classifier.1" + rest.substr(rest.find('.'));
    const int n = block_number(head, "block");
    const std::string p = fmt::format("features.{}.conv.", n);
    const auto [sub, tensor] = split_first(rest);
    const int dw = expanded.count(n) ? 1 : 0;
    if (sub == "expand") return conv_bn(tensor, p + "0.0", p + "0.1");
    if (sub == "depthwise") {
      return conv_bn(tensor, fmt::format("{}{}.0", p, dw), fmt::format("{}{}.1", p, dw));
    }
    TESSERA_CHECK(sub == "project", "unexpected module '{}'", name);
    return conv_bn(tensor, fmt::format("{}{}", p, dw + 1), fmt::format("{}{}", p, dw + 2));
  }
};

// torchvision VisionTransformer: conv_proj, class_token, encoder.pos_embedding,
// encoder.layers.encoder_layer_{i}.{ln_1, self_attention, ln_2, mlp.0, mlp.3}, encoder.ln,
// heads.head.
struct VitRule : Rule {
  std::string operator()(const std::string& name) const override {
    const auto [head, rest] = split_first(name);
    if (head == "patch_embed") {
      if (rest == "cls_token") return "class_token";
      if (rest == "pos_embed") return "encoder.pos_embedding";
      if (starts_with(rest, "proj.")) return "conv_proj" + rest.substr(4);
    } else if (head == "head") {
      if (starts_with(rest, "norm.")) return "encoder.ln" + rest.substr(4);
      if (starts_with(rest, "fc.")) return "heads.head" + rest.substr(2);
    } else {
      const int n = block_number(head, "encoder");
      const std::string p = fmt::format("encoder.layers.encoder_layer_{}.", n - 1);
      if (rest == "attn.qkv.weight") return p + "self_attention.in_proj_weight";
      if (rest == "attn.qkv.bias") return p + "self_attention.in_proj_bias";
      if (starts_with(rest, "attn.proj.")) return p + "self_attention.out_proj" + rest.substr(9);
      if (starts_with(rest, "norm1.")) return p + "ln_1" + rest.substr(5);
      if (starts_with(rest, "norm2.")) return p + "ln_2" + rest.substr(5);
      if (starts_with(rest, "fc1.")) return p + "mlp.0" + rest.substr(3);
      if (starts_with(rest, "fc2.")) return p + "mlp.3" + rest.substr(3);
    }
    throw Error(fmt::format("unexpected ViT tensor '{}'", name));
  }
};

std::unique_ptr<Rule> rule_for(Model& model) {
  const std::string& arch = model->config().name;
  if (arch == "resnet20") return std::make_unique<ResNetRule>(resnet20_layout().blocks);
  if (arch == "resnet18") return std::make_unique<ResNetRule>(resnet18_layout().blocks);
  if (arch == "resnet50") return std::make_unique<ResNetRule>(std::vector<int64_t>{3, 4, 6, 3});
  if (arch == "vgg11_bn") return std::make_unique<VggRule>();
  if (arch == "mobilenetv2") return std::make_unique<MobileNetRule>(model);
  if (arch == "vit") return std::make_unique<VitRule>();
  throw Error(fmt::format(
      "no torchvision names for '{}' (known: resnet18, resnet50, vgg11_bn, mobilenetv2, vit, "
      "resnet20)",
      arch));
}

std::string shape_text(const torch::Tensor& t) {
  return fmt::format("[{}]", fmt::join(t.sizes().vec(), ", "));
}

}  // namespace

std::map<std::string, std::string> torchvision_names(Model& model) {
  const auto rule = rule_for(model);
  std::map<std::string, std::string> names;
  std::set<std::string> used;
  auto add = [&](const std::string& name) {
    const std::string tv = (*rule)(name);
    TESSERA_CHECK(used.insert(tv).second, "two tensors map to torchvision name '{}'", tv);
    names[name] = tv;
  };
  for (const auto& item : model->named_parameters()) add(item.key());
  for (const auto& item : model->named_buffers()) add(item.key());
  return names;
}

Model import_torchvision(const std::string& path, const ModelConfig& config) {
  const safetensors::File file = safetensors::load(path);
  uint64_t file_bytes = 0;
  for (const auto& [name, tensor] : file.tensors) file_bytes += tensor.nbytes();
  Model model{nullptr};
  {
    // The file's tensors bound what a matching architecture needs (see models::load).
    AllocationBudget budget(4 * file_bytes + kBuildSlackBytes,
                            fmt::format("'{}': architecture {}", path, config.name));
    model = create(config);
  }
  const auto names = torchvision_names(model);
  std::map<std::string, const torch::Tensor*> stored;
  for (const auto& [name, tensor] : file.tensors) stored[name] = &tensor;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  auto load_all = [&](torch::OrderedDict<std::string, torch::Tensor> targets) {
    for (auto& item : targets) {
      const std::string& tv = names.at(item.key());
      const auto found = stored.find(tv);
      TESSERA_CHECK(found != stored.end(), "'{}': tensor '{}' (Tessera '{}') of {} is missing",
                    path, tv, item.key(), config.name);
      torch::Tensor source = *found->second;
      TESSERA_CHECK(source.sizes() == item.value().sizes(),
                    "'{}': tensor '{}' has shape {}, {} expects {}", path, tv, shape_text(source),
                    config.name, shape_text(item.value()));
      if (source.is_floating_point()) {
        TESSERA_CHECK(item.value().is_floating_point(), "'{}': tensor '{}' must be an integer",
                      path, tv);
        source = source.to(torch::kFloat32);
        check_tensor_values(path, tv, source);
      }
      TESSERA_CHECK(source.is_floating_point() == item.value().is_floating_point(),
                    "'{}': tensor '{}' has dtype {}, expected {}", path, tv,
                    c10::toString(source.scalar_type()), c10::toString(item.value().scalar_type()));
      item.value().copy_(source);
      used.insert(tv);
    }
  };
  load_all(model->named_parameters());
  load_all(model->named_buffers());
  for (const auto& [name, tensor] : file.tensors) {
    TESSERA_CHECK(used.count(name) == 1, "'{}': unknown tensor '{}' (not a torchvision name of {})",
                  path, name, config.name);
  }
  return model;
}

void export_torchvision(const std::string& path, Model& model) {
  const auto names = torchvision_names(model);
  safetensors::File file;
  for (const auto& item : model->named_parameters()) {
    file.tensors.emplace_back(names.at(item.key()), item.value().detach().contiguous());
  }
  for (const auto& item : model->named_buffers()) {
    file.tensors.emplace_back(names.at(item.key()), item.value().detach().contiguous());
  }
  file.metadata["format"] = "pt";
  safetensors::save(path, file);
}

}  // namespace tessera::models
