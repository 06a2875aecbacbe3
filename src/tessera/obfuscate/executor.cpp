// The traced executor (see executor.h): compile (fusion, schedules), run, record.
#include "tessera/obfuscate/executor.h"

#include <fmt/format.h>
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "tessera/core/error.h"
#include "tessera/core/stats.h"

namespace tessera::obfuscate {

using models::GraphNode;
using models::GraphOp;

std::string label_name(OpLabel label) {
  static const char* names[] = {"conv", "fc", "pool", "bn", "relu", "add", "concat"};
  return names[static_cast<int>(label)];
}

std::string sequence_string(const std::vector<int>& labels) {
  std::string out;
  for (int l : labels) out += (out.empty() ? "" : " ") + label_name(static_cast<OpLabel>(l));
  return out;
}

std::string schedule_name(ConvSchedule schedule) {
  static const char* names[] = {"direct", "im2col", "split"};
  return names[static_cast<int>(schedule)];
}

std::vector<int> Trace::labels() const {
  std::vector<int> out;
  for (const auto& s : steps) out.push_back(static_cast<int>(s.label));
  return out;
}

nlohmann::json Trace::to_json() const {
  nlohmann::json steps_json = nlohmann::json::array();
  for (const auto& s : steps) {
    steps_json.push_back({{"op", label_name(s.label)},
                          {"node", s.node},
                          {"latency_us", s.latency_us},
                          {"bytes_read", s.bytes_read},
                          {"bytes_written", s.bytes_written},
                          {"flops", s.flops},
                          {"cache_misses", s.cache_misses}});
  }
  return {{"total_us", total_us}, {"has_cache_misses", has_cache_misses}, {"steps", steps_json}};
}

struct Executor::Step {
  GraphOp op = GraphOp::ReLU;
  bool traced = true;
  OpLabel label = OpLabel::relu;
  std::string node;
  std::vector<int64_t> inputs;  ///< value indices, -1 = the model input
  int64_t output = 0;
  torch::Tensor weight, bias, mean, var;
  bool relu = false;  ///< fused ReLU
  ConvSchedule schedule = ConvSchedule::direct;
  int64_t kernel = 1, stride = 1, padding = 0, groups = 1;
  bool ceil_mode = false;
  int64_t in_channels = 0, out_channels = 0;
};

namespace {

bool hint_fuse(const GraphNode& n) { return n.hints.value("fuse", true); }

ConvSchedule hint_schedule(const GraphNode& n) {
  const int s = n.hints.value("schedule", 0);
  TESSERA_CHECK(s >= 0 && s < kNumSchedules, "node '{}' has an unknown schedule {}", n.name, s);
  return static_cast<ConvSchedule>(s);
}

OpLabel label_of(GraphOp op) {
  switch (op) {
    case GraphOp::Conv:
      return OpLabel::conv;
    case GraphOp::Linear:
      return OpLabel::fc;
    case GraphOp::MaxPool:
    case GraphOp::GlobalAvgPool:
      return OpLabel::pool;
    case GraphOp::BatchNorm:
      return OpLabel::bn;
    case GraphOp::Add:
      return OpLabel::add;
    case GraphOp::Concat:
      return OpLabel::concat;
    default:
      return OpLabel::relu;
  }
}

// A hardware cache-miss counter for the calling thread, when the kernel allows it.
class PerfCounter {
 public:
  PerfCounter() {
    perf_event_attr pe;
    std::memset(&pe, 0, sizeof(pe));
    pe.type = PERF_TYPE_HARDWARE;
    pe.size = sizeof(pe);
    pe.config = PERF_COUNT_HW_CACHE_MISSES;
    pe.exclude_kernel = 1;
    pe.exclude_hv = 1;
    fd_ = static_cast<int>(syscall(__NR_perf_event_open, &pe, 0, -1, -1, 0));
  }
  ~PerfCounter() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  double read_count() const {
    uint64_t value = 0;
    if (fd_ < 0 || ::read(fd_, &value, sizeof(value)) != sizeof(value)) return -1;
    return static_cast<double>(value);
  }

 private:
  int fd_ = -1;
};

double now_ns() {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                 std::chrono::steady_clock::now().time_since_epoch())
                                 .count());
}

double nbytes(const torch::Tensor& t) {
  return t.defined() ? static_cast<double>(t.numel() * t.element_size()) : 0.0;
}

}  // namespace

