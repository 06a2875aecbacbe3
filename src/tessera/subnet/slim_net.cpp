// The width-sliceable ResNet (see slim_net.h): slicing, switchable BN, noise, permutation, file.
#include "tessera/subnet/slim_net.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/json.h"
#include "tessera/core/safetensors.h"

namespace tessera::subnet {
namespace {

constexpr const char* kMetaKey = "tessera.subnet";
constexpr const char* kFormatKey = "tessera.format";
constexpr const char* kFormat = "subnet-1";
constexpr double kBnEps = 1e-5;

std::string param_name(const std::string& conv, const std::string& what) {
  std::string name = conv;
  std::replace(name.begin(), name.end(), '.', '_');
  return name + "_" + what;
}

int64_t out_size(int64_t size, int64_t stride) { return stride == 1 ? size : (size - 1) / 2 + 1; }

}  // namespace

void SlimNetOptions::validate() const {
  TESSERA_CHECK(in_channels >= 1 && in_channels <= 64, "subnet: in_channels {} not in [1, 64]",
                in_channels);
  TESSERA_CHECK(image_size >= 4 && image_size <= 512, "subnet: image_size {} not in [4, 512]",
                image_size);
  TESSERA_CHECK(num_classes >= 2 && num_classes <= 10000,
                "subnet: num_classes {} not in [2, 10000]", num_classes);
  TESSERA_CHECK(!stage_channels.empty() && stage_channels.size() <= 6,
                "subnet: stage_channels needs 1 to 6 stages, got {}", stage_channels.size());
  for (const int64_t c : stage_channels)
    TESSERA_CHECK(c >= 1 && c <= 1024, "subnet: stage width {} not in [1, 1024]", c);
  TESSERA_CHECK(blocks_per_stage >= 1 && blocks_per_stage <= 16,
                "subnet: blocks_per_stage {} not in [1, 16]", blocks_per_stage);
}

nlohmann::json SlimNetOptions::to_json() const {
  return {{"in_channels", in_channels},
          {"image_size", image_size},
          {"num_classes", num_classes},
          {"stage_channels", stage_channels},
          {"blocks_per_stage", blocks_per_stage}};
}

SlimNetOptions SlimNetOptions::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object(), "subnet options must be a JSON object");
  // Integers only (get<int64_t>() would truncate 1.9 to 1); validate() checks the real ranges.
  constexpr int64_t kMaxSize = int64_t{1} << 30;
  SlimNetOptions o;
  for (const auto& [key, value] : json.items()) {
    try {
      if (key == "in_channels") {
        o.in_channels = json_integer(value, "subnet options: 'in_channels'", 0, kMaxSize);
      } else if (key == "image_size") {
        o.image_size = json_integer(value, "subnet options: 'image_size'", 0, kMaxSize);
      } else if (key == "num_classes") {
        o.num_classes = json_integer(value, "subnet options: 'num_classes'", 0, kMaxSize);
      } else if (key == "stage_channels") {
        TESSERA_CHECK(value.is_array(), "subnet options: 'stage_channels' must be an array");
        o.stage_channels.clear();
        for (const auto& channels : value) {
          o.stage_channels.push_back(
              json_integer(channels, "subnet options: 'stage_channels'", 0, kMaxSize));
        }
      } else if (key == "blocks_per_stage") {
        o.blocks_per_stage = json_integer(value, "subnet options: 'blocks_per_stage'", 0, kMaxSize);
      } else {
        throw Error(fmt::format("subnet options: unknown key '{}'", key));
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(fmt::format("subnet options: '{}' has the wrong type: {}", key, e.what()));
    }
  }
  o.validate();
  return o;
}

std::string SlimNetOptions::describe() const {
  return fmt::format(
      "ResNet-{}-style ({} stages x {} BasicBlocks, {} channels, projection "
      "shortcuts), {}x{}x{}",
      6 * blocks_per_stage * static_cast<int64_t>(stage_channels.size()) / 3 + 2,
      stage_channels.size(), blocks_per_stage, fmt::join(stage_channels, "/"), image_size,
      image_size, in_channels);
}

std::string SubnetSpec::describe(int64_t n_stages, int64_t blocks_per_stage) const {
  std::string inner;
  for (int64_t b = 0; b < n_stages * blocks_per_stage; ++b) {
    if (b > 0) inner += b % blocks_per_stage == 0 ? "|" : ",";
    inner += std::to_string(widths.at(static_cast<size_t>(n_stages + b)));
  }
  std::vector<int64_t> stream(widths.begin(), widths.begin() + n_stages);
  return fmt::format("stream {} inner {}", fmt::join(stream, "/"), inner);
}

