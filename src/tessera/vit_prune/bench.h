// The CP-ViT experiments as library functions: `tessera vit bench` (CP-ViT, EViT and ToMe swept
// over target keep ratios on the same trained ViT: accuracy on the test set, analytic MACs,
// latency at several batch sizes measured side by side), the optional fine-tune with pruning
// active, the FLOPs model at ImageNet size, the reference model and the tour step.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/svg.h"
#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/data/dataset.h"
#include "tessera/train/cache.h"
#include "tessera/vit_prune/cascade.h"
#include "tessera/vit_prune/flops.h"

namespace tessera::vit_prune {

/// The token-reduction methods of the bench.
enum class Method { cpvit, evit, tome };
Method parse_method(const std::string& name);  ///< "cp-vit", "evit", "tome"
std::string method_name(Method method);

/// How a target keep ratio rho (fraction of the patches left after the last reduction) becomes
/// each method's setting: CP-ViT keep_ratio = rho; EViT keep_rate = rho^(1/3) (three
/// locations); ToMe r = round((1 - rho) x patches / depth).
struct MethodSetting {
  Method method = Method::cpvit;
  double target_keep = 1.0;
  CascadeOptions cascade;
  EvitOptions evit;
  TomeOptions tome;
  std::string describe() const;  ///< "keep 0.5", "keep_rate 0.794", "r 4"
};
MethodSetting method_setting(Method method, double target_keep, const VitShape& shape,
                             const CascadeOptions& cascade, bool evit_fuse, bool tome_proportional);

struct VitBenchOptions {
  std::vector<double> keep_ratios = {1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3};
  std::vector<std::string> methods = {"cp-vit", "evit", "tome"};
  CascadeOptions cascade;  ///< keep_ratio is set by each sweep point
  bool evit_fuse = true;
  bool tome_proportional = true;
  int64_t calibration_images = 512;  ///< the first N training images calibrate CP-ViT
  int64_t eval_size = 0;             ///< test images for accuracy (0 = the whole test set)
  std::vector<int64_t> latency_batches = {1, 64};
  int64_t latency_reps = 30;  ///< timed forwards per configuration and batch (median reported)
  /// > 0: also fine-tune a copy of the model for this many steps with each method's reduction
  /// active (at each keep ratio < 1) through train::fit, and report it as "<method>+ft".
  int64_t finetune_steps = 0;
  double finetune_lr = 1e-4;
  double finetune_distill = 0.0;  ///< FinetuneOptions::distill_weight
  std::string data_dir = data::kFashionMnistDir;
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

struct VitBenchRow {
  std::string method;  ///< "unpruned", "cp-vit", "evit", "tome", or one of them + "+ft"
  double target_keep = 1.0;
  std::string setting;
  double accuracy = 0.0;
  MacCount macs;
  double macs_saved = 0.0;         ///< 1 - macs / unpruned macs
  int64_t final_tokens = 0;        ///< tokens (CLS included) in the last block's MLP
  std::vector<double> latency_ms;  ///< per latency batch (median)
  std::vector<double> speedup;     ///< unpruned latency / this latency, per batch
  nlohmann::json detail;           ///< schedule, plan
};

/// The CP-ViT accuracy at one FLOPs point next to each baseline's, interpolated along its curve.
struct EqualFlopsRow {
  double target_keep = 0.0;
  double macs_saved = 0.0;
  double cpvit_accuracy = 0.0;
  bool fine_tuned = false;                ///< the "+ft" rows of every method
  std::vector<std::string> baselines;     ///< method names
  std::vector<double> baseline_accuracy;  ///< NaN where the point is outside the curve
};

struct VitBenchResult {
  VitBenchOptions options;
  std::string model_description;
  int64_t eval_images = 0;
  std::vector<VitBenchRow> rows;  ///< rows[0] is the unpruned model
  std::vector<EqualFlopsRow> equal_flops;

  Table table() const;              ///< every row: accuracy, MACs, latency, speed-up
  Table equal_flops_table() const;  ///< CP-ViT against the baselines at equal MACs
  Table goals_table() const;        ///< the issue's measured goals: met or missed
  std::string to_string() const;
  nlohmann::json to_json() const;
  SvgPlot accuracy_flops_plot() const;
  /// Accuracy against latency at latency_batches[i].
  SvgPlot accuracy_latency_plot(size_t batch_index) const;
  /// Both plots of accuracy against latency side by side, after the FLOPs plot.
  std::string svg() const;
};

/// The sweep on a trained ViT: calibration images for CP-ViT, the test set for accuracy, and
/// (for the optional fine-tune) the training set. Throws for a model that is not a ViT.
VitBenchResult run_vit_bench(models::Model& model, const data::Dataset& train_set,
                             const data::Dataset& test_set, const VitBenchOptions& options);
/// The same on the reference model "vit-fmnist" (trained and cached when missing).
VitBenchResult run_vit_bench(const VitBenchOptions& options);

/// The FLOPs model at ImageNet size: DeiT-S at 224 px, unpruned and under each method's
/// setting for each keep ratio (CP-ViT with equal shares: there is no model to measure ranges).
struct ImagenetFlopsResult {
  VitShape shape;
  Table table{{"method", "setting", "GMACs", "saved %"}};
  nlohmann::json to_json() const;
};
ImagenetFlopsResult imagenet_flops(const std::vector<double>& keep_ratios,
                                   const CascadeOptions& cascade);

/// Options of the fine-tune with pruning active. The augmentation and label smoothing are the
/// reference recipe's (flips, no crops, 0.1), so the fine-tune sees the images the model was
/// trained on.
struct FinetuneOptions {
  int64_t steps = 300;
  double lr = 1e-4;
  int64_t batch_size = 64;
  /// RECONSTRUCTED (the paper's fine-tune uses labels only; DynamicViT distils): the weight of
  /// the KL divergence to the unpruned model's predictions (temperature 1) in
  /// (1 - w) * CE(labels) + w * KL. 0 = labels only.
  double distill_weight = 0.0;
  uint64_t seed = 0;

  void validate() const;
};
/// Fine-tunes `model` in place with `reducer` (CP-ViT, EViT or ToMe) active in every forward,
/// on the heads `kept_heads` (ReducedVit's argument; empty = all) (train::fit's loss hook runs the
/// reduced forward; AdamW, per-step cosine); with distill_weight > 0 the teacher is a frozen copy
/// of the model as it was, unreduced. Build a new ReducedVit after it: an engine's head slices are
/// copied at construction. Returns the final training loss.
double finetune_reduced(models::Model& model, const std::vector<std::vector<int64_t>>& kept_heads,
                        TokenReducer& reducer, const data::Dataset& train_set,
                        const FinetuneOptions& options);

/// Top-1 accuracy of a reduced forward over a data set (batches of 500).
double reduced_accuracy(ReducedVit& engine, TokenReducer* reducer, const data::Dataset& set);

/// The recipe of the reference ViT: 28 px Fashion-MNIST, patch 4 (49 patches), D 64, 6 blocks,
/// 4 heads, MLP ratio 2.
train::TrainRecipe reference_recipe();
/// The reference ViT from the model cache (trained first when missing, about 8 minutes).
models::Model reference_model(const std::string& data_dir);
/// "vit-fmnist".
std::vector<train::ReferenceModel> reference_models();

/// Tour row: CP-ViT at keep 0.5 on the reference ViT: accuracy on 2000 test images, MACs saved,
/// latency ratio at batch 64.
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::vit_prune