Executor::Executor(const Net& net) {
  const auto& nodes = net.spec.nodes;
  const auto consumers = net.spec.consumers();
  net.shapes();  // validates
  n_values_ = nodes.size();
  constants_.resize(nodes.size());
  std::vector<bool> done(nodes.size(), false);
  const auto sole = [&](size_t i, GraphOp op) -> int64_t {
    if (consumers[i].size() != 1) return -1;
    const int64_t c = consumers[i][0];
    return nodes[c].op == op ? c : -1;
  };
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (done[i]) continue;
    const GraphNode& n = nodes[i];
    const auto t = [&](const std::string& field) { return net.tensor(n.name + "." + field); };
    Step s;
    s.op = n.op;
    s.label = label_of(n.op);
    s.node = n.name;
    s.inputs = n.inputs;
    s.output = static_cast<int64_t>(i);
    s.kernel = n.kernel;
    s.stride = n.stride;
    s.padding = n.padding;
    s.groups = n.groups;
    s.ceil_mode = n.ceil_mode;
    s.in_channels = n.in_channels;
    s.out_channels = n.out_channels;
    if (n.op == GraphOp::Constant) {
      constants_[i] = t("value").unsqueeze(0).contiguous();
      continue;
    }
    if (n.op == GraphOp::Flatten) s.traced = false;  // a view, no kernel
    if (n.op == GraphOp::Conv) {
      s.weight = t("weight");
      if (n.bias) s.bias = t("bias");
      s.schedule = n.groups == 1 ? hint_schedule(n) : ConvSchedule::direct;
      const int64_t bn = hint_fuse(n) ? sole(i, GraphOp::BatchNorm) : -1;
      if (bn >= 0) {  // fold BN: w' = w g / sqrt(v + eps), b' = (b - m) g / sqrt(v + eps) + beta
        const auto& b = nodes[bn];
        const torch::Tensor scale = net.tensor(b.name + ".weight") /
                                    torch::sqrt(net.tensor(b.name + ".running_var") + 1e-5);
        const torch::Tensor bias0 = n.bias ? s.bias : torch::zeros({n.out_channels});
        s.weight = (s.weight * scale.view({-1, 1, 1, 1})).contiguous();
        s.bias =
            (bias0 - net.tensor(b.name + ".running_mean")) * scale + net.tensor(b.name + ".bias");
        done[bn] = true;
        s.output = bn;
        const int64_t relu = sole(bn, GraphOp::ReLU);
        if (relu >= 0) {
          s.relu = true;
          done[relu] = true;
          s.output = relu;
        }
      }
    } else if (n.op == GraphOp::BatchNorm) {
      s.weight = t("weight");
      s.bias = t("bias");
      s.mean = t("running_mean");
      s.var = t("running_var");
    } else if (n.op == GraphOp::Linear) {
      s.weight = t("weight");
      s.bias = t("bias");
      const int64_t relu = hint_fuse(n) ? sole(i, GraphOp::ReLU) : -1;
      if (relu >= 0) {
        s.relu = true;
        done[relu] = true;
        s.output = relu;
      }
    }
    steps_.push_back(std::move(s));
  }
}

namespace {

torch::Tensor run_conv(const Executor::Step& s, const torch::Tensor& x, double* extra_bytes) {
  switch (s.schedule) {
    case ConvSchedule::direct:
      return torch::conv2d(x, s.weight, s.bias, s.stride, s.padding, 1, s.groups);
    case ConvSchedule::im2col: {
      const int64_t h = (x.size(2) + 2 * s.padding - s.kernel) / s.stride + 1;
      const int64_t w = (x.size(3) + 2 * s.padding - s.kernel) / s.stride + 1;
      const torch::Tensor cols = torch::im2col(x, {s.kernel, s.kernel}, {1, 1},
                                               {s.padding, s.padding}, {s.stride, s.stride});
      *extra_bytes = 2.0 * nbytes(cols);  // written, then read by the GEMM
      torch::Tensor y = torch::matmul(s.weight.view({s.weight.size(0), -1}), cols);
      if (s.bias.defined()) y = y + s.bias.view({1, -1, 1});
      return y.view({x.size(0), s.weight.size(0), h, w});
    }
    case ConvSchedule::split: {
      const int64_t half = s.weight.size(0) / 2;
      if (half == 0) return torch::conv2d(x, s.weight, s.bias, s.stride, s.padding, 1, 1);
      const auto part = [&](int64_t lo, int64_t hi) {
        return torch::conv2d(x, s.weight.slice(0, lo, hi),
                             s.bias.defined() ? s.bias.slice(0, lo, hi) : torch::Tensor(), s.stride,
                             s.padding, 1, 1);
      };
      *extra_bytes = nbytes(x);  // the input is read twice
      return torch::cat({part(0, half), part(half, s.weight.size(0))}, 1);
    }
  }
  return {};
}

}  // namespace

