// core/workload: MACs and weight counts of hand-computed layers, the JSON format and every
// validation error.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/workload.h"
#include "test_support.h"

namespace tessera::workload {
namespace {

using ::tessera::testing::TempDir;
using ::tessera::testing::write_bytes;

Layer conv(const std::string& name, int64_t in_c, int64_t out_c, int64_t k, int64_t stride,
           int64_t padding, int64_t groups, int64_t in_hw, int64_t out_hw) {
  Layer l;
  l.name = name;
  l.kind = OpKind::Conv2d;
  l.in_channels = in_c;
  l.out_channels = out_c;
  l.kernel_h = l.kernel_w = k;
  l.stride = stride;
  l.padding = padding;
  l.groups = groups;
  l.in_h = l.in_w = in_hw;
  l.out_h = l.out_w = out_hw;
  return l;
}

Layer linear(const std::string& name, int64_t in, int64_t out, int64_t rows = 1) {
  Layer l;
  l.name = name;
  l.kind = OpKind::Linear;
  l.in_channels = in;
  l.out_channels = out;
  l.out_h = l.in_h = rows;
  return l;
}

Layer simple(const std::string& name, OpKind kind, int64_t c, int64_t hw) {
  Layer l;
  l.name = name;
  l.kind = kind;
  l.in_channels = l.out_channels = c;
  l.in_h = l.in_w = l.out_h = l.out_w = hw;
  return l;
}

/// A small CIFAR-style network: conv, depthwise conv, pool, attention matmul, classifier.
Workload example() {
  Workload w;
  w.model = "example-cifar";
  w.input_shape = {3, 32, 32};
  Layer pool = simple("pool", OpKind::Pool, 32, 8);
  pool.in_h = pool.in_w = 16;
  pool.kernel_h = pool.kernel_w = 2;
  pool.stride = 2;
  Layer attn;
  attn.name = "attn.qk";
  attn.kind = OpKind::MatMul;
  attn.in_channels = 16;        // head dim
  attn.out_channels = 64;       // keys
  attn.groups = 2;              // heads
  attn.in_h = attn.out_h = 64;  // queries
  w.layers = {conv("conv1", 3, 16, 3, 1, 1, 1, 32, 32),
              simple("bn1", OpKind::Norm, 16, 32),
              simple("relu1", OpKind::Activation, 16, 32),
              conv("conv2", 16, 32, 3, 2, 1, 1, 32, 16),
              conv("dw", 32, 32, 3, 1, 1, 32, 16, 16),
              simple("add", OpKind::Add, 32, 16),
              pool,
              attn,
              linear("fc", 32 * 8 * 8, 10)};
  return w;
}

TEST(WorkloadLayer, ConvMacsAndWeightsMatchHandComputation) {
  const Layer c = conv("c", 3, 16, 3, 1, 1, 1, 32, 32);
  EXPECT_EQ(c.macs(), 32 * 32 * 16 * 3 * 9);  // 442368
  EXPECT_EQ(c.weight_count(), 16 * 3 * 9);
  EXPECT_EQ(c.weight_rows(), 27);
  EXPECT_EQ(c.weight_cols(), 16);

  const Layer strided = conv("s", 16, 32, 3, 2, 1, 1, 32, 16);
  EXPECT_EQ(strided.macs(), 16 * 16 * 32 * 16 * 9);

  const Layer depthwise = conv("dw", 32, 32, 3, 2, 1, 32, 16, 8);
  EXPECT_EQ(depthwise.macs(), 8 * 8 * 32 * 1 * 9);
  EXPECT_EQ(depthwise.weight_count(), 32 * 9);
  EXPECT_EQ(depthwise.weight_rows(), 9);

  const Layer grouped = conv("g", 8, 16, 1, 1, 0, 4, 5, 5);
  EXPECT_EQ(grouped.macs(), 5 * 5 * 16 * 2);
  EXPECT_EQ(grouped.weight_count(), 16 * 2);

  Layer rect = conv("r", 4, 6, 1, 1, 0, 1, 10, 10);
  rect.kernel_h = 3;
  rect.kernel_w = 5;
  rect.out_h = 8;
  rect.out_w = 6;
  rect.validate();
  EXPECT_EQ(rect.macs(), 8 * 6 * 6 * 4 * 15);
}

TEST(WorkloadLayer, LinearMatMulAndWeightlessOps) {
  EXPECT_EQ(linear("fc", 512, 10).macs(), 5120);
  EXPECT_EQ(linear("fc", 512, 10).weight_count(), 5120);
  EXPECT_EQ(linear("fc", 512, 10).weight_rows(), 512);
  const Layer tokens = linear("mlp", 64, 128, 197);  // applied to 197 tokens
  EXPECT_EQ(tokens.macs(), int64_t{197} * 64 * 128);
  EXPECT_EQ(tokens.weight_count(), 64 * 128);

  Layer qk;
  qk.name = "qk";
  qk.kind = OpKind::MatMul;
  qk.in_channels = 64;
  qk.out_channels = 197;
  qk.groups = 3;
  qk.out_h = 197;
  EXPECT_EQ(qk.macs(), int64_t{3} * 197 * 64 * 197);
  EXPECT_EQ(qk.weight_count(), 0);

  for (OpKind kind : {OpKind::Pool, OpKind::Add, OpKind::Norm, OpKind::Activation}) {
    const Layer l = simple("x", kind, 8, 4);
    EXPECT_EQ(l.macs(), 0) << to_string(kind);
    EXPECT_EQ(l.weight_count(), 0) << to_string(kind);
    EXPECT_EQ(l.weight_rows(), 0) << to_string(kind);
  }
}

TEST(WorkloadLayer, OpKindNamesRoundTrip) {
  for (OpKind kind : {OpKind::Conv2d, OpKind::Linear, OpKind::MatMul, OpKind::Pool, OpKind::Add,
                      OpKind::Norm, OpKind::Activation}) {
    EXPECT_EQ(op_kind_from_string(to_string(kind)), kind);
  }
  EXPECT_EQ(to_string(OpKind::Conv2d), "conv2d");
  try {
    op_kind_from_string("convolution");
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'convolution'"), std::string::npos) << e.what();
  }
}

TEST(Workload, TotalsAndWeightedLayers) {
  const Workload w = example();
  w.validate();
  int64_t macs = 0, weights = 0;
  for (const auto& l : w.layers) {
    macs += l.macs();
    weights += l.weight_count();
  }
  EXPECT_EQ(w.total_macs(), macs);
  EXPECT_EQ(w.total_weights(), weights);
  // By hand: conv1 442368 + conv2 1179648 + dw 73728 + attn 131072 + fc 20480.
  EXPECT_EQ(w.total_macs(), 442368 + 1179648 + 73728 + 131072 + 20480);
  EXPECT_EQ(w.total_weights(), 432 + 4608 + 288 + 20480);
  const auto weighted = w.weighted_layers();
  ASSERT_EQ(weighted.size(), 4u);
  EXPECT_EQ(weighted[0].name, "conv1");
  EXPECT_EQ(weighted[3].name, "fc");
}

TEST(Workload, JsonAndFileRoundTrip) {
  const Workload w = example();
  const nlohmann::json json = w.to_json();
  EXPECT_EQ(json.at("layers").size(), w.layers.size());
  EXPECT_EQ(json.at("layers")[0].at("kind"), "conv2d");
  const Workload back = Workload::from_json(json);
  EXPECT_EQ(back.to_json(), json);
  EXPECT_EQ(back.total_macs(), w.total_macs());

  TempDir dir;
  save(dir.file("w.json"), w);
  EXPECT_EQ(load(dir.file("w.json")).to_json(), json);
}

TEST(Workload, OptionalFieldsTakeTheHeaderDefaults) {
  const auto json = nlohmann::json::parse(R"({
    "model": "mlp", "input_shape": [784],
    "layers": [{"name": "fc", "kind": "linear", "in_channels": 784, "out_channels": 10}]})");
  const Workload w = Workload::from_json(json);
  const Layer& l = w.layers.at(0);
  const Layer defaults;
  EXPECT_EQ(l.kernel_h, defaults.kernel_h);
  EXPECT_EQ(l.kernel_w, defaults.kernel_w);
  EXPECT_EQ(l.stride, defaults.stride);
  EXPECT_EQ(l.padding, defaults.padding);
  EXPECT_EQ(l.groups, defaults.groups);
  EXPECT_EQ(l.in_h, 1);
  EXPECT_EQ(l.out_w, 1);
  EXPECT_EQ(w.total_macs(), 7840);
}

struct BadLayer {
  const char* what;
  Layer layer;
  const char* message_part;
};

TEST(WorkloadValidation, EachInconsistentLayerIsRejectedByName) {
  auto c = [] { return conv("conv", 4, 8, 3, 1, 1, 1, 8, 8); };
  std::vector<BadLayer> cases;
  auto add = [&](const char* what, Layer l, const char* part) { cases.push_back({what, l, part}); };
  {
    Layer l = c();
    l.name = "";
    add("empty name", l, "empty name");
  }
  {
    Layer l = c();
    l.in_channels = 0;
    add("zero in_channels", l, "in_channels must be positive, got 0");
  }
  {
    Layer l = c();
    l.out_channels = -8;
    add("negative out_channels", l, "out_channels must be positive");
  }
  {
    Layer l = c();
    l.stride = 0;
    add("zero stride", l, "stride must be positive");
  }
  {
    Layer l = c();
    l.groups = 0;
    add("zero groups", l, "groups must be positive");
  }
  {
    Layer l = c();
    l.padding = -1;
    add("negative padding", l, "padding must be >= 0");
  }
  {
    Layer l = c();
    l.in_h = 0;
    add("zero in_h", l, "in_h must be positive");
  }
  {
    Layer l = c();
    l.groups = 3;
    add("channels not divisible by groups", l, "divisible by groups 3");
  }
  {
    Layer l = conv("conv", 4, 6, 1, 1, 0, 4, 8, 8);
    add("out channels not divisible by groups", l, "divisible by groups 4");
  }
  {
    Layer l = c();
    l.out_h = 7;
    add("wrong output height", l, "expected 8x8");
  }
  {
    Layer l = c();
    l.stride = 2;
    add("stride without smaller output", l, "expected 4x4");
  }
  {
    Layer l = conv("conv", 4, 8, 5, 1, 0, 1, 3, 1);
    add("kernel larger than input", l, "does not fit");
  }
  {
    Layer l = linear("fc", 16, 4);
    l.kernel_h = 3;
    add("linear with a 3x1 kernel", l, "kernel 1x1");
  }
  {
    Layer l = linear("fc", 16, 4);
    l.groups = 2;
    add("linear with groups", l, "groups 1");
  }
  {
    Layer l = simple("pool", OpKind::Pool, 8, 4);
    l.out_channels = 4;
    add("pool changing channels", l, "pooling keeps the channels");
  }
  {
    Layer l = simple("relu", OpKind::Activation, 8, 4);
    l.out_h = 2;
    add("activation changing shape", l, "keeps its shape");
  }
  {
    Layer l = linear("huge", int64_t{1} << 40, int64_t{1} << 40);
    add("MAC count overflow", l, "overflows int64");
  }
  {
    Layer l = conv("conv", 4, 8, 3, 1, int64_t{1} << 62, 1, 8, 8);
    add("padding overflow", l, "overflows int64");
  }
  for (const auto& bad : cases) {
    SCOPED_TRACE(bad.what);
    try {
      bad.layer.validate();
      ADD_FAILURE() << "accepted: " << bad.what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad.message_part), std::string::npos) << e.what();
      if (!bad.layer.name.empty()) {
        EXPECT_NE(std::string(e.what()).find("'" + bad.layer.name + "'"), std::string::npos)
            << e.what();
      }
    }
  }
}

