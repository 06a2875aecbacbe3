// Per-row plane budgets (projection, allocation, carry-over, bad budgets), the residual
// squeeze-out (counts by hand, moved non-zeros, VMM against the dense layer) and the named
// baselines (files equal the built-ins).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "layers.h"
#include "tessera/core/error.h"
#include "tessera/reram/bench_donor.h"
#include "tessera/reram/imagenet.h"
#include "tessera/reram/layout.h"
#include "tessera/reram/mapping.h"
#include "tessera/reram/planes.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

using testing_layers::depthwise;
using testing_layers::linear;

HardwareSpec small_spec(int64_t size, int weight_bits) {
  HardwareSpec s;
  s.crossbar_rows = s.crossbar_cols = size;
  s.weight_bits = weight_bits;
  s.columns_per_adc = std::min<int64_t>(s.columns_per_adc, size);
  return s;
}

quant::QuantizedTensor tensor(std::vector<int32_t> values, std::vector<int64_t> shape, int bits) {
  quant::QuantizedTensor t;
  t.name = "w";
  t.bits = bits;
  t.step = 0.5;
  t.values = torch::tensor(values, torch::kInt32).reshape(shape).clone();
  return t;
}

// Integer W x of a [C_out, rows] layer with `groups` groups (input g * rows + r).
std::vector<int64_t> dense_vmm(const quant::QuantizedTensor& w, int64_t groups,
                               const std::vector<int64_t>& x) {
  const torch::Tensor v = w.values.contiguous();
  const int32_t* q = v.data_ptr<int32_t>();
  const int64_t outputs = v.size(0), rows = v.numel() / outputs, per_group = outputs / groups;
  std::vector<int64_t> y(outputs, 0);
  for (int64_t o = 0; o < outputs; ++o)
    for (int64_t r = 0; r < rows; ++r) y[o] += q[o * rows + r] * x[(o / per_group) * rows + r];
  return y;
}

TEST(ReramPlanes, EveryBudgetPatternOfATwoRowLayerCountsAsComputedByHand) {
  // Linear 2 -> 2, 4-bit weights (3 magnitude bits), all 7 = 0b111, 4x4 crossbars. Row r with
  // K_r keeps its K_r best positions: 7 -> 0, 4 (0b100), 6 (0b110), 7. Plane p's block holds the
  // rows whose value has bit p, over both outputs (2 columns); two such blocks fit in one 4x4
  // crossbar (rows <= 2 + 2, columns 2 + 2), so SME needs ceil(max K_r / 2) crossbars.
  const workload::Layer layer = linear(2, 2);
  const HardwareSpec spec = small_spec(4, 4);
  const quant::QuantizedTensor uniform = tensor({7, 7, 7, 7}, {2, 2}, 4);
  const int32_t kept[] = {0, 4, 6, 7};
  for (int k0 = 0; k0 <= 3; ++k0) {
    for (int k1 = 0; k1 <= 3; ++k1) {
      SCOPED_TRACE(::testing::Message() << "K = (" << k0 << ", " << k1 << ")");
      const RowBudgets budgets = {k0, k1};
      const quant::QuantizedTensor q = budget_quantize(uniform, budgets, layer);
      const torch::Tensor v = q.values.contiguous();
      for (int o = 0; o < 2; ++o) {
        EXPECT_EQ(v[o][0].item<int32_t>(), kept[k0]);
        EXPECT_EQ(v[o][1].item<int32_t>(), kept[k1]);
      }
      const LayerStats st = map_layer(layer, &q, spec, {true, true});
      EXPECT_EQ(st.crossbars, (std::max(k0, k1) + 1) / 2);
      EXPECT_EQ(st.nonzero_cells, 2 * (k0 + k1));
      EXPECT_EQ(map_layer(layer, &q, spec, {}).crossbars, 4);  // 2 arrays x ceil(2*3/4)
      const LayerStats res = map_layer(layer, &q, spec, {true, true, 1.0});
      // All planes on shared bitlines: ceil((k0 + k1) / 4) residual crossbars, used when fewer.
      EXPECT_EQ(res.crossbars, std::min(st.crossbars, int64_t{(k0 + k1 + 3) / 4}));
      workload::Workload w;
      w.model = "two-rows";
      w.input_shape = {2, 1, 1};
      w.layers = {layer};
      EXPECT_DOUBLE_EQ(mean_plane_budget(w, {budgets}), (k0 + k1) / 2.0);
    }
  }
}

