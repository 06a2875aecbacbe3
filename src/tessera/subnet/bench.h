// The sub-net experiments as library functions: `tessera subnet bench` (the progressive search's
// sub-nets against US-Net at equal FLOPs on one super-net, data and training budget: MACs,
// latency at batch 1 and 64, accuracy on the test set, gain, switch time against a reload), the
// cached stages it trains (noise-ranked pre-training, ours, US-Net), and the tour step.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/svg.h"
#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/data/dataset.h"
#include "tessera/subnet/ranking.h"
#include "tessera/subnet/search.h"
#include "tessera/subnet/slim_net.h"
#include "tessera/train/cache.h"

namespace tessera::subnet {

struct SubnetBenchOptions {
  SlimNetOptions net;         ///< ResNet-20-style, 16/32/64 channels, 28x28 Fashion-MNIST
  int64_t train_images = 0;   ///< the first N training images train (0: all but the val images)
  int64_t val_images = 2000;  ///< the last N training images validate the search (never trained)
  int64_t batch_size = 128;
  double lr = 0.05;  ///< SGD momentum 0.9, weight decay 5e-4, per-step cosine
  /// Steps of the shared start: the full net trained with the ranking noise (both methods
  /// start from these weights; US-Net's channels stay in their original order).
  int64_t pretrain_steps = 1200;
  NoiseRankOptions noise;
  SearchOptions search;
  /// Steps of the multi-term training of the found sub-nets. US-Net gets these plus the
  /// search's fine-tune steps: the same training budget in optimizer steps.
  int64_t train_steps = 800;
  bool distill = false;               ///< ours: in-place distillation from the full sub-net
  double usnet_min_width = 0.25;      ///< US-Net width range [min, 1]
  int64_t usnet_random_widths = 2;    ///< sandwich rule: max, min + this many random widths
  bool usnet_distill = true;          ///< US-Net: in-place distillation
  int64_t calibration_images = 2048;  ///< post-hoc BN calibration of every final sub-net (both)
  int64_t eval_size = 0;              ///< test images for accuracy (0: the whole test set)
  std::vector<int64_t> latency_batches = {1, 64};
  int64_t latency_reps = 20;  ///< timed forwards per sub-net and batch (median), round-robin
  int64_t switch_reps = 50;   ///< timed set_subnet() calls (median)
  std::string data_dir = data::kFashionMnistDir;
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

/// The three training stages' recipes (their cache keys): what determines each file's weights.
nlohmann::json pretrain_recipe(const SubnetBenchOptions& o, const std::string& data_name);
nlohmann::json ours_recipe(const SubnetBenchOptions& o, const std::string& data_name);
nlohmann::json usnet_recipe(const SubnetBenchOptions& o, const std::string& data_name,
                            int64_t usnet_steps);

/// The model files of both methods, built (and cached) when missing: pre-training with noise,
/// then ours (rank, search, multi-term training, re-selection, calibration) and US-Net (same
/// start, sandwich training for the same number of steps, widths at ours' MACs, calibration).
struct SubnetModels {
  std::string pretrain, ours, usnet;  ///< file paths
};
/// `up_to`: "pretrain", "ours" or "usnet" (all): the stages after it are not built (their paths
/// stay empty), so a long pipeline can run one stage per command.
SubnetModels prepare_models(const data::Dataset& train_set, const data::Dataset& val_set,
                            const SubnetBenchOptions& options, const std::string& up_to = "usnet");
/// prepare_models on Fashion-MNIST from options.data_dir (the bench's train/val split).
SubnetModels prepare_models(const SubnetBenchOptions& options, const std::string& up_to);

struct SubnetBenchRow {
  int64_t index = 0;
  std::string ours_spec, usnet_spec;
  int64_t ours_macs = 0, usnet_macs = 0;
  double ours_accuracy = 0.0, usnet_accuracy = 0.0;
  std::vector<double> ours_ms, usnet_ms;  ///< median latency per latency batch
  double gain() const { return ours_accuracy - usnet_accuracy; }
};

struct SubnetBenchResult {
  SubnetBenchOptions options;
  std::string model_description;
  int64_t eval_images = 0;
  int64_t full_macs = 0;
  std::vector<SubnetBenchRow> rows;  ///< one per sub-net of ours, largest first
  double switch_us = 0.0;            ///< median set_subnet() time
  double switch_max_us = 0.0;
  double reload_ms = 0.0;  ///< median time to load the model file (what switching avoids)
  int64_t finetunes = 0, finetune_steps = 0, usnet_steps = 0;
  nlohmann::json search, reselect;  ///< the search log and the re-selection notes

  Table table() const;        ///< per sub-net: MACs, latency, accuracy ours / US-Net, gain
  Table goals_table() const;  ///< the issue's measured goals: met or missed
  std::string to_string() const;
  nlohmann::json to_json() const;
  SvgPlot accuracy_flops_plot() const;
};

/// The bench on given data (tests pass synthetic sets): models from prepare_models, accuracy of
/// every sub-net of both on `test_set` (first eval_size), latency, switch and reload time.
SubnetBenchResult run_subnet_bench(const data::Dataset& train_set, const data::Dataset& val_set,
                                   const data::Dataset& test_set,
                                   const SubnetBenchOptions& options);
/// The same on Fashion-MNIST from options.data_dir (train/val split of the training set).
SubnetBenchResult run_subnet_bench(const SubnetBenchOptions& options);

/// "subnet-pretrain", "subnet-ours", "subnet-usnet": the default bench's cached stages
/// (`tessera models train-reference subnet-ours` builds one stage per run).
std::vector<train::ReferenceFile> reference_files();

/// Tour row: the default bench's cached models on 2000 test images, latency at batch 64 (builds
/// the models first when they are missing, about 20 minutes on 2 cores).
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::subnet
