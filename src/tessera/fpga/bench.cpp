// fpga benchmarks: latency of one design with its evaluation time, the search bench with the
// baselines and the measured accuracy, the tour step.
#include "tessera/fpga/bench.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/svg.h"
#include "tessera/core/timer.h"
#include "tessera/data/dataset.h"
#include "tessera/fpga/workloads.h"
#include "tessera/models/model_io.h"
#include "tessera/train/bench.h"

namespace tessera::fpga {

AcceleratorSpec load_bench_spec(const std::string& spec_path, const std::string& device) {
  if (!spec_path.empty()) return load_spec(spec_path);
  AcceleratorSpec spec;
  spec.device = device_preset(device);
  spec.validate();
  return spec;
}

workload::Workload load_bench_workload(const std::string& workload_path) {
  return workload_path.empty() ? resnet18_imagenet() : workload::load(workload_path);
}

// ------------------------------------------------------------------------------- latency

void LatencyOptions::validate() const {
  LayerPrecision{weight_bits, activation_bits}.validate("fpga latency: --bits");
  TESSERA_CHECK(repeats >= 1, "fpga latency: repeats {} must be >= 1", repeats);
  TESSERA_CHECK(workload.empty() || model.empty(),
                "fpga latency: give a workload or a model, not both");
}

nlohmann::json LatencyOptions::to_json() const {
  return {{"spec", spec},      {"device", device},           {"workload", workload},
          {"model", model},    {"weight_bits", weight_bits}, {"activation_bits", activation_bits},
          {"repeats", repeats}};
}

Table LatencyResult::layers() const { return layer_table(gemms, design, evaluation); }

std::string LatencyResult::summary() const {
  const ResourceUsage& t = evaluation.resources.total;
  return fmt::format(
      "{} on {}: {:.3f} ms ({:.0f} cycles at {} MHz); DSP {} LUT {} BRAM {} ({}); one "
      "evaluation {:.1f} us (min {:.1f} us)\n",
      network, design.spec.device.name, evaluation.latency.ms, evaluation.latency.cycles,
      design.spec.device.clock_mhz, t.dsp, t.lut, t.bram,
      evaluation.resources.fits ? "fits" : "OVER BUDGET: " + evaluation.resources.over,
      us_per_evaluation, us_min);
}

nlohmann::json LatencyResult::to_json() const {
  return {{"network", network},
          {"design", design.to_json()},
          {"evaluation", evaluation.to_json()},
          {"us_per_evaluation", us_per_evaluation},
          {"us_min", us_min}};
}

LatencyResult run_latency(const LatencyOptions& options) {
  options.validate();
  LatencyResult r;
  const workload::Workload w = options.model.empty() ? load_bench_workload(options.workload)
                                                     : models::load(options.model)->workload();
  r.network = options.model.empty() ? w.model : options.model;
  r.gemms = gemm_shapes(w);
  r.design.name = "spec";
  r.design.spec = load_bench_spec(options.spec, options.device);
  r.design.precisions = uniform_precisions(r.gemms.size(), 0);
  for (size_t i = 0; i < r.gemms.size(); ++i) {
    r.design.precisions[i] = r.gemms[i].edge
                                 ? LayerPrecision{8, 8}
                                 : LayerPrecision{options.weight_bits, options.activation_bits};
  }
  double total_us = 0.0, lowest = std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < options.repeats; ++i) {
    Timer timer;
    r.evaluation = evaluate_design(r.gemms, r.design);
    const double us = static_cast<double>(timer.elapsed_us());
    total_us += us;
    lowest = std::min(lowest, us);
  }
  r.us_per_evaluation = total_us / static_cast<double>(options.repeats);
  r.us_min = lowest;
  return r;
}

// --------------------------------------------------------------------------------- bench

FpgaBenchOptions::FpgaBenchOptions() { data_dir = data::kFashionMnistDir; }

void FpgaBenchOptions::validate() const {
  search.validate();
  ddpg.validate();
  accuracy.validate();
  TESSERA_CHECK(imagenet || fmnist, "fpga bench: no network selected");
}

