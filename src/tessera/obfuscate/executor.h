// The traced executor: compiles a Net into kernel steps (conv+BN+ReLU fused or not, per node
// hint; a conv schedule per node hint) and runs them on the CPU one by one, recording per step
// the side channel: op kind, latency, bytes read and written, FLOPs and, where perf_event_open
// is allowed, hardware cache misses (research/hw_security.md 4.2, here on a CPU).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/obfuscate/net.h"

namespace tessera::obfuscate {

/// The attacker's alphabet (section 4.3, adapted): a step's op kind. CTC's blank is separate.
enum class OpLabel { conv, fc, pool, bn, relu, add, concat };
constexpr int kNumLabels = 7;
std::string label_name(OpLabel label);
/// "conv pool conv ..." for a label sequence.
std::string sequence_string(const std::vector<int>& labels);

/// Conv schedules (the CPU stand-in for AutoTVM's tiling variants, section 4.5 "schedule
/// pruning"): one function, different algorithms, latencies and memory traffic.
enum class ConvSchedule { direct, im2col, split };
constexpr int kNumSchedules = 3;
std::string schedule_name(ConvSchedule schedule);

/// One executed kernel.
struct TraceStep {
  OpLabel label = OpLabel::conv;
  std::string node;       ///< the graph node that opened the step
  double latency_us = 0;  ///< wall time of the kernel (median over the traced runs)
  double bytes_read = 0;  ///< inputs + weights (+ im2col buffer), analytic
  double bytes_written = 0;
  double flops = 0;
  double cache_misses = -1;  ///< perf_event_open PERF_COUNT_HW_CACHE_MISSES; -1 = unavailable
  /// Ground truth that only this executor knows: conv/fc input and output channels.
  int64_t in_channels = 0, out_channels = 0, kernel = 0;
};

struct Trace {
  std::vector<TraceStep> steps;
  double total_us = 0;  ///< sum of step latencies
  bool has_cache_misses = false;
  std::vector<int> labels() const;  ///< OpLabel values, in order
  nlohmann::json to_json() const;
};

/// Compiled once per network (BN folded into fused convs, constants materialised).
class Executor {
 public:
  explicit Executor(const Net& net);
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;
  /// x: [B, C, H, W] -> logits. No recording (what a deployment runs).
  torch::Tensor run(const torch::Tensor& x);
  /// Runs `repeats` >= 1 times recording each step; the step latencies (and cache misses) are
  /// medians over the runs. Checks that the output equals run()'s.
  Trace trace(const torch::Tensor& x, int repeats = 1);
  size_t n_steps() const;

  struct Step;  // defined in executor.cpp

 private:
  torch::Tensor execute(const torch::Tensor& x, std::vector<TraceStep>* record);
  std::vector<Step> steps_;
  std::vector<torch::Tensor> constants_;
  size_t n_values_ = 0;
};

/// Median wall time (microseconds) of `reps` untraced runs, after one warm-up.
double median_latency_us(Executor& executor, const torch::Tensor& x, int reps);

/// Interleaved timing of two executors (a, b, a, b, ...): medians of each, so that machine load
/// affects both alike. Returns {median_a_us, median_b_us}.
std::pair<double, double> paired_latency_us(Executor& a, Executor& b, const torch::Tensor& x,
                                            int reps);

/// The true layer sequence of a net: its trace labels with every conv fused and the default
/// schedule (the architecture an attacker wants), computed without running it.
std::vector<int> true_sequence(const Net& net);

}  // namespace tessera::obfuscate