TEST(ReramPlanes, ResidualCrossbarHoldsExactlyTheMovedNonZeros) {
  // Linear 1 -> 4, weights [7, 7, 7, -7] (4-bit): planes 0..2 of the positive array are blocks
  // of 1 row x 3 columns, of the negative array 1 x 1. Next-fit block-diagonal packing on 4x4:
  // {p0+}, {p1+}, {p2+, p0-}, {p1-, p2-} = 4 crossbars. The residual puts the wordlines (x0, plane
  // 0..2) over the bitlines (o0+, o1+, o2+, o3-): one 3 x 4 crossbar with all 12 non-zeros.
  const workload::Layer layer = linear(1, 4);
  const HardwareSpec spec = small_spec(4, 4);
  const quant::QuantizedTensor w = tensor({7, 7, 7, -7}, {4, 1}, 4);
  const LayerLayout plain = sme_layout(layer, w, spec, 0.0, true);
  EXPECT_EQ(plain.crossbars, 4);
  EXPECT_EQ(plain.crossbars, map_layer(layer, &w, spec, {true, true}).crossbars);
  const LayerLayout res = sme_layout(layer, w, spec, 0.5, true);
  ASSERT_EQ(res.crossbars, 1);
  ASSERT_EQ(res.physical.size(), 1u);
  const PhysicalCrossbar& x = res.physical[0];
  EXPECT_TRUE(x.residual);
  EXPECT_EQ(res.moved_cells, 12);
  ASSERT_EQ(x.cells.size(), 12u);
  ASSERT_EQ(x.rows.size(), 3u);
  ASSERT_EQ(x.cols.size(), 4u);
  for (int p = 0; p < 3; ++p) {
    EXPECT_EQ(x.rows[p].input, 0);
    EXPECT_EQ(x.rows[p].delay, p);
  }
  EXPECT_EQ(x.cols[3].sign, -1);
  EXPECT_EQ(res.residual_delay, 2);
  EXPECT_EQ(res.index_entries, 3 + 4);
  for (const Cell& c : x.cells) EXPECT_EQ(c.value, 1);
  for (int64_t x0 : {0, 1, 5, 255}) {
    EXPECT_EQ(layout_vmm(res, {x0}, 4), (std::vector<int64_t>{7 * x0, 7 * x0, 7 * x0, -7 * x0}));
  }
  // The residual costs extra input cycles: 8 + 2 per read of its crossbar.
  const LayerStats st = map_layer(layer, &w, spec, {true, true, 0.5});
  EXPECT_EQ(st.crossbars, 1);
  EXPECT_EQ(st.residual_crossbars, 1);
  EXPECT_EQ(st.crossbar_reads, 1 * 1 * (8 + 2));
  EXPECT_EQ(st.adc_conversions, 4 * (8 + 2));
}

class ReramPlanesRandom : public testing::SeededTest {};

