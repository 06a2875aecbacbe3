// The bitflip experiments as library functions: `tessera bitflip bench` (PBFA, random flips,
// RADAR per G and CRC32 over many seeds, with the trial aggregation), its reference models, the
// accuracy and detection plots, and the tour step.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/bitflip/attack.h"
#include "tessera/bitflip/experiment.h"
#include "tessera/core/svg.h"
#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/data/dataset.h"
#include "tessera/train/cache.h"

namespace tessera::bitflip {

/// Mean and sample standard deviation of a list (sd 0 for one value; everything 0 for none).
struct MeanSd {
  double mean = 0.0;
  double sd = 0.0;
  int64_t n = 0;

  /// "mean ± sd" of the values times `scale` (100: percentages), or "-" when there are none.
  std::string format(double scale = 100.0, int digits = 2) const;
};
MeanSd mean_sd(const std::vector<double>& values);

/// RADAR at one group size, over the trials of one model.
struct RadarSummary {
  int64_t group_size = 0;
  int64_t n_flips = 0;                     ///< flips dumped onto the protected model per trial
  std::vector<double> detected;            ///< per trial: flips whose group was flagged
  std::vector<double> flagged_groups;      ///< per trial
  std::vector<double> shared;              ///< per trial: flips sharing a group with another
  std::vector<double> recovered_accuracy;  ///< per trial: zero the flagged groups (paper)
  std::vector<double> marked_accuracy;     ///< per trial: zero the MSB-marked weights (ours)
  std::vector<double> restored_accuracy;   ///< per trial: flip the fitting marked MSB back (ours)
  std::vector<double> oracle_accuracy;     ///< per trial: zero only the truly flipped weights
  MeanSd detected_stats, flagged_stats, recovered_stats, marked_stats, restored_stats, oracle_stats;
  double detection_rate = 0.0;    ///< mean detected / n_flips, in [0, 1]
  double storage_fraction = 0.0;  ///< signature bits / weight bits
};

/// The headline statistics of a model's trials (what the bench's tables print).
struct TrialSummary {
  int64_t n_trials = 0;
  /// Accuracy after 5, 10 and all PBFA flips, over the trials that flipped that many.
  MeanSd pbfa_5, pbfa_10, pbfa_end;
  MeanSd random_end;  ///< after all random flips (trials with random flips)
  /// The first flip count at which the accuracy is <= random_level, over the trials that got
  /// there; n_reached_random of n_trials did.
  MeanSd flips_to_random;
  int64_t n_reached_random = 0;
  MeanSd attacked;  ///< after the flips dumped onto the defenses, undefended
  /// Mean accuracy after flip i + 1, over the trials that flipped that many (for the plot).
  std::vector<double> pbfa_curve, random_curve;
  std::vector<RadarSummary> radar;  ///< one per group size, in trial order
  MeanSd crc_layers, crc_zeroed, crc_zero_accuracy, crc_reload_accuracy;
};

/// Aggregates trials of one model (all run with the same TrialOptions). Throws tessera::Error
/// when there are no trials or their group sizes differ.
TrialSummary summarize_trials(const std::vector<TrialResult>& trials, double random_level);

struct BenchOptions {
  std::vector<std::string> archs = {"resnet20", "vgg11_bn"};  ///< registry names
  double vgg_width = 0.25;                                    ///< width multiplier of VGG models
  int64_t epochs = 3;  ///< training epochs per model (model cache recipe)
  /// ResNet-20 is the foundation's cached reference model "resnet20-fmnist" (6 epochs, from
  /// data_dir when it must be built) instead of one trained with this bench's recipe.
  bool resnet20_reference = true;
  int64_t train_subset = 0;  ///< train on (and draw attack batches from) the first N (0 = all)
  /// Rounds per model (attack batch, RADAR key, random flips; the paper's tables average 10).
  /// 0 runs only the overhead timing and the evasion experiment.
  int64_t n_seeds = 10;
  uint64_t seed = 0;                ///< training seed; trial s uses seed + 1000 (s + 1)
  int64_t eval_size = 2000;         ///< test images for accuracies (0 = all)
  int64_t evasion_trials = 200000;  ///< cancelling-pair trials per G (0 = skip)
  int64_t overhead_batch = 128;     ///< second batch size of the overhead timing (after 1)
  int64_t overhead_reps = 20;       ///< timing repetitions
  double random_level = 0.11;       ///< accuracy counted as random guessing (10 classes)
  TrialOptions trial;
  std::string data_dir = data::kFashionMnistDir;  ///< Fashion-MNIST (run_bench(options) only)

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  nlohmann::json to_json() const;
};

/// The data a bench runs on: the training set (also the PBFA attack pool) and the test set.
struct BenchData {
  std::string name = "fashion-mnist";  ///< part of the model cache key
  data::Dataset train;
  data::Dataset test;
};
/// Fashion-MNIST from `dir`, zero-padded to 32x32.
BenchData load_bench_data(const std::string& dir);

/// The training recipe of `arch` in the bench (its model cache key): 1 x 32 x 32 inputs, 10
/// classes, SGD lr 0.05 cosine, crop and flip, `epochs`, the first `train_subset` images.
train::TrainRecipe bench_recipe(const std::string& arch, const BenchOptions& options,
                                const std::string& data_name = "fashion-mnist");
/// The trained float model of `arch` from the model cache, trained on data.train first when it
/// is missing (the test set's accuracy is logged after each epoch).
models::Model bench_model(const std::string& arch, const BenchOptions& options,
                          const BenchData& data);

/// Check overhead at one batch size with one kernel (fused_check.h).
struct OverheadRow {
  int64_t batch = 0;
  CheckKernel kernel = CheckKernel::kScalar;
  OverheadResult timing;
};

/// Everything the bench measured on one model.
struct ModelBench {
  std::string label;  ///< the architecture, with its width when it is not 1
  double float_accuracy = 0.0;
  double quantized_accuracy = 0.0;  ///< 8-bit, before any flip
  std::vector<TrialResult> trials;
  TrialSummary summary;
  std::vector<OverheadRow> overhead;   ///< batch 1 and overhead_batch
  std::vector<EvasionResult> evasion;  ///< one per G (empty when evasion_trials = 0)