nlohmann::json FpgaBenchOptions::to_json() const {
  return {{"spec", spec},
          {"device", device},
          {"search", search.to_json()},
          {"ddpg", ddpg.to_json()},
          {"accuracy", accuracy.to_json()},
          {"imagenet", imagenet},
          {"fmnist", fmnist},
          {"measure_accuracy", measure_accuracy},
          {"data_dir", data_dir}};
}

namespace {

DesignRow make_row(const std::vector<GemmShape>& gemms, const Design& d, double dsp_ms,
                   const SearchProblem& problem) {
  const DesignEvaluation e = evaluate_design(gemms, d);
  DesignRow row;
  row.name = d.name;
  row.latency_ms = e.latency.ms;
  row.speedup = dsp_ms / e.latency.ms;
  row.resources = e.resources.total;
  row.fits = e.valid();
  row.accuracy_estimate = problem.proxy_accuracy(d, e);
  return row;
}

// Runs both searches and the baselines on one network; measures accuracy when `model` is given.
NetworkBench bench_network(const std::string& name, const std::vector<GemmShape>& gemms,
                           const FpgaBenchOptions& options, models::Model* model,
                           const data::Dataset* train_set, const data::Dataset* test_set) {
  NetworkBench nb;
  nb.network = name;
  nb.gemms = gemms;
  const AcceleratorSpec base = load_bench_spec(options.spec, options.device);
  SearchOptions search = options.search;
  if (model != nullptr) {
    nb.float_accuracy = train::evaluate(*model, *test_set).accuracy;
    search.float_accuracy = 100.0 * nb.float_accuracy;
  }
  const SearchProblem problem(gemms, base, search);
  log::info("fpga bench {}: random search, {} designs", name, search.evaluations);
  nb.random = random_search(problem, search);
  log::info("fpga bench {}: DDPG, {} designs", name, search.evaluations);
  nb.ddpg = ddpg_search(problem, search, options.ddpg);
  const SearchOutcome& best =
      nb.ddpg.best.reward >= nb.random.best.reward ? nb.ddpg.best : nb.random.best;
  nb.searched = best.design;
  nb.searched.name =
      fmt::format("N3H-Core searched ({})", &best == &nb.ddpg.best ? "DDPG" : "random");
  nb.searched_evaluation = best.evaluation;
  const Design dsp = dsp_only_design(gemms, base);
  const double dsp_ms = evaluate_design(gemms, dsp).latency.ms;
  const std::vector<Design> designs = {dsp, lut_only_design(gemms, base, 8),
                                       mix_and_match_design(gemms, base, 4), nb.searched};
  for (const Design& d : designs) nb.rows.push_back(make_row(gemms, d, dsp_ms, problem));
  if (model != nullptr && options.measure_accuracy) {
    double eight_bit = -1.0;
    for (size_t i = 0; i < designs.size(); ++i) {
      const bool all_eight = std::all_of(designs[i].precisions.begin(), designs[i].precisions.end(),
                                         [](const LayerPrecision& p) {
                                           return p.weight_bits == 8 && p.activation_bits == 8;
                                         }) &&
                             !designs[i].spec.dsp.pack_middle;
      if (all_eight && eight_bit >= 0) {
        nb.rows[i].accuracy = eight_bit;  // the same quantization as the all-DSP row
        continue;
      }
      const DesignEvaluation e = evaluate_design(gemms, designs[i]);
      log::info("fpga bench {}: accuracy of {}", name, designs[i].name);
      nb.rows[i].accuracy = quantized_accuracy(*model, quant_plan(gemms, designs[i], e), *train_set,
                                               *test_set, options.accuracy)
                                .accuracy;
      if (all_eight) eight_bit = nb.rows[i].accuracy;
    }
  }
  return nb;
}

}  // namespace