SlimNetImpl::SlimNetImpl(SlimNetOptions options) : options_(std::move(options)) {
  options_.validate();
  auto add_conv = [&](const std::string& name, int64_t out_slot, int64_t in_slot, int64_t stride,
                      int64_t kernel) {
    Conv c;
    c.name = name;
    c.out_slot = out_slot;
    c.in_slot = in_slot;
    c.stride = stride;
    c.kernel = kernel;
    const int64_t out_ch = slot_max(out_slot);
    const int64_t in_ch = in_slot < 0 ? options_.in_channels : slot_max(in_slot);
    // He normal (fan_out, ReLU gain), BN weight 1 / bias 0, as models::init_conv_bn.
    const double std = std::sqrt(2.0 / static_cast<double>(kernel * kernel * out_ch));
    c.weight = register_parameter(param_name(name, "weight"),
                                  torch::randn({out_ch, in_ch, kernel, kernel}) * std);
    c.gamma = register_parameter(param_name(name, "gamma"), torch::ones({out_ch}));
    c.beta = register_parameter(param_name(name, "beta"), torch::zeros({out_ch}));
    convs_.push_back(c);
    return convs_.size() - 1;
  };
  add_conv("stem", 0, -1, 1, 3);
  int64_t stream = 0;
  for (int64_t s = 0; s < n_stages(); ++s) {
    for (int64_t b = 0; b < options_.blocks_per_stage; ++b) {
      const int64_t index = s * options_.blocks_per_stage + b;
      const std::string name = fmt::format("block{}", index + 1);
      Block block;
      block.in_slot = stream;
      block.out_slot = s;
      block.stride = (s > 0 && b == 0) ? 2 : 1;
      const int64_t inner = n_stages() + index;
      block.conv1 = add_conv(name + ".conv1", inner, stream, block.stride, 3);
      block.conv2 = add_conv(name + ".conv2", s, inner, 1, 3);
      if (stream != s)
        block.shortcut =
            static_cast<int64_t>(add_conv(name + ".shortcut", s, stream, block.stride, 1));
      blocks_.push_back(block);
      stream = s;
    }
  }
  const int64_t last = slot_max(n_stages() - 1);
  const double bound = 1.0 / std::sqrt(static_cast<double>(last));
  fc_weight_ = register_parameter("fc_weight",
                                  torch::rand({options_.num_classes, last}) * 2 * bound - bound);
  fc_bias_ = register_parameter("fc_bias", torch::rand({options_.num_classes}) * 2 * bound - bound);
  for (int64_t slot = 0; slot < n_slots(); ++slot)
    alphas_.push_back(register_parameter(param_name(slot_name(slot), "alpha"),
                                         torch::full({slot_max(slot)}, 0.25)));
  set_subnets({full_spec()});
}

std::string SlimNetImpl::slot_name(int64_t slot) const {
  TESSERA_CHECK(slot >= 0 && slot < n_slots(), "subnet: slot {} not in [0, {})", slot, n_slots());
  return slot < n_stages() ? fmt::format("stage{}", slot + 1)
                           : fmt::format("block{}.inner", slot - n_stages() + 1);
}

int64_t SlimNetImpl::slot_max(int64_t slot) const {
  TESSERA_CHECK(slot >= 0 && slot < n_slots(), "subnet: slot {} not in [0, {})", slot, n_slots());
  const int64_t stage = slot < n_stages() ? slot : (slot - n_stages()) / options_.blocks_per_stage;
  return options_.stage_channels[static_cast<size_t>(stage)];
}

SubnetSpec SlimNetImpl::full_spec() const {
  SubnetSpec spec;
  for (int64_t slot = 0; slot < n_slots(); ++slot) spec.widths.push_back(slot_max(slot));
  return spec;
}

void SlimNetImpl::check_spec(const SubnetSpec& spec) const {
  TESSERA_CHECK(static_cast<int64_t>(spec.widths.size()) == n_slots(),
                "subnet: a sub-net needs {} widths, got {}", n_slots(), spec.widths.size());
  for (int64_t slot = 0; slot < n_slots(); ++slot) {
    const int64_t w = spec.widths[static_cast<size_t>(slot)];
    TESSERA_CHECK(w >= 1 && w <= slot_max(slot), "subnet: width {} of {} not in [1, {}]", w,
                  slot_name(slot), slot_max(slot));
  }
}

