// ModelConfig JSON and validation, the registry, model-specific options and unit-range checks.
#include <gtest/gtest.h>

#include <string>

#include "tessera/core/error.h"
#include "tessera/models/model.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::models {
namespace {

// Runs `fn`, expects a tessera::Error whose message contains every string in `needles`.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    const std::string message = e.what();
    for (const auto& needle : needles) {
      EXPECT_NE(message.find(needle), std::string::npos)
          << "message '" << message << "' lacks '" << needle << "'";
    }
  }
}

nlohmann::json base_json() {
  return {{"name", "resnet20"}, {"in_channels", 3},  {"image_size", 32},
          {"num_classes", 100}, {"width_mult", 0.5}, {"extra", {{"shortcut", "B"}}}};
}

TEST(ModelConfig, JsonRoundTripKeepsEveryField) {
  const ModelConfig config = ModelConfig::from_json(base_json());
  EXPECT_EQ(config.name, "resnet20");
  EXPECT_EQ(config.in_channels, 3);
  EXPECT_EQ(config.image_size, 32);
  EXPECT_EQ(config.num_classes, 100);
  EXPECT_DOUBLE_EQ(config.width_mult, 0.5);
  EXPECT_EQ(config.extra.at("shortcut"), "B");
  EXPECT_EQ(config.to_json(), base_json());
  EXPECT_EQ(ModelConfig::from_json(config.to_json()).to_json(), config.to_json());
}

TEST(ModelConfig, MissingKeysTakeDefaults) {
  const ModelConfig config = ModelConfig::from_json({{"name", "vit"}});
  EXPECT_EQ(config.in_channels, 1);
  EXPECT_EQ(config.image_size, 32);
  EXPECT_EQ(config.num_classes, 10);
  EXPECT_DOUBLE_EQ(config.width_mult, 1.0);
  EXPECT_TRUE(config.extra.is_object() && config.extra.empty());
}

TEST(ModelConfig, RejectsBadFieldsNamingThem) {
  struct Case {
    const char* key;
    nlohmann::json value;
    std::string needle;
  };
  const Case cases[] = {
      {"image_size", -32, "image_size"},
      {"in_channels", 0, "in_channels"},
      {"num_classes", 0, "num_classes"},
      {"in_channels", 1.5, "in_channels"},
      {"image_size", "32", "image_size"},
      {"width_mult", 0.0, "width_mult"},
      {"width_mult", -1.0, "width_mult"},
      {"width_mult", "wide", "width_mult"},
      {"extra", nlohmann::json::array(), "extra"},
      {"imag_size", 32, "imag_size"},
      {"name", 7, "name"},
      {"image_size", 100000, "image_size"},
      {"width_mult", 100.0, "width_mult"},
      {"num_classes", 2000000, "num_classes"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.key) + " = " + c.value.dump());
    nlohmann::json json = base_json();
    json[c.key] = c.value;
    expect_error([&] { ModelConfig::from_json(json); }, {c.needle});
  }
}

TEST(ModelConfig, RejectsNonObjectAndMissingName) {
  expect_error([] { ModelConfig::from_json(nlohmann::json::array()); }, {"object"});
  expect_error([] { ModelConfig::from_json({{"image_size", 32}}); }, {"name"});
}

TEST(Registry, UnknownNameListsKnownModels) {
  nlohmann::json json = base_json();
  json["name"] = "resnet21";
  expect_error([&] { ModelConfig::from_json(json); },
               {"resnet21", "vgg11_bn", "resnet20", "resnet18", "mobilenetv2", "vit"});
  ModelConfig config;
  config.name = "alexnet";
  expect_error([&] { create(config); }, {"alexnet", "vgg11_bn", "vit"});
}

TEST(Registry, ListsEveryModelWithDescriptionAndBuildsIt) {
  const auto models = list_models();
  ASSERT_EQ(models.size(), 7u);
  for (const auto& info : models) {
    SCOPED_TRACE(info.name);
    EXPECT_FALSE(info.description.empty());
    EXPECT_EQ(info.description.find('\n'), std::string::npos);
    ModelConfig config;
    config.name = info.name;
    if (info.name != "vit") config.width_mult = 0.25;
    Model model = create(config);
    EXPECT_EQ(model->config().name, info.name);
    EXPECT_GT(model->n_units(), 3u);
  }
}

TEST(Registry, ModelOptionsAreChecked) {
  auto config_with = [](const std::string& name, nlohmann::json extra) {
    ModelConfig config;
    config.name = name;
    config.extra = std::move(extra);
    return config;
  };
  expect_error([&] { create(config_with("vit", {{"depht", 2}})); }, {"depht", "depth"});
  expect_error([&] { create(config_with("mobilenetv2", {{"patch_size", 4}})); }, {"patch_size"});
  expect_error([&] { create(config_with("vgg11_bn", {{"classifier", "fc2"}})); }, {"fc2"});
  expect_error([&] { create(config_with("vgg11_bn", {{"dropout", 1.0}})); }, {"dropout"});
  expect_error([&] { create(config_with("resnet20", {{"shortcut", "C"}})); }, {"shortcut", "C"});
  expect_error([&] { create(config_with("vit", {{"heads", 5}})); }, {"heads 5", "dim 64"});
  expect_error([&] { create(config_with("vit", {{"dim", "64"}})); }, {"dim"});
  expect_error([&] { create(config_with("vit", {{"mlp_ratio", 0}})); }, {"mlp_ratio"});
  ModelConfig odd = config_with("vit", nlohmann::json::object());
  odd.image_size = 30;
  expect_error([&] { create(odd); }, {"patch_size 4", "image_size 30"});
  ModelConfig wide = config_with("vit", nlohmann::json::object());
  wide.width_mult = 2.0;
  expect_error([&] { create(wide); }, {"width_mult"});
}

TEST(Registry, CloneCopiesWeightsWithoutSharing) {
  ModelConfig config;
  config.name = "resnet20";
  config.width_mult = 0.25;
  Model model = create(config);
  model->eval();
  Model copy = clone(model);
  EXPECT_FALSE(copy->is_training());
  torch::Tensor x = torch::randn({2, 1, 32, 32});
  EXPECT_TRUE(torch::equal(model(x), copy(x)));
  {
    torch::NoGradGuard no_grad;
    copy->named_parameters()["fc.linear.weight"].add_(1.0);
  }
  EXPECT_FALSE(torch::equal(model(x), copy(x)));
}

TEST(ModelUnits, RangeChecksNameTheRange) {
  ModelConfig config;
  config.name = "resnet20";
  config.width_mult = 0.25;
  Model model = create(config);
  torch::Tensor x = torch::randn({1, 1, 32, 32});
  const size_t n = model->n_units();
  expect_error([&] { model->forward_units(x, 3, 2); }, {"[3, 2)"});
  expect_error([&] { model->forward_units(x, 0, n + 1); }, {std::to_string(n + 1)});
  expect_error([&] { model->shape_after(n + 1); }, {std::to_string(n + 1)});
}

}  // namespace
}  // namespace tessera::models
