// The NeurObfuscator experiments as library functions: the attackers (trained on random-CNN
// traces, cached, checked on held-out random networks), `tessera obfuscate bench` (sequence and
// dimension obfuscation of ResNet-18 and VGG-11 under a latency budget, the saved obfuscated
// model files, output equality on the test set), `obfuscate apply` on a model file, and the tour.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/data/dataset.h"
#include "tessera/obfuscate/attacker.h"
#include "tessera/obfuscate/ga.h"
#include "tessera/obfuscate/random_net.h"
#include "tessera/train/cache.h"

namespace tessera::obfuscate {

/// How the attackers are made: random networks, their traces, the training.
struct AttackerRecipe {
  RandomNetOptions random;
  int64_t train_nets = 2000;  ///< section 4.3 recommends >= 4000 GPU traces
  int64_t test_nets = 200;    ///< held-out random networks (other seeds)
  int64_t trace_repeats = 3;  ///< traced runs per network (median latency per step)
  AttackerOptions attacker;
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
  std::string cache_file() const;  ///< "obfuscate-attacker-<hash>.pt"
};

/// Traces of the random networks with seeds seed_base, seed_base + 1, ...
std::vector<LabelledTrace> random_traces(const AttackerRecipe& recipe, int64_t count,
                                         uint64_t seed_base);

/// The attacker of `recipe` from the cache (trained and saved first when missing).
Attacker cached_attacker(const AttackerRecipe& recipe);

/// The attacker on held-out random networks.
struct HeldOutResult {
  int64_t nets = 0;
  double mean_ler = 0;        ///< mean label error rate
  double exact_fraction = 0;  ///< sequences predicted exactly
  double mean_length = 0;     ///< mean true sequence length
  int64_t convs = 0;
  double mean_der = 0;   ///< mean |dIC|/IC + |dOC|/OC over conv steps
  double within_25 = 0;  ///< fraction of conv steps with both channels within 25%
  nlohmann::json to_json() const;
};
HeldOutResult evaluate_held_out(Attacker& attacker, const std::vector<LabelledTrace>& test);

struct ObfuscateBenchOptions {
  std::vector<std::string> models = {"resnet18", "vgg11_bn"};
  int64_t image_size = 28;  ///< Fashion-MNIST size, 1 channel, 10 classes
  double width_mult = 1.0;
  AttackerRecipe recipe;
  GaOptions seq_ga;  ///< sequence obfuscation (all knobs, every layer)
  /// Dimension obfuscation of the first 64 -> 128 conv: GA over widen, kernel, branch, dummy,
  /// schedule and decoy on that conv and its producer.
  GaOptions dim_ga;
  int64_t ga_latency_reps = 7;  ///< paired timing reps per GA evaluation
  /// Paired timing reps when the GA re-times its best candidates (GaOptions::retime_top)
  int64_t retime_reps = 41;
  int64_t final_latency_reps = 101;  ///< paired timing reps for the reported overheads
  /// Rounds of final_latency_reps paired runs; the reported overhead is the median of the
  /// rounds' ratios (one round of 101 runs read 6.2% where five later rounds read -1.2..0.7%).
  int64_t final_latency_rounds = 5;
  /// LibTorch threads while latency is timed: the GA's evaluations, its re-timing and the
  /// reported overheads (0 = the process's threads). The traces, the side channel, keep the
  /// process's threads, as the attacker's training traces did. At two threads this 2-core VM
  /// runs a batch-1 forward in two speed regimes about 2x apart that change from one round of
  /// timing to the next and move the obfuscated/clean ratio by tens of points; at one thread it
  /// does not (docs/systems/obfuscate.md, "One timing thread").
  int64_t latency_threads = 1;
  /// Test images on which the obfuscated models' outputs are compared (0 = the whole test set;
  /// data_dir "" = synthetic images).
  int64_t eval_images = 0;
  std::string data_dir = data::kFashionMnistDir;
  std::string save_dir;  ///< where the obfuscated model files go ("" = not saved)
  uint64_t seed = 0;     ///< the models' initial weights

  ObfuscateBenchOptions();
  void validate() const;
  nlohmann::json to_json() const;
  /// `recipe` with the random networks traced at the victims' input (1 x image_size x
  /// image_size), so the attacker learns the side channel at the scale it attacks.
  AttackerRecipe attacker_recipe() const;
};

/// One obfuscation result on one model.
struct ObfuscationRow {
  std::string model, mode;  ///< mode: "sequence" or "dimension"
  std::vector<int> true_sequence, clean_prediction, obfuscated_prediction;
  double clean_ler = 0, obfuscated_ler = 0;
  int64_t clean_distance = 0, obfuscated_distance = 0;  ///< edit distance to the truth
  int64_t clean_steps = 0, obfuscated_steps = 0;        ///< kernels in the trace
  std::string target;                                   ///< dimension: the conv
  double true_ic = 0, true_oc = 0, clean_ic = 0, clean_oc = 0, obf_ic = 0, obf_oc = 0;
  double clean_der = 0, obfuscated_der = 0;
  double clean_us = 0, obfuscated_us = 0, overhead = 0;  ///< paired medians, batch 1
  /// The chosen genome's overhead as the GA saw it: first (ga_latency_reps) and re-timed
  /// (retime_reps) paired timings.
  double ga_first_overhead = 0, ga_retimed_overhead = 0;
  double max_abs_diff = 0, max_rel_diff = 0, argmax_agreement = 0;
  int64_t compared_images = 0;
  int64_t active_genes = 0;
  std::vector<std::string> skipped;
  std::string model_file;
  GaResult ga;
  nlohmann::json to_json() const;
};

struct ObfuscateBenchResult {
  ObfuscateBenchOptions options;
  HeldOutResult held_out;
  bool cache_misses_available = false;
  std::vector<ObfuscationRow> rows;

  Table attacker_table() const;
  Table sequence_table() const;
  Table dimension_table() const;
  Table goals_table() const;  ///< the issue's measured goals: met or missed
  std::string to_string() const;
  nlohmann::json to_json() const;
};

ObfuscateBenchResult run_obfuscate_bench(const ObfuscateBenchOptions& options);

/// Obfuscates one model (sequence GA, then the dimension GA's genes on the first 64 -> 128 conv
/// when it has one), checks its outputs, and returns the rows; `out` gets the model file.
/// `eval_set` (may be empty) is where outputs are compared; `sequence_file` and
/// `dimension_file` (may be empty) receive the two obfuscated models. `dimension`: run the
/// dimension GA too.
std::vector<ObfuscationRow> obfuscate_model(
    models::Model& model, const std::string& name, Attacker& attacker,
    const ObfuscateBenchOptions& options, const data::Dataset& eval_set,
    const std::string& sequence_file, const std::string& dimension_file, bool dimension = true);
/// The evaluation images of the options (Fashion-MNIST test, or synthetic when data_dir is "").
data::Dataset eval_dataset(const ObfuscateBenchOptions& options);

/// No cached trained models: the attackers are not vision models (see cached_attacker).
std::vector<train::ReferenceModel> reference_models();

/// Tour row: ResNet-18 with a 16 x 10 GA (sigma 2, the top 3 re-timed with 31 paired runs) at
/// 2%: layer-sequence difference, overhead, equality on 500 test images (the cached attacker;
/// plus about 65 s to train it when missing).
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::obfuscate