int64_t SlimNetImpl::width_of(const SubnetSpec& spec, int64_t slot) const {
  return slot < 0 ? options_.in_channels : spec.widths[static_cast<size_t>(slot)];
}

int64_t SlimNetImpl::macs(const SubnetSpec& spec) const {
  check_spec(spec);
  int64_t size = options_.image_size;
  auto conv_macs = [&](const Conv& c, int64_t out_hw) {
    return width_of(spec, c.out_slot) * width_of(spec, c.in_slot) * c.kernel * c.kernel * out_hw *
           out_hw;
  };
  int64_t total = conv_macs(convs_[0], size);
  for (const Block& b : blocks_) {
    size = out_size(size, b.stride);
    total += conv_macs(convs_[b.conv1], size) + conv_macs(convs_[b.conv2], size);
    if (b.shortcut >= 0) total += conv_macs(convs_[static_cast<size_t>(b.shortcut)], size);
  }
  return total + options_.num_classes * width_of(spec, n_stages() - 1);
}

void SlimNetImpl::check_set(int64_t k) const {
  TESSERA_CHECK(k >= 0 && k < n_subnets(), "subnet: sub-net index {} out of range (the net has {})",
                k, n_subnets());
}

SlimNetImpl::ConvView SlimNetImpl::view(size_t index, const SubnetSpec& spec,
                                        int64_t bn_set) const {
  const Conv& c = convs_[index];
  const int64_t out = width_of(spec, c.out_slot), in = width_of(spec, c.in_slot);
  ConvView v;
  v.weight = c.weight.slice(0, 0, out).slice(1, 0, in);
  if (noise_ && is_training()) {
    const torch::Tensor a = alphas_[static_cast<size_t>(c.out_slot)].slice(0, 0, out);
    v.weight =
        v.weight + a.view({-1, 1, 1, 1}) * c.weight.detach().std() * torch::randn_like(v.weight);
  }
  v.gamma = c.gamma.slice(0, 0, out);
  v.beta = c.beta.slice(0, 0, out);
  if (bn_set >= 0) {
    const auto& stats = stats_[static_cast<size_t>(bn_set)][index];
    v.mean = stats.first.slice(0, 0, out);
    v.var = stats.second.slice(0, 0, out);
  }
  return v;
}

torch::Tensor SlimNetImpl::conv_bn(const torch::Tensor& x, const Conv& c, const ConvView& v) const {
  const torch::Tensor y = torch::conv2d(x, v.weight, {}, c.stride, c.kernel / 2);
  return torch::batch_norm(y, v.gamma, v.beta, v.mean, v.var, is_training(), bn_momentum_, kBnEps,
                           false);
}

torch::Tensor SlimNetImpl::run(const torch::Tensor& x, const SubnetSpec& spec,
                               const std::vector<ConvView>& views,
                               const torch::Tensor& fc_w) const {
  TESSERA_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels,
                "subnet: input must be [B, {}, H, W], got [{}]", options_.in_channels,
                fmt::join(x.sizes().vec(), ", "));
  (void)spec;
  torch::Tensor h = torch::relu(conv_bn(x, convs_[0], views[0]));
  for (const Block& b : blocks_) {
    torch::Tensor y = torch::relu(conv_bn(h, convs_[b.conv1], views[b.conv1]));
    y = conv_bn(y, convs_[b.conv2], views[b.conv2]);
    const torch::Tensor shortcut = b.shortcut >= 0
                                       ? conv_bn(h, convs_[static_cast<size_t>(b.shortcut)],
                                                 views[static_cast<size_t>(b.shortcut)])
                                       : h;
    h = torch::relu(y + shortcut);
  }
  h = h.mean({2, 3});
  return torch::linear(h, fc_w, fc_bias_);
}

torch::Tensor SlimNetImpl::forward_spec(const torch::Tensor& x, const SubnetSpec& spec,
                                        int64_t bn_set) {
  check_spec(spec);
  if (bn_set >= 0 || !is_training()) check_set(bn_set);
  if (is_training()) cache_valid_ = false;
  std::vector<ConvView> views;
  for (size_t i = 0; i < convs_.size(); ++i) views.push_back(view(i, spec, bn_set));
  const torch::Tensor fc_w = fc_weight_.slice(1, 0, width_of(spec, n_stages() - 1));
  return run(x, spec, views, fc_w);
}