TEST_F(ReramPlanesRandom, MappedLayersComputeTheDenseVmmWithAndWithoutResidual) {
  const HardwareSpec spec = small_spec(8, 8);
  for (const workload::Layer& layer : {linear(37, 21), depthwise(6, 4)}) {
    SCOPED_TRACE(layer.name);
    const int64_t groups = layer.groups, rows = layer.weight_rows();
    const torch::Tensor f = torch::randn({layer.out_channels, rows});
    const quant::QuantizedTensor u = quant::quantize("w", f, 8);
    RowBudgets budgets(groups * rows);
    for (size_t i = 0; i < budgets.size(); ++i) budgets[i] = static_cast<int>(i % 4);
    const quant::QuantizedTensor q = budget_quantize(u, budgets, layer);
    std::vector<int64_t> x(groups * rows);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<int64_t>((i * 37) % 256);
    const std::vector<int64_t> dense = dense_vmm(q, groups, x);
    const LayerStats st = map_layer(layer, &q, spec, {true, true});
    for (double fill : {0.0, 0.5, 1.0}) {
      const LayerLayout lay = sme_layout(layer, q, spec, fill, true);
      EXPECT_EQ(layout_vmm(lay, x, layer.out_channels), dense) << fill;
      int64_t cells = 0, residual = 0;
      for (const PhysicalCrossbar& xb : lay.physical) {
        cells += static_cast<int64_t>(xb.cells.size());
        if (xb.residual) residual += static_cast<int64_t>(xb.cells.size());
        EXPECT_LE(static_cast<int64_t>(xb.rows.size()), spec.crossbar_rows);
        EXPECT_LE(static_cast<int64_t>(xb.cols.size()), spec.crossbar_cols);
      }
      EXPECT_EQ(cells, st.nonzero_cells);
      EXPECT_EQ(residual, lay.moved_cells);
      EXPECT_LE(lay.crossbars, st.crossbars);
      if (fill == 0.0) {
        EXPECT_EQ(lay.crossbars, st.crossbars);
      }
    }
  }
}

TEST(ReramPlanes, BadBudgetsAndMeanBudgetsGiveClearErrors) {
  const workload::Layer layer = linear(2, 2);
  const quant::QuantizedTensor u = tensor({7, 7, 7, 7}, {2, 2}, 4);
  EXPECT_NE(testing::error_of([&] {
              budget_quantize(u, {4, 0}, layer);
            }).find("outside [0, 3]"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] {
              budget_quantize(u, {0, -1}, layer);
            }).find("outside [0, 3]"),
            std::string::npos);
  EXPECT_NE(testing::error_of([&] { budget_quantize(u, {1}, layer); }).find("2 crossbar rows"),
            std::string::npos);
  workload::Workload w;
  w.model = "two-rows";
  w.input_shape = {2, 1, 1};
  w.layers = {layer};
  for (double bad : {0.0, -1.0, 3.5}) {
    EXPECT_NE(testing::error_of([&] {
                allocate_plane_budgets(w, {u}, {}, {bad, {}});
              }).find("must be in (0, 3]"),
              std::string::npos)
        << bad;
  }
  // One plane of a row costs 2 of the 4 weights: a mean budget below 0.5 prunes every row.
  EXPECT_NE(testing::error_of([&] {
              allocate_plane_budgets(w, {u}, {}, {0.25, {}});
            }).find("prunes every row"),
            std::string::npos);
}

TEST(ReramPlanes, AllocationFollowsSensitivityUnderTheMeanBudget) {
  // Two rows of equal weights; row 1 is 100x as sensitive. Mean budget 1.5 buys 3 planes of the
  // 2 outputs: all go to row 1, and without sensitivity they split 2 / 1 or 1 / 2.
  const workload::Layer layer = linear(2, 2);
  workload::Workload w;
  w.model = "two-rows";
  w.input_shape = {2, 1, 1};
  w.layers = {layer};
  const quant::QuantizedTensor u = tensor({5, 5, 5, 5}, {2, 2}, 4);
  const torch::Tensor s = torch::tensor({1.0f, 100.0f, 1.0f, 100.0f}).reshape({2, 2});
  const std::vector<RowBudgets> b = allocate_plane_budgets(w, {u}, {s}, {1.5, {}});
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0], (RowBudgets{1, 2}));  // 5 = 0b101: row 1 is exact at 2, row 0 gets the rest
  const std::vector<RowBudgets> plain = allocate_plane_budgets(w, {u}, {}, {1.5, {}});
  EXPECT_EQ(plain[0][0] + plain[0][1], 3);
  EXPECT_LE(mean_plane_budget(w, b), 1.5);
  EXPECT_EQ(allocate_plane_budgets(w, {u}, {s}, {3.0, {}})[0], (RowBudgets{2, 2}));  // exact at 2
  // Row costs of 10 weights per plane (a wider target): the mean is over 10 x 2 weights, so 1.5
  // still buys 3 planes.
  EXPECT_EQ(allocate_plane_budgets(w, {u}, {s}, {1.5, {10.0}})[0], (RowBudgets{1, 2}));
  EXPECT_THROW(allocate_plane_budgets(w, {u}, {s}, {1.5, {10.0, 1.0}}), Error);
}

