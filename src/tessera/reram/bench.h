// reram's experiments as library functions, each options in and a result out (to_json, tables):
// `reram map` (one network on one spec: stats.json, step shares, accuracy), `reram sweep`
// (crossbar size x cell bits x quantizer), `reram bench` (the paper's table beside ours, with
// the quantizer chosen on validation images), the tour step and the cached reference models.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/core/workload.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/reram/bench_donor.h"
#include "tessera/reram/bit_sparse.h"
#include "tessera/reram/imagenet.h"
#include "tessera/reram/mapping.h"
#include "tessera/reram/sme.h"
#include "tessera/reram/spec.h"
#include "tessera/train/cache.h"

namespace tessera::reram {

// ------------------------------------------------------------------------------ shared inputs

/// `reram map --mapping`: SME (the steps that are switched on) or the baseline alone.
enum class MappingKind { Sme, Baseline };
/// "sme" or "baseline".
std::string mapping_kind_name(MappingKind kind);
/// Throws tessera::Error listing the valid names.
MappingKind parse_mapping_kind(const std::string& name);

/// One bit-sparse setting of a sweep or bench, written "terms:positions" (t:K, e.g. "2:3").
struct QuantizerSetting {
  int terms = 2;      ///< t: non-zero bits kept per weight
  int positions = 3;  ///< K: allowed bit positions per scope (0 = all)
};
/// "t:K" -> setting; throws tessera::Error unless both are integers.
QuantizerSetting parse_quantizer_setting(const std::string& text);
/// setting -> "t:K".
std::string quantizer_setting_name(const QuantizerSetting& setting);
/// The quantizer of a setting with positions chosen per `scope`.
BitSparseOptions quantizer_of(const QuantizerSetting& setting, PositionScope scope);

/// Where a network and its weights come from: exactly one of model / workload / imagenet.
struct NetworkSource {
  std::string model;                        ///< Tessera model file: shapes and trained weights
  std::string workload;                     ///< workload JSON (core/workload format)
  std::optional<ImagenetNetwork> imagenet;  ///< a built-in ImageNet-shaped network
  /// With workload / imagenet: a trained model file whose weights are copied (same
  /// architecture) or whose rows are resampled onto the shapes.
  std::string donor;
  bool synthetic = false;  ///< with workload / imagenet and no donor: i.i.d. Laplace weights
  std::string spec;        ///< hardware spec JSON (empty: the documented defaults)

  /// Throws tessera::Error unless exactly one of model, workload, imagenet is given.
  void validate() const;
  HardwareSpec load_spec() const;
  nlohmann::json to_json() const;
};

/// A network ready to map.
struct Network {
  workload::Workload workload;
  std::vector<quant::QuantizedTensor> uniform;  ///< spec.weight_bits uniform; empty: shape-only
  std::optional<models::Model> model;           ///< the model of NetworkSource::model
  std::string weight_source;                    ///< where the weights came from, for reports
};

/// Loads the network of `source` with weights quantized to spec.weight_bits (seeded draws).
Network load_network(const NetworkSource& source, const HardwareSpec& spec, uint64_t seed);

// --------------------------------------------------------------------------------------- map

struct MapOptions {
  NetworkSource input;
  BitSparseOptions quantizer;
  MappingKind mapping = MappingKind::Sme;
  /// The three SME steps (with mapping = Sme); bit-sparse and squeeze-out need weight values
  /// and are skipped, with a warning, on a shape-only network.
  bool bit_sparse = true, splice = true, squeeze = true;
  bool eval = false;  ///< with input.model: Fashion-MNIST accuracy, float / uniform / bit-sparse
  int64_t eval_images = 0;     ///< first N test images (0 = all)
  int64_t recalibrate_bn = 0;  ///< with eval: re-estimate BN over N training images first
  std::string data_dir = data::kFashionMnistDir;
  uint64_t seed = 0;

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
};

/// Test accuracy of the map's model with each kind of weights.
struct MapAccuracy {
  double float_accuracy = 0, uniform = 0, bit_sparse = 0;
  int64_t images = 0;
  int64_t recalibration_images = 0;       ///< 0: the file's BN statistics
  double float_before_recalibration = 0;  ///< with recalibration_images > 0
};

struct MapResult {
  nlohmann::json config;  ///< the options and the resolved spec, for the report
  std::string weight_source;
  MappingKind mapping = MappingKind::Sme;
  SmeOptions sme;  ///< the steps that ran
  HardwareSpec spec;
  NetworkStats stats;     ///< the chosen mapping
  NetworkStats baseline;  ///< the ISAAC/NeuroSim baseline of the same weights
  double reduction = 1.0;
  double quantize_seconds = 0;
  std::vector<AblationRow> ablation;  ///< all eight step combinations; empty when shape-only
  std::optional<MapAccuracy> accuracy;