void SlimNetImpl::set_subnets(std::vector<SubnetSpec> specs) {
  TESSERA_CHECK(!specs.empty(), "subnet: set_subnets needs at least one sub-net");
  for (const auto& s : specs) check_spec(s);
  subnets_ = std::move(specs);
  stats_.assign(subnets_.size(), {});
  for (auto& set : stats_)
    for (const Conv& c : convs_)
      set.emplace_back(torch::zeros({slot_max(c.out_slot)}), torch::ones({slot_max(c.out_slot)}));
  active_ = 0;
  cache_valid_ = false;
}

void SlimNetImpl::set_subnet(int64_t k) {
  check_set(k);
  active_ = k;
  torch::NoGradGuard no_grad;
  const SubnetSpec& spec = subnets_[static_cast<size_t>(k)];
  cache_.clear();
  for (size_t i = 0; i < convs_.size(); ++i) {
    ConvView v = view(i, spec, k);
    // The narrower weights as their own contiguous tensors: the convolution then runs on
    // [out, in, k, k] with out and in the sub-net's widths (no mask, no strided view).
    v.weight = v.weight.detach().contiguous();
    v.gamma = v.gamma.detach().contiguous();
    v.beta = v.beta.detach().contiguous();
    cache_.push_back(v);
  }
  cache_fc_ = fc_weight_.slice(1, 0, width_of(spec, n_stages() - 1)).detach().contiguous();
  cache_valid_ = true;
}

torch::Tensor SlimNetImpl::forward(torch::Tensor x) {
  if (is_training()) return forward_spec(x, subnets_[static_cast<size_t>(active_)], active_);
  if (!cache_valid_) set_subnet(active_);
  return run(x, subnets_[static_cast<size_t>(active_)], cache_, cache_fc_);
}

void SlimNetImpl::reset_alphas(double value) {
  torch::NoGradGuard no_grad;
  for (auto& a : alphas_) a.fill_(value);
}

void SlimNetImpl::permute_slot(int64_t slot, const std::vector<int64_t>& order) {
  TESSERA_CHECK(static_cast<int64_t>(order.size()) == slot_max(slot),
                "subnet: a permutation of {} needs {} entries, got {}", slot_name(slot),
                slot_max(slot), order.size());
  std::vector<int64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i)
    TESSERA_CHECK(sorted[i] == static_cast<int64_t>(i), "subnet: not a permutation of {}",
                  slot_name(slot));
  torch::NoGradGuard no_grad;
  const torch::Tensor idx = torch::tensor(order, torch::kLong);
  for (size_t i = 0; i < convs_.size(); ++i) {
    Conv& c = convs_[i];
    if (c.out_slot == slot) {
      c.weight.set_data(c.weight.index_select(0, idx));
      c.gamma.set_data(c.gamma.index_select(0, idx));
      c.beta.set_data(c.beta.index_select(0, idx));
      for (auto& set : stats_) {
        set[i].first = set[i].first.index_select(0, idx);
        set[i].second = set[i].second.index_select(0, idx);
      }
    }
    if (c.in_slot == slot) c.weight.set_data(c.weight.index_select(1, idx));
  }
  if (slot == n_stages() - 1) fc_weight_.set_data(fc_weight_.index_select(1, idx));
  auto& a = alphas_[static_cast<size_t>(slot)];
  a.set_data(a.index_select(0, idx));
  cache_valid_ = false;
}

void SlimNetImpl::reset_bn_stats(int64_t k) {
  check_set(k);
  torch::NoGradGuard no_grad;
  for (auto& [mean, var] : stats_[static_cast<size_t>(k)]) {
    mean.zero_();
    var.fill_(1.0);
  }
  cache_valid_ = false;
}

torch::Tensor& SlimNetImpl::bn_mean(int64_t k, int64_t layer) {
  check_set(k);
  TESSERA_CHECK(layer >= 0 && layer < static_cast<int64_t>(convs_.size()), "subnet: no BN layer {}",
                layer);
  return stats_[static_cast<size_t>(k)][static_cast<size_t>(layer)].first;
}

torch::Tensor& SlimNetImpl::bn_var(int64_t k, int64_t layer) {
  check_set(k);
  TESSERA_CHECK(layer >= 0 && layer < static_cast<int64_t>(convs_.size()), "subnet: no BN layer {}",
                layer);
  return stats_[static_cast<size_t>(k)][static_cast<size_t>(layer)].second;
}

