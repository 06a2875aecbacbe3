// `reram budgets` (issue 16): per-row plane budgets allocated by Fisher sensitivity under a mean
// budget, STE fine-tuned, mapped with the residual squeeze-out at ImageNet shapes, against every
// named baseline, with paired accuracy drops (standard errors) and the periphery cost of each
// mapping. Donors and fine-tuned models come from the model cache, so reruns only add what is new.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/reram/bench.h"
#include "tessera/reram/bench_donor.h"
#include "tessera/reram/mapping.h"
#include "tessera/reram/planes.h"

namespace tessera::reram {

struct BudgetBenchOptions {
  /// Networks, donors, images, fine-tuning, spec and seed (the t:K settings are not used).
  /// Defaults here: donors trained 3 epochs on 30,000 images, 15,000 validation images, all
  /// 10,000 test images, 300 fine-tuning steps of 64.
  BenchOptions base = defaults();
  std::vector<double> resnet_budgets = {0.6, 0.7};
  std::vector<double> mobilenet_budgets = {2.3, 2.6};
  double residual_fill = 0.5;    ///< MappingOptions::residual_fill of the SME mapping
  int64_t fisher_images = 2048;  ///< training images of the Fisher sensitivity

  static BenchOptions defaults();
  void validate() const;
  nlohmann::json to_json() const;
};

/// One mean budget of one network, fine-tuned.
struct BudgetPoint {
  double target_budget = 0;            ///< the allocation's mean budget
  double mean_budget = 0;              ///< achieved at ImageNet shapes
  LayerStats sme;                      ///< totals of the SME mapping (with residual)
  int64_t crossbars_no_residual = 0;   ///< the same weights without the residual
  PairedDrop val, test;                ///< fine-tuned vs the fine-tuned 8-bit uniform control
  PairedDrop test_before_fine_tuning;  ///< donor projected, vs the donor's 8-bit weights
  double val_accuracy = 0, test_accuracy = 0;
  std::string model_file;
};

struct BudgetNetwork {
  ImagenetNetwork network = ImagenetNetwork::ResNet50;
  std::string donor_provenance, weight_source;
  double test_uniform = 0, val_uniform = 0;  ///< the fine-tuned 8-bit uniform control
  std::vector<HardwareSpec> baseline_specs;
  std::vector<LayerStats> baselines;  ///< totals per named baseline (shape-only)
  std::vector<BudgetPoint> points;
  int chosen = -1;  ///< largest reduction with validation drop <= max_drop (-1: none)
  double map_seconds = 0, map_cpu_seconds = 0;  ///< the chosen (else last) point, one core

  nlohmann::json to_json() const;
};

struct BudgetBenchResult {
  nlohmann::json config;
  std::vector<BudgetNetwork> networks;

  /// Per network and budget: crossbars, the ratio against every named baseline, drops +- SE.
  Table ratio_table() const;
  /// Per network: each baseline and the chosen SME mapping with ADCs, conversions, shift-adds,
  /// energy and area from the spec's figures.
  Table cost_table() const;
  std::string summary() const;
  nlohmann::json to_json() const;
};

BudgetBenchResult run_budget_bench(const BudgetBenchOptions& options,
                                   const ImageLoader& images = {});

}  // namespace tessera::reram