  /// stats.json: NetworkStats::to_json plus weights, quantization, baseline crossbars, reduction.
  nlohmann::json stats_json() const;
  /// The report's results: total, quantize_seconds, ablation, accuracy.
  nlohmann::json to_json() const;
  /// Per layer: shape, crossbars beside the baseline's, zero crossbars, utilization, ADC work.
  Table layer_table() const;
  /// float32 / uniform / bit-sparse accuracy and the drop (needs accuracy).
  Table accuracy_table() const;
  /// The BN re-estimation line (when it ran) and the accuracy table, as printed.
  std::string accuracy_text() const;
  /// The printed summary lines; `stats_path` is named as written.
  std::string summary(const std::string& stats_path) const;
};

/// Maps one network with the chosen steps and the baseline, the eight step combinations, and
/// with eval the accuracy. `images` reads the evaluation data (empty: Fashion-MNIST from
/// options.data_dir).
MapResult run_map(const MapOptions& options, const ImageLoader& images = {});

// ------------------------------------------------------------------------------------- sweep

struct SweepOptions {
  NetworkSource input;
  std::vector<int64_t> sizes = {64, 128, 256};  ///< square crossbar sides
  std::vector<int> cells = {1, 2};              ///< bits per cell
  std::vector<QuantizerSetting> settings = {{1, 1}, {1, 2}, {2, 2}, {2, 3}, {3, 4}, {7, 0}};
  PositionScope scope = PositionScope::Row;
  std::string accuracy_model;  ///< model file whose accuracy is measured (default: input.model)
  int64_t eval_images = 2000;  ///< first N test images (0 = all)
  std::string data_dir = data::kFashionMnistDir;
  uint64_t seed = 0;

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  nlohmann::json to_json() const;
};

/// One (crossbar, cell bits, quantizer) point.
struct SweepPoint {
  int64_t crossbar = 0;
  int cell_bits = 1;
  BitSparseOptions quantizer;
  int64_t baseline_crossbars = 0, sme_crossbars = 0;
  double accuracy = -1;  ///< -1: not measured (no model)

  double reduction() const { return crossbar_reduction(baseline_crossbars, sme_crossbars); }
};

struct SweepResult {
  nlohmann::json config;
  std::string model;  ///< the workload's name
  std::string weight_source;
  std::string accuracy_arch;  ///< the accuracy model's architecture (empty: none)
  int64_t test_images = 0;
  double uniform_accuracy = -1;    ///< uniform 8-bit accuracy (-1: none)
  std::vector<SweepPoint> points;  ///< sizes x cells x settings, in that order