TEST(WorkloadValidation, WorkloadLevelErrors) {
  Workload w = example();
  w.model = "";
  EXPECT_THROW(w.validate(), Error);
  w = example();
  w.input_shape = {};
  EXPECT_THROW(w.validate(), Error);
  w = example();
  w.input_shape = {3, 0, 32};
  EXPECT_THROW(w.validate(), Error);
  w = example();
  w.layers.clear();
  EXPECT_THROW(w.validate(), Error);
  w = example();
  w.layers[1].name = "conv1";
  try {
    w.validate();
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate layer name 'conv1'"), std::string::npos);
  }
  TempDir dir;
  EXPECT_THROW(save(dir.file("bad.json"), w), Error);
  EXPECT_FALSE(tessera::file_exists(dir.file("bad.json")));
}

TEST(WorkloadJson, BadDocumentsNameTheKey) {
  const nlohmann::json good = example().to_json();
  struct Case {
    const char* what;
    nlohmann::json json;
    const char* message_part;
  };
  std::vector<Case> cases;
  auto edit = [&](const char* what, auto change, const char* part) {
    nlohmann::json j = good;
    change(j);
    cases.push_back({what, j, part});
  };
  edit(
      "unknown top-level key", [](auto& j) { j["layer"] = nlohmann::json::array(); },
      "unknown key 'layer'");
  edit(
      "missing layers", [](auto& j) { j.erase("layers"); }, "missing required key 'layers'");
  edit(
      "missing model", [](auto& j) { j.erase("model"); }, "missing required key 'model'");
  edit(
      "missing input_shape", [](auto& j) { j.erase("input_shape"); },
      "missing required key 'input_shape'");
  edit(
      "model not a string", [](auto& j) { j["model"] = 5; }, "'model' must be a string");
  edit(
      "input_shape not an array", [](auto& j) { j["input_shape"] = 3; },
      "'input_shape' must be an array");
  edit(
      "input_shape holds a string", [](auto& j) { j["input_shape"][0] = "3"; },
      "'input_shape' must be an integer");
  edit(
      "layers not an array", [](auto& j) { j["layers"] = nlohmann::json::object(); },
      "'layers' must be an array");
  edit(
      "layer not an object", [](auto& j) { j["layers"][2] = 7; }, "layer 2: must be an object");
  edit(
      "unknown layer key", [](auto& j) { j["layers"][0]["strides"] = 2; }, "unknown key 'strides'");
  edit(
      "missing kind", [](auto& j) { j["layers"][0].erase("kind"); }, "missing required key 'kind'");
  edit(
      "missing name", [](auto& j) { j["layers"][0].erase("name"); }, "missing required key 'name'");
  edit(
      "missing in_channels", [](auto& j) { j["layers"][3].erase("in_channels"); },
      "('conv2'): missing required key 'in_channels'");
  edit(
      "unknown kind", [](auto& j) { j["layers"][0]["kind"] = "Conv"; }, "unknown op kind 'Conv'");
  edit(
      "string size", [](auto& j) { j["layers"][0]["out_channels"] = "16"; },
      "'out_channels' must be an integer");
  edit(
      "fractional size", [](auto& j) { j["layers"][0]["stride"] = 1.5; },
      "'stride' must be an integer");
  edit(
      "size beyond int64", [](auto& j) { j["layers"][0]["in_h"] = uint64_t{1} << 63; },
      "does not fit in int64");
  edit(
      "inconsistent layer", [](auto& j) { j["layers"][0]["out_h"] = 31; }, "expected 32x32");
  edit(
      "not an object", [](auto& j) { j = nlohmann::json::array(); }, "must be an object");
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    try {
      Workload::from_json(c.json);
      ADD_FAILURE() << "accepted: " << c.what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos) << e.what();
    }
  }
}

TEST(WorkloadJson, LoadErrorsNameTheFile) {
  TempDir dir;
  EXPECT_THROW(load(dir.file("missing.json")), Error);
  const std::string path = dir.file("broken.json");
  write_bytes(path, "{\"model\": ");
  try {
    load(path);
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

TEST(Workload, AppendConvPadsByHalfTheKernelAndReturnsTheOutputSide) {
  Workload w;
  EXPECT_EQ(append_conv(w, "stem", 3, 64, 7, 2, 224), 112);  // (224 + 6 - 7) / 2 + 1
  EXPECT_EQ(append_conv(w, "dw", 64, 64, 3, 1, 112, 64), 112);
  ASSERT_EQ(w.layers.size(), 2u);
  EXPECT_EQ(w.layers[0].padding, 3);
  EXPECT_EQ(w.layers[1].groups, 64);
  EXPECT_EQ(w.layers[1].macs(), 112 * 112 * 64 * 9);
}

}  // namespace
}  // namespace tessera::workload