torch::Tensor Executor::execute(const torch::Tensor& x, std::vector<TraceStep>* record) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> v = constants_;
  PerfCounter* perf = nullptr;
  PerfCounter counter;
  if (record != nullptr && counter.ok()) perf = &counter;
  for (const Step& s : steps_) {
    const auto in = [&](size_t k) -> const torch::Tensor& {
      return s.inputs[k] < 0 ? x : v[s.inputs[k]];
    };
    const double misses0 = perf ? perf->read_count() : -1;
    const double t0 = record ? now_ns() : 0;
    double extra = 0;
    torch::Tensor y;
    switch (s.op) {
      case GraphOp::Conv:
        y = run_conv(s, in(0), &extra);
        if (s.relu) y.relu_();
        break;
      case GraphOp::BatchNorm:
        y = torch::batch_norm(in(0), s.weight, s.bias, s.mean, s.var, false, 0.0, 1e-5, false);
        break;
      case GraphOp::ReLU:
        y = torch::relu(in(0));
        break;
      case GraphOp::MaxPool:
        y = torch::max_pool2d(in(0), s.kernel, s.stride, s.padding, 1, s.ceil_mode);
        break;
      case GraphOp::GlobalAvgPool:
        y = torch::adaptive_avg_pool2d(in(0), {1, 1});
        break;
      case GraphOp::Flatten:
        y = in(0).flatten(1);
        break;
      case GraphOp::Linear:
        y = torch::linear(in(0), s.weight, s.bias);
        if (s.relu) y.relu_();
        break;
      case GraphOp::Add:
        y = torch::add(in(0), in(1));
        break;
      case GraphOp::Concat: {
        std::vector<torch::Tensor> parts;
        for (size_t k = 0; k < s.inputs.size(); ++k) parts.push_back(in(k));
        y = torch::cat(parts, 1);
        break;
      }
      case GraphOp::Constant:
        break;
    }
    if (record && s.traced) {
      TraceStep r;
      r.latency_us = (now_ns() - t0) * 1e-3;
      if (perf) r.cache_misses = perf->read_count() - misses0;
      r.label = s.label;
      r.node = s.node;
      for (size_t k = 0; k < s.inputs.size(); ++k) r.bytes_read += nbytes(in(k));
      r.bytes_read += nbytes(s.weight) + nbytes(s.bias) + nbytes(s.mean) + nbytes(s.var) + extra;
      r.bytes_written = nbytes(y) + extra / 2;
      if (s.op == GraphOp::Conv) {
        r.flops = 2.0 * static_cast<double>(y.numel()) * static_cast<double>(s.weight[0].numel());
      } else if (s.op == GraphOp::Linear) {
        r.flops = 2.0 * static_cast<double>(y.numel()) * static_cast<double>(s.weight.size(1));
      } else {
        r.flops = static_cast<double>(y.numel());
      }
      r.in_channels = s.in_channels;
      r.out_channels = s.out_channels;
      r.kernel = s.op == GraphOp::Conv ? s.kernel : 0;
      record->push_back(r);
    }
    v[s.output] = std::move(y);
  }
  return v[n_values_ - 1];
}

Executor::~Executor() = default;
size_t Executor::n_steps() const { return steps_.size(); }
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

torch::Tensor Executor::run(const torch::Tensor& x) { return execute(x, nullptr); }

Trace Executor::trace(const torch::Tensor& x, int repeats) {
  TESSERA_CHECK(repeats >= 1, "trace repeats must be >= 1, got {}", repeats);
  std::vector<std::vector<TraceStep>> runs(static_cast<size_t>(repeats));
  for (auto& r : runs) execute(x, &r);
  Trace trace;
  trace.steps = runs[0];
  for (size_t i = 0; i < trace.steps.size(); ++i) {
    std::vector<double> lat, miss;
    for (const auto& r : runs) {
      lat.push_back(r[i].latency_us);
      miss.push_back(r[i].cache_misses);
    }
    trace.steps[i].latency_us = median(lat);
    trace.steps[i].cache_misses = median(miss);
    trace.total_us += trace.steps[i].latency_us;
  }
  trace.has_cache_misses = !trace.steps.empty() && trace.steps[0].cache_misses >= 0;
  return trace;
}

double median_latency_us(Executor& executor, const torch::Tensor& x, int reps) {
  TESSERA_CHECK(reps >= 1, "latency reps must be >= 1, got {}", reps);
  executor.run(x);
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_ns();
    executor.run(x);
    times.push_back((now_ns() - t0) * 1e-3);
  }
  return median(times);
}

std::pair<double, double> paired_latency_us(Executor& a, Executor& b, const torch::Tensor& x,
                                            int reps) {
  TESSERA_CHECK(reps >= 1, "latency reps must be >= 1, got {}", reps);
  a.run(x);
  b.run(x);
  std::vector<double> ta, tb;
  for (int r = 0; r < reps; ++r) {
    double t0 = now_ns();
    a.run(x);
    ta.push_back((now_ns() - t0) * 1e-3);
    t0 = now_ns();
    b.run(x);
    tb.push_back((now_ns() - t0) * 1e-3);
  }
  return {median(ta), median(tb)};
}

std::vector<int> true_sequence(const Net& net) {
  Net clean = net;
  for (auto& n : clean.spec.nodes) n.hints = nlohmann::json::object();
  Executor executor(clean);
  const torch::Tensor x =
      torch::zeros({1, net.input_shape[0], net.input_shape[1], net.input_shape[2]});
  return executor.trace(x).labels();
}

}  // namespace tessera::obfuscate
