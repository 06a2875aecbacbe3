// Whole networks: ImageNet workloads, per-layer sums equal totals, SME ablation order, a Tessera
// model through core/workload + core/quant and workload JSON round trips.
#include <gtest/gtest.h>

#include "tessera/core/error.h"
#include "tessera/models/registry.h"
#include "tessera/reram/bench_donor.h"
#include "tessera/reram/imagenet.h"
#include "tessera/reram/sme.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

class ReramNetwork : public testing::SeededTest {};

TEST_F(ReramNetwork, ImagenetWorkloadsHaveTorchvisionShapes) {
  const workload::Workload r50 = resnet50_imagenet();
  EXPECT_EQ(r50.weighted_layers().size(), 54u);  // 53 convs + fc
  EXPECT_EQ(r50.total_weights(), 25502912);      // 25,557,032 params - BN - fc bias
  const workload::Workload mb2 = mobilenetv2_imagenet();
  EXPECT_EQ(mb2.weighted_layers().size(), 53u);  // 52 convs + classifier
  EXPECT_EQ(mb2.layers.back().in_channels, 1280);
  EXPECT_EQ(mb2.layers[mb2.layers.size() - 2].out_h, 7);
  EXPECT_THROW(parse_imagenet_network("resnet101"), Error);
  EXPECT_EQ(imagenet_workload(parse_imagenet_network("mobilenetv2")).model, mb2.model);
}

TEST_F(ReramNetwork, PerLayerSumsEqualTotalsAndSqueezeNeverAdds) {
  const workload::Workload w = mobilenetv2_imagenet();
  const auto weights = synthesize_weights(w, WeightDonor{}, 7);
  const auto uniform = quantize_all(w, weights, 8);
  const auto sparse = bit_sparse_all(w, uniform, BitSparseOptions{});
  const HardwareSpec spec;
  const NetworkStats plain = map_network(w, sparse, spec, MappingOptions{true, false});
  const NetworkStats net = map_network(w, sparse, spec, MappingOptions{true, true});
  int64_t crossbars = 0, adc = 0, cells = 0;
  for (size_t i = 0; i < net.layers.size(); ++i) {
    crossbars += net.layers[i].crossbars;
    adc += net.layers[i].adc_conversions;
    cells += net.layers[i].nonzero_cells;
    EXPECT_LE(net.layers[i].crossbars, plain.layers[i].crossbars) << net.layers[i].name;
    EXPECT_EQ(net.layers[i].crossbars_before_squeeze, plain.layers[i].crossbars);
    EXPECT_EQ(net.layers[i].nonzero_cells, plain.layers[i].nonzero_cells);
  }
  EXPECT_EQ(crossbars, net.total.crossbars);
  EXPECT_EQ(adc, net.total.adc_conversions);
  EXPECT_EQ(cells, net.total.nonzero_cells);
  const nlohmann::json j = net.to_json();
  EXPECT_EQ(j["total"]["stats"]["crossbars"]["value"].get<int64_t>(), crossbars);
  EXPECT_EQ(j["total"]["stats"]["crossbars"]["unit"], "crossbars");
  EXPECT_EQ(j["layers"].size(), net.layers.size());
  for (const auto& item : j["layers"][0]["stats"].items()) {
    EXPECT_TRUE(item.value().contains("unit")) << item.key();
  }
}

TEST_F(ReramNetwork, AblationHasEightRowsWithBaselineFirst) {
  const workload::Workload w = mobilenetv2_imagenet();
  const auto uniform = quantize_all(w, synthesize_weights(w, WeightDonor{}, 3), 8);
  const auto sparse = bit_sparse_all(w, uniform, BitSparseOptions{});
  const std::vector<AblationRow> rows = ablation(w, uniform, sparse, HardwareSpec{});
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_FALSE(rows[0].bit_sparse || rows[0].splice || rows[0].squeeze);
  EXPECT_TRUE(rows[7].bit_sparse && rows[7].splice && rows[7].squeeze);
  // Shape-only steps: bit-sparse weights alone do not change the baseline layout.
  EXPECT_EQ(rows[1].crossbars, rows[0].crossbars);
  EXPECT_EQ(rows[0].crossbars, map_network(w, {}, HardwareSpec{}, {}).total.crossbars);
  // Full SME uses fewer crossbars than squeeze-out on uniform weights.
  EXPECT_LT(rows[7].crossbars, rows[6].crossbars);
}

TEST_F(ReramNetwork, TesseraModelMapsThroughWorkloadAndQuant) {
  models::ModelConfig config;
  config.name = "resnet20";
  config.in_channels = 1;
  config.image_size = 16;
  models::Model model = models::create(config);
  const workload::Workload w = model->workload();
  const auto uniform = quantize_model(model, w, 8);
  EXPECT_EQ(uniform.size(), w.weighted_layers().size());
  const NetworkStats net = map_network(w, uniform, HardwareSpec{}, MappingOptions{true, true});
  EXPECT_GT(net.total.crossbars, 0);
  // Evaluating with 8-bit weights leaves the model's own float weights untouched.
  const torch::Tensor before = model->parameters()[0].clone();
  data::Dataset d = data::make_synthetic(32, 1, 16, 10, 1);
  const double acc = quantized_accuracy(model, uniform, d);
  EXPECT_GE(acc, 0.0);
  EXPECT_LE(acc, 1.0);
  EXPECT_TRUE(torch::equal(before, model->parameters()[0]));
}

TEST_F(ReramNetwork, WorkloadJsonRoundTripsAndBadShapesFail) {
  testing::TempDir dir;
  const workload::Workload w = resnet50_imagenet();
  workload::save(dir.file("r50.json"), w);
  const workload::Workload back = workload::load(dir.file("r50.json"));
  EXPECT_EQ(map_network(back, {}, HardwareSpec{}, {}).total.crossbars,
            map_network(w, {}, HardwareSpec{}, {}).total.crossbars);
  nlohmann::json j = w.to_json();
  j["layers"][1]["out_h"] = 57;  // 56x56 cannot come out of this 1x1 conv
  EXPECT_THROW(workload::Workload::from_json(j), Error);
  // Weights that do not fit the workload's layers.
  const auto uniform =
      quantize_all(mobilenetv2_imagenet(), synthesize_weights(mobilenetv2_imagenet(), {}, 1), 8);
  EXPECT_THROW(map_network(w, uniform, HardwareSpec{}, {}), Error);
}

}  // namespace
}  // namespace tessera::reram