Table NetworkBench::table() const {
  Table t({"design", "latency ms", "speedup vs all-DSP", "DSP", "LUT", "BRAM", "fits", "accuracy %",
           "proxy drop"});
  for (const DesignRow& r : rows) {
    const double base = float_accuracy >= 0 ? 100.0 * float_accuracy : 0.0;
    t.add_row({r.name, fmt::format("{:.3f}", r.latency_ms), fmt::format("{:.2f}x", r.speedup),
               std::to_string(r.resources.dsp), std::to_string(r.resources.lut),
               std::to_string(r.resources.bram), r.fits ? "yes" : "NO",
               r.accuracy >= 0 ? percent(r.accuracy) : "-",
               fmt::format("{:.2f}", base - r.accuracy_estimate)});
  }
  return t;
}

Table NetworkBench::layer_table() const {
  return fpga::layer_table(gemms, searched, searched_evaluation);
}

nlohmann::json NetworkBench::to_json() const {
  nlohmann::json rows_json = nlohmann::json::array();
  for (const DesignRow& r : rows) {
    rows_json.push_back({{"name", r.name},
                         {"latency_ms", r.latency_ms},
                         {"speedup_vs_dsp", r.speedup},
                         {"resources", r.resources.to_json()},
                         {"fits", r.fits},
                         {"accuracy", r.accuracy},
                         {"accuracy_estimate", r.accuracy_estimate}});
  }
  return {{"network", network},
          {"float_accuracy", float_accuracy},
          {"designs", rows_json},
          {"random", random.to_json()},
          {"ddpg", ddpg.to_json()},
          {"searched", searched.to_json()},
          {"searched_layers", layer_table().to_json()}};
}

std::string FpgaBenchResult::svg() const {
  std::vector<std::string> plots;
  for (const NetworkBench& nb : networks) {
    SvgPlot plot("search: " + nb.network, "evaluations", "best reward");
    for (const SearchResult* s : {&nb.random, &nb.ddpg}) {
      SvgSeries series{s->searcher, {}, true};
      for (size_t i = 0; i < s->best_reward_curve.size(); ++i)
        series.points.push_back({static_cast<double>(i + 1), s->best_reward_curve[i]});
      plot.add_series(series);
    }
    plots.push_back(plot.render());
  }
  return svg_side_by_side(plots);
}

nlohmann::json FpgaBenchResult::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const NetworkBench& nb : networks) j.push_back(nb.to_json());
  return {{"networks", j}};
}

std::vector<train::ReferenceModel> reference_models() {
  std::vector<train::ReferenceModel> out;
  for (auto& m : train::reference_models())
    if (m.name == "resnet20-fmnist") out.push_back(m);
  return out;
}

FpgaBenchResult run_bench(const FpgaBenchOptions& options) {
  options.validate();
  FpgaBenchResult result;
  if (options.imagenet) {
    result.networks.push_back(bench_network("resnet18-imagenet", gemm_shapes(resnet18_imagenet()),
                                            options, nullptr, nullptr, nullptr));
  }
  if (options.fmnist) {
    models::Model model = reference_models().front().build(options.data_dir);
    model->eval();
    const int64_t side = model->config().image_size;
    const data::Dataset train_set = data::load_fashion_mnist("train", options.data_dir, side);
    const data::Dataset test_set = data::load_fashion_mnist("test", options.data_dir, side);
    result.networks.push_back(bench_network("resnet20-fmnist", gemm_shapes(model->workload()),
                                            options, &model, &train_set, &test_set));
  }
  return result;
}

std::vector<TourRow> tour(const TourContext& context) {
  LatencyOptions latency;
  latency.repeats = 200;
  const LatencyResult l = run_latency(latency);
  FpgaBenchOptions options;
  options.fmnist = false;
  options.search.evaluations = 100;
  options.search.seed = context.seed;
  const FpgaBenchResult r = run_bench(options);
  const NetworkBench& nb = r.networks.front();
  return {{"fpga: N3H-Core model, ResNet-18 ImageNet shapes on XC7Z045",
           fmt::format("one evaluation {:.0f} us; searched design {:.2f}x faster than all-DSP "
                       "(100 designs per searcher)",
                       l.us_per_evaluation, nb.rows.back().speedup),
           "1.12-1.32x faster than Mix&Match; evaluation < 1 ms (issue goal)"}};
}

}  // namespace tessera::fpga