  Table table() const;
  nlohmann::json to_json() const;
  /// The first printed line: network, weights, accuracy model.
  std::string summary() const;
  /// SME crossbars against accuracy, one line per crossbar size and cell width, plus the
  /// baseline points; empty when no accuracy was measured.
  std::string svg() const;
};

/// Maps every point (with a progress bar) and measures each quantizer's accuracy once.
SweepResult run_sweep(const SweepOptions& options, const ImageLoader& images = {});

// ------------------------------------------------------------------------------------- bench

/// The paper's crossbar reduction at < 0.3% accuracy drop (ResNet-50 8.7x, MobileNetV2 2.1x).
double paper_crossbar_reduction(ImagenetNetwork network);

struct BenchOptions {
  std::vector<ImagenetNetwork> networks = {ImagenetNetwork::ResNet50, ImagenetNetwork::MobileNetV2};
  /// Registry architecture trained as the ResNet-50 donor (resnet50: the same architecture;
  /// another: its rows are resampled). The MobileNetV2 donor is always mobilenetv2.
  std::string resnet_arch = "resnet50";
  std::string resnet_donor, mobilenet_donor;  ///< trained model files (skip training)
  std::string work_dir = "reram_bench";       ///< where fine-tuned models are saved
  int64_t resnet_image_size = 32;             ///< reduced Fashion-MNIST input of the donors
  int64_t mobilenet_image_size = 16;
  int64_t epochs = 2;  ///< donor training
  int64_t train_images = 10000;
  double lr = 0.05;
  int64_t val_images = 2000;  ///< from the end of the training split, never trained on
  int64_t test_images = 0;    ///< first N test images (0 = all)
  std::vector<QuantizerSetting> settings = {{3, 4}, {2, 3}, {2, 2}, {1, 2}, {1, 1}};
  PositionScope scope = PositionScope::Row;
  double max_drop_points = 0.3;                      ///< accuracy budget on the validation images
  FineTuneOptions fine_tune;                         ///< its seed is replaced by `seed`
  std::vector<QuantizerSetting> fine_tune_settings;  ///< fine-tune only these (empty: all)
  int timing_repeats = 5;                            ///< ResNet-50 mapping timing runs
  std::string spec;                                  ///< hardware spec JSON (empty: defaults)
  std::string data_dir = data::kFashionMnistDir;
  uint64_t seed = 0;

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  nlohmann::json to_json() const;
  /// The donor training of one network (resnet50 starts its residual blocks as the identity).
  DonorTraining donor_training(ImagenetNetwork network) const;
};

/// The images of one network's bench: the training split (donor training uses its first
/// train_images), validation images from its end (never trained on: the quantizer or the plane
/// budget is chosen on them) and the test images (they only report).
struct BenchData {
  data::Dataset full_train, train, val, test;
};
BenchData load_bench_data(const BenchOptions& o, int64_t image_size, const ImageLoader& images);

/// One quantizer setting of one network, without or with fine-tuning.
struct SettingResult {
  BitSparseOptions quantizer;
  bool fine_tuned = false;
  double val_accuracy = 0, test_accuracy = 0;  ///< bit-sparse weights (0 when at chance)
  int64_t crossbars = 0;                       ///< SME crossbars at ImageNet shapes
  int64_t donor_crossbars = 0;                 ///< SME crossbars of the Fashion-MNIST model
  double reduction = 0, donor_reduction = 0;
  std::string model_file;  ///< where the fine-tuned model was saved
};

/// The validation selection: among `settings` with the given fine_tuned flag, the index of the
/// largest reduction whose validation drop (100 x (val_reference - val_accuracy) points) is at
/// most `max_drop_points` (the first on ties); -1 when none is within the budget.
int choose_setting(const std::vector<SettingResult>& settings, bool fine_tuned,
                   double val_reference, double max_drop_points);

/// The ResNet-50 SME mapping timed on one core.
struct MappingTiming {
  int repeats = 0;
  int64_t layers = 0;
  double min_seconds = 0, mean_seconds = 0, mean_cpu_seconds = 0;
};

/// The bench of one ImageNet-shaped network.
struct NetworkBench {
  ImagenetNetwork network = ImagenetNetwork::ResNet50;
  std::string arch;  ///< the donor's architecture
  int64_t image_size = 0;
  std::string donor_provenance, weight_source;
  int64_t baseline_crossbars = 0, donor_baseline_crossbars = 0;
  double test_uniform = 0, val_uniform = 0;  ///< 8-bit uniform accuracy (val 0 when at chance)
  bool donor_at_chance = false;
  bool fine_tuned_control = false;  ///< the uniform model was fine-tuned as the reference
  double val_uniform_fine_tuned = 0, test_uniform_fine_tuned = 0;  ///< else = the uniform ones
  std::vector<SettingResult> settings;  ///< per setting: plain, then fine-tuned when it was
  int chosen_plain = -1, chosen_fine_tuned = -1;  ///< indices into settings (choose_setting)
  std::vector<AblationRow> ablation;  ///< step shares of the chosen setting (else the first)
  int ablation_setting = 0;           ///< index into settings
  std::optional<MappingTiming> timing;

  nlohmann::json to_json() const;
};

struct BenchResult {
  nlohmann::json config;
  std::string fine_tune;  ///< FineTuneOptions::describe()
  std::vector<NetworkBench> networks;

  /// Network, paper and our reductions (no fine-tuning / fine-tuned), drops, chosen quantizers.
  Table paper_table() const;
  /// One row per setting and network.
  Table detail_table() const;
  /// The donor lines printed before the tables.
  std::string summary() const;
  /// Step shares and the timing printed after the tables.
  std::string details() const;
  nlohmann::json to_json() const;
};

/// The paper's table beside ours: per network, a Fashion-MNIST donor (file, model cache, or
/// trained now), every setting's crossbars at ImageNet shapes and accuracy, the fine-tuned
/// settings and their control, the validation selection, the step shares and (ResNet-50) the
/// mapping time. `images` reads the data (empty: Fashion-MNIST from options.data_dir).
BenchResult run_bench(const BenchOptions& options, const ImageLoader& images = {});

// ------------------------------------------------------------------------------ tour, models

/// ResNet-50 and MobileNetV2 at ImageNet shapes with seeded i.i.d. Laplace weights (no
/// training), default spec and quantizer: baseline vs full SME crossbars.
std::vector<TourRow> tour(const TourContext& context);

/// The cached donors `reram bench` trains with its defaults.
std::vector<train::ReferenceModel> reference_models();

}  // namespace tessera::reram