  nlohmann::json to_json() const;
};

/// The bench on one trained float model (its weights are replaced by their 8-bit values, as
/// quantize_model does): quantize to 8 bits, run n_seeds trials
/// with attack batches drawn from `attack_pool` and accuracies on `eval_set`, aggregate, time
/// the check, run the evasion experiment. Shows a progress bar over the trials.
ModelBench bench_one_model(const std::string& label, const models::Model& model,
                           const data::Dataset& attack_pool, const data::Dataset& eval_set,
                           const BenchOptions& options);

struct BenchResult {
  BenchOptions options;
  int64_t train_images = 0;  ///< training images used (and attack pool size)
  int64_t eval_images = 0;   ///< test images the accuracies are measured on
  std::vector<ModelBench> models;

  tessera::Table attack_table() const;    ///< PBFA against random flips
  tessera::Table radar_table() const;     ///< RADAR per G after the dumped flips
  tessera::Table crc_table() const;       ///< CRC32 per layer on the same flips
  tessera::Table overhead_table() const;  ///< run-time check overhead
  tessera::Table evasion_table() const;   ///< stretch: cancelling pairs without the secret
  /// One line per round whose PBFA accuracy stayed above random_level: why the search stopped
  /// (iterations without a loss rise, the attack batch already broken, re-flipped weights).
  std::string stuck_rounds() const;
  /// Every table under its heading, as `tessera bitflip bench` prints them.
  std::string to_string() const;
  /// Per model (by label) the accuracies, RADAR and evasion lists and the per-seed curves, plus
  /// every table.
  nlohmann::json to_json() const;
  /// Mean PBFA and random-flip accuracy (%) against the number of flips, per model.
  tessera::SvgPlot accuracy_plot() const;
  /// RADAR detection rate (% of the dumped flips) against the group size G, per model.
  tessera::SvgPlot detection_plot() const;
};

/// The whole bench on `data`: each architecture's cached model, then bench_one_model.
BenchResult run_bench(const BenchOptions& options, const BenchData& data);
/// Same on Fashion-MNIST from options.data_dir.
BenchResult run_bench(const BenchOptions& options);

/// Why one round's PBFA did not reach `random_level` (empty when it did).
std::string stop_reason(const TrialResult& trial, double random_level);

/// The accuracy (%) after 0 (clean), 1, 2, ... flips as a plot series.
tessera::SvgSeries accuracy_series(const std::string& name, double clean_accuracy,
                                   const std::vector<double>& accuracy_after);

/// The reference models the bench (default options) and the tour use: "bitflip-resnet20",
/// "bitflip-vgg11-x0.25" and the foundation's "resnet20-fmnist".
std::vector<train::ReferenceModel> reference_models();

/// What the tour runs on a clean 8-bit model: enough flips for PBFA to show on a trained model,
/// RADAR on the first 10 as in the paper.
struct TourTrialOptions {
  int64_t n_flips = 20;           ///< PBFA and random flips
  int64_t n_defended_flips = 10;  ///< dumped onto RADAR (the paper's 10-flip setting)
  int64_t group_size = 8;
};
/// One trial on `clean` and the tour's row describing it (`what` names the model).
TourRow tour_row(const QuantizedModel& clean, const data::Dataset& attack_pool,
                 const data::Dataset& test_set, uint64_t seed, const std::string& what,
                 const TourTrialOptions& options = {});
/// The tour step: the foundation's ResNet-20 reference model ("resnet20-fmnist", from the model
/// cache), 8-bit, tour_row on the first 1000 test images with seed + 1.
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::bitflip
