// Workload arithmetic (MACs, weight counts), validation and the JSON file format. Counts use
// checked int64 arithmetic: a hostile JSON file gets an error, not a wrapped-around number.
#include "tessera/core/workload.h"

#include <cstdint>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"

namespace tessera::workload {

namespace {

constexpr OpKind kAllKinds[] = {OpKind::Conv2d, OpKind::Linear, OpKind::MatMul,    OpKind::Pool,
                                OpKind::Add,    OpKind::Norm,   OpKind::Activation};

/// a * b, throwing an error that names the layer instead of overflowing.
int64_t checked_mul(int64_t a, int64_t b, const std::string& layer) {
  int64_t out = 0;
  TESSERA_CHECK(!__builtin_mul_overflow(a, b, &out), "layer '{}': count overflows int64 ({} * {})",
                layer, a, b);
  return out;
}

int64_t checked_product(std::initializer_list<int64_t> factors, const std::string& layer) {
  int64_t out = 1;
  for (int64_t f : factors) out = checked_mul(out, f, layer);
  return out;
}

int64_t checked_add(int64_t a, int64_t b, const std::string& what) {
  int64_t out = 0;
  TESSERA_CHECK(!__builtin_add_overflow(a, b, &out), "{} overflows int64", what);
  return out;
}

/// Output side of a convolution, (in + 2p - k) / s + 1 (floor), or -1 if the kernel does not fit
/// the padded input. Sizes are positive (padding >= 0) when this is called.
int64_t conv_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding,
                         const std::string& layer) {
  const int64_t padded =
      checked_add(in, checked_mul(2, padding, layer), "layer '" + layer + "' padded input");
  const int64_t span = padded - kernel;
  return span < 0 ? -1 : span / stride + 1;
}

// JSON field helpers: each error names the key and where it is.
void check_known_keys(const nlohmann::json& json, const std::set<std::string>& known,
                      const std::string& where) {
  for (const auto& item : json.items()) {
    if (known.count(item.key()) == 0) {
      std::string expected;
      for (const auto& key : known) expected += (expected.empty() ? "" : ", ") + key;
      TESSERA_CHECK(false, "{}: unknown key '{}' (expected one of: {})", where, item.key(),
                    expected);
    }
  }
}

const nlohmann::json& required(const nlohmann::json& json, const std::string& key,
                               const std::string& where) {
  TESSERA_CHECK(json.contains(key), "{}: missing required key '{}'", where, key);
  return json.at(key);
}

int64_t to_int(const nlohmann::json& value, const std::string& key, const std::string& where) {
  TESSERA_CHECK(value.is_number_integer(), "{}: '{}' must be an integer, got {}", where, key,
                value.dump());
  TESSERA_CHECK(
      !value.is_number_unsigned() || value.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX),
      "{}: '{}' = {} does not fit in int64", where, key, value.dump());
  return value.get<int64_t>();
}

std::string to_str(const nlohmann::json& value, const std::string& key, const std::string& where) {
  TESSERA_CHECK(value.is_string(), "{}: '{}' must be a string, got {}", where, key, value.dump());
  return value.get<std::string>();
}

/// Reads an optional integer field into `field` (left at its default when absent).
void optional_int(const nlohmann::json& json, const std::string& key, const std::string& where,
                  int64_t& field) {
  if (json.contains(key)) field = to_int(json.at(key), key, where);
}

Layer layer_from_json(const nlohmann::json& json, size_t index) {
  std::string where = fmt::format("workload layer {}", index);
  TESSERA_CHECK(json.is_object(), "{}: must be an object, got {}", where, json.type_name());
  check_known_keys(json,
                   {"name", "kind", "in_channels", "out_channels", "kernel_h", "kernel_w", "stride",
                    "padding", "groups", "in_h", "in_w", "out_h", "out_w"},
                   where);
  Layer layer;
  layer.name = to_str(required(json, "name", where), "name", where);
  where = fmt::format("workload layer {} ('{}')", index, layer.name);
  layer.kind = op_kind_from_string(to_str(required(json, "kind", where), "kind", where));
  layer.in_channels = to_int(required(json, "in_channels", where), "in_channels", where);
  layer.out_channels = to_int(required(json, "out_channels", where), "out_channels", where);
  optional_int(json, "kernel_h", where, layer.kernel_h);
  optional_int(json, "kernel_w", where, layer.kernel_w);
  optional_int(json, "stride", where, layer.stride);
  optional_int(json, "padding", where, layer.padding);
  optional_int(json, "groups", where, layer.groups);
  optional_int(json, "in_h", where, layer.in_h);
  optional_int(json, "in_w", where, layer.in_w);
  optional_int(json, "out_h", where, layer.out_h);
  optional_int(json, "out_w", where, layer.out_w);
  return layer;
}

}  // namespace