TEST(ReramPlanes, BudgetsCarryOntoTheImagenetStemByTiling) {
  workload::Layer donor_stem;
  donor_stem.name = "stem";
  donor_stem.in_channels = 1;
  donor_stem.out_channels = 4;
  donor_stem.kernel_h = donor_stem.kernel_w = 2;
  donor_stem.in_h = donor_stem.in_w = 4;
  donor_stem.out_h = donor_stem.out_w = 3;
  workload::Layer target_stem = donor_stem;
  target_stem.in_channels = 3;
  workload::Workload target;
  target.model = "t";
  target.input_shape = {3, 4, 4};
  target.layers = {target_stem, linear(36, 5)};
  const std::vector<RowBudgets> out =
      budgets_for_target(target, {donor_stem, linear(36, 2)}, {{0, 1, 2, 3}, RowBudgets(36, 1)});
  EXPECT_EQ(out[0], (RowBudgets{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_EQ(out[1], RowBudgets(36, 1));
  EXPECT_THROW(
      budgets_for_target(target, {donor_stem, linear(35, 2)}, {{0, 1, 2, 3}, RowBudgets(35, 1)}),
      Error);
}

TEST(ReramPlanes, NamedBaselineFilesAreTheBuiltInBaselines) {
  const std::vector<HardwareSpec> named = named_baselines();
  ASSERT_EQ(named.size(), 4u);
  for (const HardwareSpec& b : named) {
    SCOPED_TRACE(b.name);
    const HardwareSpec file =
        load_spec(std::string(TESSERA_RERAM_SPECS) + "/baseline_" + b.name + ".json");
    EXPECT_EQ(file.to_json(), b.to_json());
    EXPECT_FALSE(b.reference.empty());
  }
  // ResNet-50 shape-only: 16-bit weights need 15 magnitude planes instead of 7, 2-bit cells 4.
  const workload::Workload r50 = resnet50_imagenet();
  auto count = [&](const HardwareSpec& s) { return map_network(r50, {}, s, {}).total.crossbars; };
  EXPECT_EQ(count(named[0]), 21900);
  EXPECT_GT(count(named[1]), 2 * count(named[0]));
  EXPECT_LT(count(named[2]), count(named[0]));
  const workload::Workload mnv2 = mobilenetv2_imagenet();
  EXPECT_GT(map_network(mnv2, {}, named[3], {}).total.crossbars,
            map_network(mnv2, {}, named[0], {}).total.crossbars);
}

TEST(ReramPlanes, PairedDropAndItsStandardError) {
  // d = reference - other over 4 images: {0, 1, 0, 1}: mean 0.5, sd sqrt(1/3).
  const PairedDrop d = paired_drop({1, 1, 0, 1}, {1, 0, 0, 0});
  EXPECT_DOUBLE_EQ(d.points, 50.0);
  EXPECT_NEAR(d.standard_error, 100 * std::sqrt(1.0 / 3.0) / 2.0, 1e-9);
  EXPECT_EQ(d.images, 4);
  EXPECT_THROW(paired_drop({1}, {1, 0}), Error);
}

}  // namespace
}  // namespace tessera::reram
