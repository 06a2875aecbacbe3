// The MetaGater experiments as library functions: `tessera metagater bench` (MetaGater and the
// baselines trained by federated rounds in the same engine, then adapted on >= 100 held-out test
// tasks: accuracy with a 95% interval, active channel fraction, MACs, measured batch-1 latency of
// the channel-skipping forward, and a threshold sweep of latency against the active fraction),
// the goals of issue 19, and the tour step.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/svg.h"
#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/data/dataset.h"
#include "tessera/metagater/federated.h"
#include "tessera/train/cache.h"

namespace tessera::metagater {

/// The methods of the bench (all trained by run_federated on the same nodes and tasks).
enum class Method {
  metagater,         ///< gated, federated meta-learning, two-stage one-step adaptation
  per_fedavg,        ///< plain Conv-4, federated meta-learning (Per-FedAvg / FedMeta-MAML)
  fedavg_ft,         ///< plain Conv-4, FedAvg on the joint loss, fine-tuned at the new node
  fedavg_ft_narrow,  ///< fedavg_ft with width x target_rate: the dense net at MetaGater's FLOPs
  gated_fedavg,      ///< gated, FedAvg on the joint loss (no meta-learning), then adapted
};
Method parse_method(const std::string& name);  ///< "metagater", "per-fedavg", "fedavg-ft", ...
std::string method_name(Method method);

struct MetagaterBenchOptions {
  std::vector<std::string> methods = {"metagater", "per-fedavg", "fedavg-ft", "fedavg-ft-narrow",
                                      "gated-fedavg"};
  GatedNetOptions net;  ///< ways is taken from task.ways; gated from the method
  TaskOptions task;
  LossOptions loss;
  AdaptOptions adapt;  ///< the inner update of meta-training and the adaptation at a new node
  int64_t finetune_steps = 5;  ///< FedAvg + fine-tuning: steps at lr adapt.backbone_lr
  FedOptions fed;
  int64_t train_nodes = 8;                        ///< meta-training nodes (training split)
  int64_t classes_per_node = 7;                   ///< classes each node holds (of 10)
  std::vector<int64_t> train_rotations = {0, 1};  ///< quarter turns of the training nodes
  int64_t test_nodes = 20;                        ///< held-out nodes (test split)
  std::vector<int64_t> test_rotations = {2, 3};   ///< disjoint from train_rotations
  int64_t test_tasks = 200;                       ///< >= 100: the issue's interval
  int64_t latency_images = 100;  ///< query images timed per method (batch 1, channels skipped)
  int64_t latency_reps = 5;      ///< timed calls per image (the fastest counts)
  /// MetaGater inference thresholds swept for latency against the active fraction.
  std::vector<double> thresholds = {-100.0, -1.0, 0.0, 1.0, 2.0, 4.0};
  bool synthetic = false;  ///< data::make_synthetic instead of Fashion-MNIST (tests)
  int64_t synthetic_images = 1000;
  bool cache = true;  ///< reuse trained parameters from the model cache (train/cache.h)
  std::string data_dir = data::kFashionMnistDir;
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

struct MethodRow {
  std::string method;
  double accuracy = 0.0;  ///< mean over test tasks, after adaptation
  double ci95 = 0.0;      ///< 1.96 x std / sqrt(tasks)
  double active_fraction = 1.0;
  std::vector<double> layer_active;
  double macs = 0.0;           ///< mean per query image
  double macs_ratio = 1.0;     ///< macs / the full-width dense net's
  double latency_ms = 0.0;     ///< median batch-1 forward (channels skipped)
  double train_seconds = 0.0;  ///< 0 when loaded from the cache
  int64_t dropped = 0;         ///< node-rounds dropped in training
  std::string cache_file;
  nlohmann::json to_json() const;
};

struct SweepRow {
  double threshold = 0.0;
  double accuracy = 0.0;
  double active_fraction = 0.0;
  double macs = 0.0;
  double latency_ms = 0.0;
};

struct MetagaterBenchResult {
  MetagaterBenchOptions options;
  double dense_macs = 0.0;
  std::vector<MethodRow> rows;
  std::vector<SweepRow> sweep;  ///< MetaGater only
  double sweep_spearman = 0.0;  ///< rank correlation of latency with active fraction

  const MethodRow* find(const std::string& method) const;
  Table table() const;
  Table sweep_table() const;
  Table goals_table() const;
  std::string to_string() const;
  nlohmann::json to_json() const;
  std::string svg() const;  ///< latency and accuracy against the active fraction (sweep)
};

MetagaterBenchResult run_metagater_bench(const MetagaterBenchOptions& options);

/// The nodes of a bench: training nodes (ids 0..) and held-out test nodes (ids 1000..).
std::vector<NodeSpec> train_nodes(const MetagaterBenchOptions& options);
std::vector<NodeSpec> test_nodes(const MetagaterBenchOptions& options);
/// The job template and federated options one method trains with.
JobTemplate method_job(Method method, const MetagaterBenchOptions& options);
FedOptions method_fed(Method method, const MetagaterBenchOptions& options);
/// The adaptation a method runs at a new node.
AdaptOptions method_test_adapt(Method method, const MetagaterBenchOptions& options);
/// The data of a bench: Fashion-MNIST (28 px) or synthetic; split "train" or "test".
data::Dataset bench_data(const MetagaterBenchOptions& options, const std::string& split);

/// Trains one method in process (cached when options.cache): the parameters, and the training's
/// wall time and drops (0 when loaded).
struct TrainedMethod {
  Params params;
  FedRunResult run;
  std::string cache_file;
};
TrainedMethod train_method(Method method, const MetagaterBenchOptions& options,
                           const data::Dataset& train_set);

/// The held-out tasks: task t from test node t mod test_nodes, seeded by (seed, t).
std::vector<Task> make_test_tasks(const MetagaterBenchOptions& options, const TaskSource& source);

/// Accuracy (mean, 95% interval), active channels and MACs after adaptation over tasks.
struct MethodEval {
  double accuracy = 0.0, ci95 = 0.0, active = 0.0, macs = 0.0;
  std::vector<double> layer_active;
};
MethodEval evaluate_method(const GatedNetImpl& net, const Params& p, const std::vector<Task>& tasks,
                           const AdaptOptions& adapt, const LossOptions& loss, double threshold);

/// The cache file name of a method's trained parameters ("metagater-<method>-<hash>.safetensors")
/// and whether it is cached.
std::string method_cache_name(Method method, const MetagaterBenchOptions& options);
bool method_cached(Method method, const MetagaterBenchOptions& options);

/// Mean and 1.96 x std / sqrt(n) of values.
std::pair<double, double> mean_ci95(const std::vector<double>& values);
/// Spearman rank correlation (ties get their mean rank).
double spearman(const std::vector<double>& a, const std::vector<double>& b);

/// No vision models of the registry: the trained parameters are cached files (cache_file).
std::vector<train::ReferenceModel> reference_models();

/// Tour row: MetaGater against Per-FedAvg on 100 held-out 5-way 5-shot tasks: the bench's
/// configuration when both are cached, else a small one (width 16, 40 rounds, about 40 s).
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::metagater