std::string to_string(OpKind kind) {
  switch (kind) {
    case OpKind::Conv2d:
      return "conv2d";
    case OpKind::Linear:
      return "linear";
    case OpKind::MatMul:
      return "matmul";
    case OpKind::Pool:
      return "pool";
    case OpKind::Add:
      return "add";
    case OpKind::Norm:
      return "norm";
    case OpKind::Activation:
      return "activation";
  }
  TESSERA_CHECK(false, "invalid OpKind value {}", static_cast<int>(kind));
  return "";
}

OpKind op_kind_from_string(const std::string& name) {
  std::string known;
  for (OpKind kind : kAllKinds) {
    if (name == to_string(kind)) return kind;
    known += (known.empty() ? "" : ", ") + to_string(kind);
  }
  TESSERA_CHECK(false, "unknown op kind '{}' (expected one of: {})", name, known);
  return OpKind::Conv2d;
}

int64_t Layer::macs() const {
  switch (kind) {
    case OpKind::Conv2d:
      // Each output element sums (in_channels/groups) * kh * kw products.
      return checked_product(
          {out_h, out_w, out_channels, groups > 0 ? in_channels / groups : 0, kernel_h, kernel_w},
          name);
    case OpKind::Linear:
      return checked_product({out_h, out_w, in_channels, out_channels}, name);
    case OpKind::MatMul:
      return checked_product({groups, out_h, out_w, in_channels, out_channels}, name);
    default:
      return 0;
  }
}

int64_t Layer::weight_count() const {
  switch (kind) {
    case OpKind::Conv2d:
    case OpKind::Linear:
      return checked_mul(weight_rows(), out_channels, name);
    default:
      return 0;
  }
}

int64_t Layer::weight_rows() const {
  // Only Conv2d and Linear have a weight matrix; the others report 0 rows, like weight_count().
  switch (kind) {
    case OpKind::Conv2d:
      return checked_product({groups > 0 ? in_channels / groups : 0, kernel_h, kernel_w}, name);
    case OpKind::Linear:
      return in_channels;
    default:
      return 0;
  }
}

void Layer::validate() const {
  TESSERA_CHECK(!name.empty(), "a {} layer has an empty name", to_string(kind));
  const std::string where = fmt::format("layer '{}' ({})", name, to_string(kind));
  const std::pair<const char*, int64_t> positive[] = {{"in_channels", in_channels},
                                                      {"out_channels", out_channels},
                                                      {"kernel_h", kernel_h},
                                                      {"kernel_w", kernel_w},
                                                      {"stride", stride},
                                                      {"groups", groups},
                                                      {"in_h", in_h},
                                                      {"in_w", in_w},
                                                      {"out_h", out_h},
                                                      {"out_w", out_w}};
  for (const auto& [field, value] : positive) {
    TESSERA_CHECK(value > 0, "{}: {} must be positive, got {}", where, field, value);
  }
  TESSERA_CHECK(padding >= 0, "{}: padding must be >= 0, got {}", where, padding);

  switch (kind) {
    case OpKind::Conv2d: {
      TESSERA_CHECK(in_channels % groups == 0 && out_channels % groups == 0,
                    "{}: in_channels {} and out_channels {} must be divisible by groups {}", where,
                    in_channels, out_channels, groups);
      const int64_t expect_h = conv_output_size(in_h, kernel_h, stride, padding, name);
      const int64_t expect_w = conv_output_size(in_w, kernel_w, stride, padding, name);
      TESSERA_CHECK(expect_h > 0 && expect_w > 0,
                    "{}: kernel {}x{} does not fit input {}x{} with padding {}", where, kernel_h,
                    kernel_w, in_h, in_w, padding);
      TESSERA_CHECK(out_h == expect_h && out_w == expect_w,
                    "{}: output {}x{} does not follow from input {}x{}, kernel {}x{}, stride {}, "
                    "padding {} (expected {}x{})",
                    where, out_h, out_w, in_h, in_w, kernel_h, kernel_w, stride, padding, expect_h,
                    expect_w);
      break;
    }
    case OpKind::Linear:
      TESSERA_CHECK(kernel_h == 1 && kernel_w == 1 && groups == 1,
                    "{}: a linear layer must have kernel 1x1 and groups 1, got kernel {}x{}, "
                    "groups {}",
                    where, kernel_h, kernel_w, groups);
      break;
    case OpKind::MatMul:
      break;
    case OpKind::Pool:
      TESSERA_CHECK(in_channels == out_channels,
                    "{}: pooling keeps the channels, but in_channels {} != out_channels {}", where,
                    in_channels, out_channels);
      break;
    case OpKind::Add:
    case OpKind::Norm:
    case OpKind::Activation:
      TESSERA_CHECK(in_channels == out_channels && in_h == out_h && in_w == out_w,
                    "{}: an element-wise op keeps its shape, but input {}x{}x{} != output {}x{}x{}",
                    where, in_channels, in_h, in_w, out_channels, out_h, out_w);
      break;
  }
  // The counts must be representable (throws naming the layer if not).
  macs();
  weight_count();
}

