// fpga's experiments as library functions: `fpga latency` (one design on a network, per-layer
// table, the evaluation time), `fpga bench` (random search and DDPG, the baselines, accuracy of
// the precisions on the trained Fashion-MNIST model, for ResNet-18 ImageNet shapes and the
// Fashion-MNIST model), the tour step and the cached reference models.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/fpga/bench_accuracy.h"
#include "tessera/fpga/ddpg.h"
#include "tessera/fpga/design.h"
#include "tessera/fpga/search.h"
#include "tessera/train/cache.h"

namespace tessera::fpga {

/// The accelerator spec: a spec file, else the named device preset with default cores.
AcceleratorSpec load_bench_spec(const std::string& spec_path, const std::string& device);
/// A workload file, else the built-in ResNet-18 ImageNet shapes.
workload::Workload load_bench_workload(const std::string& workload_path);

struct LatencyOptions {
  std::string spec;  ///< spec JSON (empty: `device` with default cores)
  std::string device = "xc7z045";
  std::string workload;  ///< workload JSON (empty: `model`, else ResNet-18 ImageNet shapes)
  std::string model;     ///< a model file (Tessera or TorchScript) whose workload is used
  int weight_bits = 4, activation_bits = 4;  ///< LUT-core bits of the middle layers
  int64_t repeats = 1000;                    ///< timed evaluations
  void validate() const;
  nlohmann::json to_json() const;
};

struct LatencyResult {
  std::string network;
  std::vector<GemmShape> gemms;
  Design design;
  DesignEvaluation evaluation;
  double us_per_evaluation = 0.0;  ///< mean over the repeats (balanced splits + resources)
  double us_min = 0.0;
  Table layers() const;
  std::string summary() const;
  nlohmann::json to_json() const;
};

/// Evaluates the spec's design (first/last layers 8-bit) and times `repeats` evaluations.
LatencyResult run_latency(const LatencyOptions& options);

struct FpgaBenchOptions {
  std::string spec;
  std::string device = "xc7z045";
  SearchOptions search;
  DdpgOptions ddpg;
  AccuracyOptions accuracy;
  bool imagenet = true;  ///< the ResNet-18 ImageNet-shaped network (latency only)
  bool fmnist = true;    ///< the Fashion-MNIST reference model (latency and accuracy)
  bool measure_accuracy = true;
  std::string data_dir;  ///< Fashion-MNIST
  FpgaBenchOptions();
  void validate() const;
  nlohmann::json to_json() const;
};

/// One design of one network, next to the all-DSP design.
struct DesignRow {
  std::string name;
  double latency_ms = 0.0;
  double speedup = 0.0;  ///< all-DSP latency / this latency
  ResourceUsage resources;
  bool fits = false;
  double accuracy = -1.0;          ///< measured top-1 in [0, 1]; -1 when not measured
  double accuracy_estimate = 0.0;  ///< the proxy of the search (percent)
};

struct NetworkBench {
  std::string network;
  std::vector<GemmShape> gemms;
  SearchResult random, ddpg;
  Design searched;  ///< the better of the two searches
  DesignEvaluation searched_evaluation;
  std::vector<DesignRow> rows;  ///< all-DSP, all-LUT, Mix&Match-style, searched
  double float_accuracy = -1.0;
  Table table() const;
  Table layer_table() const;
  nlohmann::json to_json() const;
};

struct FpgaBenchResult {
  std::vector<NetworkBench> networks;
  /// Best reward against evaluations, random and DDPG, one plot per network side by side.
  std::string svg() const;
  nlohmann::json to_json() const;
};

FpgaBenchResult run_bench(const FpgaBenchOptions& options);

/// The cached models the bench uses: the foundation's ResNet-20 on Fashion-MNIST.
std::vector<train::ReferenceModel> reference_models();

/// ResNet-18 ImageNet shapes on the XC7Z045: one evaluation's time, and a short search's latency
/// against the all-DSP design (no training).
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::fpga