std::vector<std::string> SlimNetImpl::bn_names() const {
  std::vector<std::string> names;
  for (const Conv& c : convs_) names.push_back(c.name);
  return names;
}

// ---------------------------------------------------------------------------------------------
// The model file

void save_slim_net(const std::string& path, SlimNet& net, const nlohmann::json& info) {
  safetensors::File file;
  for (const auto& item : net->named_parameters())
    file.tensors.emplace_back(item.key(), item.value().detach().contiguous());
  const auto names = net->bn_names();
  for (int64_t k = 0; k < net->n_subnets(); ++k) {
    for (size_t l = 0; l < names.size(); ++l) {
      const auto layer = static_cast<int64_t>(l);
      file.tensors.emplace_back(fmt::format("bn.{}.{}.mean", k, names[l]),
                                net->bn_mean(k, layer).contiguous());
      file.tensors.emplace_back(fmt::format("bn.{}.{}.var", k, names[l]),
                                net->bn_var(k, layer).contiguous());
    }
  }
  nlohmann::json subnets = nlohmann::json::array();
  for (const auto& s : net->subnets()) subnets.push_back(s.to_json());
  file.metadata[kMetaKey] = nlohmann::json{
      {"options", net->options().to_json()},
      {"subnets", subnets},
      {"info", info}}.dump();
  file.metadata[kFormatKey] = kFormat;
  safetensors::save(path, file);
}

LoadedSlimNet load_slim_net(const std::string& path) {
  const safetensors::File file = safetensors::load(path);
  const auto meta = file.metadata.find(kMetaKey);
  const auto format = file.metadata.find(kFormatKey);
  TESSERA_CHECK(meta != file.metadata.end() && format != file.metadata.end(),
                "'{}' is not a sub-net file (no '{}' metadata)", path, kMetaKey);
  TESSERA_CHECK(format->second == kFormat, "'{}' has format '{}', this build reads '{}'", path,
                format->second, kFormat);
  LoadedSlimNet out;
  std::vector<SubnetSpec> specs;
  try {
    const nlohmann::json json =
        parse_json(meta->second, fmt::format("'{}': metadata {}", path, kMetaKey));
    out.net = SlimNet(SlimNetOptions::from_json(json.at("options")));
    for (const auto& s : json.at("subnets")) specs.push_back({s.get<std::vector<int64_t>>()});
    out.info = json.value("info", nlohmann::json());
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("'{}': bad '{}' metadata: {}", path, kMetaKey, e.what()));
  } catch (const Error& e) {
    throw Error(fmt::format("'{}': {}", path, e.what()));
  }
  SlimNet& net = out.net;
  net->set_subnets(specs);
  std::map<std::string, const torch::Tensor*> stored;
  for (const auto& [name, tensor] : file.tensors) stored[name] = &tensor;
  std::set<std::string> used;
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, torch::Tensor& target) {
    const auto found = stored.find(name);
    TESSERA_CHECK(found != stored.end(), "'{}': tensor '{}' is missing", path, name);
    const torch::Tensor& source = *found->second;
    TESSERA_CHECK(source.scalar_type() == target.scalar_type() && source.sizes() == target.sizes(),
                  "'{}': tensor '{}' has dtype {} shape [{}], the net expects {} [{}]", path, name,
                  c10::toString(source.scalar_type()), fmt::join(source.sizes().vec(), ", "),
                  c10::toString(target.scalar_type()), fmt::join(target.sizes().vec(), ", "));
    target.copy_(source);
    used.insert(name);
  };
  for (auto& item : net->named_parameters()) copy(item.key(), item.value());
  const auto names = net->bn_names();
  for (int64_t k = 0; k < net->n_subnets(); ++k) {
    for (size_t l = 0; l < names.size(); ++l) {
      copy(fmt::format("bn.{}.{}.mean", k, names[l]), net->bn_mean(k, static_cast<int64_t>(l)));
      copy(fmt::format("bn.{}.{}.var", k, names[l]), net->bn_var(k, static_cast<int64_t>(l)));
    }
  }
  for (const auto& [name, tensor] : file.tensors)
    TESSERA_CHECK(used.count(name) == 1, "'{}': unexpected tensor '{}'", path, name);
  net->eval();
  net->set_subnet(0);
  return out;
}

}  // namespace tessera::subnet