int64_t Workload::total_macs() const {
  int64_t total = 0;
  for (const auto& layer : layers) {
    total = checked_add(total, layer.macs(), fmt::format("total MACs of workload '{}'", model));
  }
  return total;
}

int64_t Workload::total_weights() const {
  int64_t total = 0;
  for (const auto& layer : layers) {
    total = checked_add(total, layer.weight_count(),
                        fmt::format("total weights of workload '{}'", model));
  }
  return total;
}

std::vector<Layer> Workload::weighted_layers() const {
  std::vector<Layer> out;
  for (const auto& layer : layers) {
    if (layer.kind == OpKind::Conv2d || layer.kind == OpKind::Linear) out.push_back(layer);
  }
  return out;
}

void Workload::validate() const {
  TESSERA_CHECK(!model.empty(), "workload: model name is empty");
  TESSERA_CHECK(!input_shape.empty(), "workload '{}': input_shape is empty", model);
  for (size_t i = 0; i < input_shape.size(); ++i) {
    TESSERA_CHECK(input_shape[i] > 0, "workload '{}': input_shape[{}] must be positive, got {}",
                  model, i, input_shape[i]);
  }
  TESSERA_CHECK(!layers.empty(), "workload '{}' has no layers", model);
  std::set<std::string> names;
  for (const auto& layer : layers) {
    layer.validate();
    TESSERA_CHECK(names.insert(layer.name).second, "workload '{}': duplicate layer name '{}'",
                  model, layer.name);
  }
  total_macs();
  total_weights();
}

nlohmann::json Workload::to_json() const {
  nlohmann::json json_layers = nlohmann::json::array();
  for (const auto& layer : layers) {
    json_layers.push_back({{"name", layer.name},
                           {"kind", to_string(layer.kind)},
                           {"in_channels", layer.in_channels},
                           {"out_channels", layer.out_channels},
                           {"kernel_h", layer.kernel_h},
                           {"kernel_w", layer.kernel_w},
                           {"stride", layer.stride},
                           {"padding", layer.padding},
                           {"groups", layer.groups},
                           {"in_h", layer.in_h},
                           {"in_w", layer.in_w},
                           {"out_h", layer.out_h},
                           {"out_w", layer.out_w}});
  }
  return {{"model", model}, {"input_shape", input_shape}, {"layers", json_layers}};
}

Workload Workload::from_json(const nlohmann::json& json) {
  const std::string where = "workload";
  TESSERA_CHECK(json.is_object(), "workload: JSON must be an object, got {}", json.type_name());
  check_known_keys(json, {"model", "input_shape", "layers"}, where);
  Workload workload;
  workload.model = to_str(required(json, "model", where), "model", where);
  const auto& shape = required(json, "input_shape", where);
  TESSERA_CHECK(shape.is_array(), "workload: 'input_shape' must be an array, got {}", shape.dump());
  for (const auto& dim : shape) workload.input_shape.push_back(to_int(dim, "input_shape", where));
  const auto& layers = required(json, "layers", where);
  TESSERA_CHECK(layers.is_array(), "workload: 'layers' must be an array, got {}",
                layers.type_name());
  for (size_t i = 0; i < layers.size(); ++i) {
    workload.layers.push_back(layer_from_json(layers[i], i));
  }
  workload.validate();
  return workload;
}

Workload load(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return Workload::from_json(parse_json(text, "workload"));
  } catch (const Error& e) {
    throw Error(fmt::format("'{}': {}", path, e.what()));
  }
}

void save(const std::string& path, const Workload& workload) {
  workload.validate();
  write_file_atomic(path, workload.to_json().dump(2) + "\n");
}

int64_t append_conv(Workload& workload, const std::string& name, int64_t in_channels,
                    int64_t out_channels, int64_t kernel, int64_t stride, int64_t side,
                    int64_t groups) {
  Layer l;
  l.name = name;
  l.kind = OpKind::Conv2d;
  l.in_channels = in_channels;
  l.out_channels = out_channels;
  l.kernel_h = l.kernel_w = kernel;
  l.stride = stride;
  l.padding = kernel / 2;
  l.groups = groups;
  l.in_h = l.in_w = side;
  l.out_h = l.out_w = (side + 2 * (kernel / 2) - kernel) / stride + 1;
  workload.layers.push_back(l);
  return l.out_h;
}

}  // namespace tessera::workload
