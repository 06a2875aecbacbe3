// The MetaGater bench: train each method by federated rounds, adapt on held-out tasks, measure
// accuracy, active channels, MACs and batch-1 latency; the threshold sweep; goals; tour.
#include "tessera/metagater/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"

namespace tessera::metagater {

namespace {

const std::vector<std::pair<Method, std::string>>& method_names() {
  static const std::vector<std::pair<Method, std::string>> names = {
      {Method::metagater, "metagater"},
      {Method::per_fedavg, "per-fedavg"},
      {Method::fedavg_ft, "fedavg-ft"},
      {Method::fedavg_ft_narrow, "fedavg-ft-narrow"},
      {Method::gated_fedavg, "gated-fedavg"}};
  return names;
}

bool is_gated(Method m) { return m == Method::metagater || m == Method::gated_fedavg; }
bool is_meta(Method m) { return m == Method::metagater || m == Method::per_fedavg; }

std::string fmt_ms(double ms) { return fmt::format("{:.3f}", ms); }

// Batch-1 latency (ms) of the channel-skipping forward: per query image the fastest of `reps`
// calls, the median over `images` images of the tasks (each task adapted on its support set).
double skip_latency(const GatedNetImpl& net, const Params& p, const std::vector<Task>& tasks,
                    const AdaptOptions& adapt, const LossOptions& loss, double threshold,
                    int64_t images, int64_t reps) {
  std::vector<double> times;
  for (const auto& task : tasks) {
    if (static_cast<int64_t>(times.size()) >= images) break;
    const Adapted a = adapt_for_inference(net, p, task, adapt, loss, threshold);
    torch::NoGradGuard no_grad;
    for (int64_t i = 0; i < task.query_x.size(0); ++i) {
      const torch::Tensor x = task.query_x.narrow(0, i, 1);
      net.forward_skip(a.params, x, a.stats, threshold);  // warm
      double best = 1e300;  // the fastest of `reps` calls: the least disturbed by other load
      for (int64_t r = 0; r < reps; ++r) {
        const Timer timer;
        const torch::Tensor out = net.forward_skip(a.params, x, a.stats, threshold);
        best = std::min(best, static_cast<double>(timer.elapsed_us()) * 1e-3);
      }
      times.push_back(best);
      if (static_cast<int64_t>(times.size()) >= images) break;
    }
  }
  std::sort(times.begin(), times.end());
  return times.empty() ? 0.0 : times[times.size() / 2];
}

Params params_from_file(const safetensors::File& file, const GatedNetOptions& net) {
  net::Message m;
  for (const auto& [name, t] : file.tensors) m.add(name, t);
  m.method = "cache";
  return decode_params(m, net);
}

safetensors::File params_to_file(const Params& p, const nlohmann::json& recipe) {
  net::Message m;
  encode_params(m, p);
  safetensors::File file;
  file.tensors = m.tensors;
  file.metadata["tessera.metagater"] = recipe.dump();
  return file;
}

}  // namespace

Method parse_method(const std::string& name) {
  for (const auto& [m, n] : method_names())
    if (n == name) return m;
  TESSERA_CHECK(false,
                "unknown method '{}' (metagater, per-fedavg, fedavg-ft, fedavg-ft-narrow, "
                "gated-fedavg)",
                name);
  return Method::metagater;
}

std::string method_name(Method method) {
  for (const auto& [m, n] : method_names())
    if (m == method) return n;
  return "?";
}

void MetagaterBenchOptions::validate() const {
  TESSERA_CHECK(!methods.empty(), "bench: no methods");
  for (const auto& m : methods) parse_method(m);
  GatedNetOptions n = net;
  n.ways = task.ways;
  n.validate();
  task.validate();
  loss.validate();
  adapt.validate(true);
  fed.validate();
  TESSERA_CHECK(finetune_steps >= 1, "bench: finetune_steps must be >= 1 (got {})", finetune_steps);
  TESSERA_CHECK(train_nodes >= 1 && test_nodes >= 1, "bench: need training and test nodes");
  TESSERA_CHECK(classes_per_node >= task.ways && classes_per_node <= 10,
                "bench: a task has {} ways, more than the {} classes a node holds (of 10)",
                task.ways, classes_per_node);
  TESSERA_CHECK(latency_reps >= 1, "bench: latency_reps must be >= 1 (got {})", latency_reps);
  TESSERA_CHECK(test_tasks >= 1 && latency_images >= 1,
                "bench: test_tasks and latency_images "
                "must be >= 1");
  for (int64_t r : train_rotations)
    for (int64_t s : test_rotations)
      TESSERA_CHECK(r != s, "bench: rotation {} is both a training and a test rotation", 90 * r);
  TESSERA_CHECK(!thresholds.empty(), "bench: no thresholds to sweep");
  TESSERA_CHECK(synthetic || net.image_size == 28,
                "bench: Fashion-MNIST runs at 28 px (got image_size {})", net.image_size);
}

nlohmann::json MetagaterBenchOptions::to_json() const {
  return {{"methods", methods},
          {"net", net.to_json()},
          {"task", task.to_json()},
          {"loss", loss.to_json()},
          {"adapt", adapt.to_json()},
          {"finetune_steps", finetune_steps},
          {"fed", fed.to_json()},
          {"train_nodes", train_nodes},
          {"classes_per_node", classes_per_node},
          {"train_rotations_quarter_turns", train_rotations},
          {"test_nodes", test_nodes},
          {"test_rotations_quarter_turns", test_rotations},
          {"test_tasks", test_tasks},
          {"latency_images", latency_images},
          {"latency_reps", latency_reps},
          {"thresholds", thresholds},
          {"synthetic", synthetic},
          {"synthetic_images", synthetic_images},
          {"seed", seed}};
}

nlohmann::json MethodRow::to_json() const {
  return {{"method", method},
          {"accuracy", accuracy},
          {"ci95", ci95},
          {"active_fraction", active_fraction},
          {"layer_active", layer_active},
          {"macs", macs},
          {"macs_ratio", macs_ratio},
          {"latency_ms", latency_ms},
          {"train_seconds", train_seconds},
          {"dropped", dropped},
          {"cache_file", cache_file}};
}

std::vector<NodeSpec> train_nodes(const MetagaterBenchOptions& o) {
  return make_nodes(o.train_nodes, o.classes_per_node, 10, o.train_rotations, 0, o.seed);
}

std::vector<NodeSpec> test_nodes(const MetagaterBenchOptions& o) {
  return make_nodes(o.test_nodes, o.classes_per_node, 10, o.test_rotations, 1000, o.seed);
}

JobTemplate method_job(Method method, const MetagaterBenchOptions& o) {
  JobTemplate job;
  job.net = o.net;
  job.net.ways = o.task.ways;
  job.net.gated = is_gated(method);
  if (method == Method::fedavg_ft_narrow) {
    job.net.width = std::max<int64_t>(
        1,
        static_cast<int64_t>(std::lround(static_cast<double>(o.net.width) * o.loss.target_rate)));
  }
  job.task = o.task;
  job.loss = o.loss;
  job.adapt = o.adapt;
  return job;
}

FedOptions method_fed(Method method, const MetagaterBenchOptions& o) {
  FedOptions fed = o.fed;
  fed.seed = o.seed;
  fed.local.meta = is_meta(method);
  return fed;
}

AdaptOptions method_test_adapt(Method method, const MetagaterBenchOptions& o) {
  AdaptOptions a = o.adapt;
  if (method == Method::fedavg_ft || method == Method::fedavg_ft_narrow) a.steps = o.finetune_steps;
  return a;
}

data::Dataset bench_data(const MetagaterBenchOptions& o, const std::string& split) {
  if (o.synthetic) {
    return data::make_synthetic(o.synthetic_images, o.net.in_channels, o.net.image_size, 10,
                                o.seed + (split == "train" ? 1 : 2));
  }
  return data::load_fashion_mnist(split, o.data_dir, 28);
}

namespace {

nlohmann::json method_recipe(Method method, const MetagaterBenchOptions& o) {
  const JobTemplate job = method_job(method, o);
  return {{"method", method_name(method)},
          {"net", job.net.to_json()},
          {"task", job.task.to_json()},
          {"loss", job.loss.to_json()},
          {"adapt", job.adapt.to_json()},
          {"fed", method_fed(method, o).to_json()},
          {"train_nodes", o.train_nodes},
          {"classes_per_node", o.classes_per_node},
          {"train_rotations", o.train_rotations},
          {"data", o.synthetic ? "synthetic" : "fashion-mnist"},
          {"synthetic_images", o.synthetic ? o.synthetic_images : 0}};
}

}  // namespace

std::string method_cache_name(Method method, const MetagaterBenchOptions& o) {
  return train::hash_key("metagater-" + method_name(method), method_recipe(method, o)) +
         ".safetensors";
}

bool method_cached(Method method, const MetagaterBenchOptions& o) {
  return file_exists(train::cached_file_path(method_cache_name(method, o)));
}

TrainedMethod train_method(Method method, const MetagaterBenchOptions& o,
                           const data::Dataset& train_set) {
  const JobTemplate job = method_job(method, o);
  const FedOptions fed = method_fed(method, o);
  const auto nodes = train_nodes(o);
  const nlohmann::json recipe = method_recipe(method, o);
  TrainedMethod out;
  const auto train = [&] {
    seed_everything(o.seed);
    GatedNet net(job.net);
    auto source = std::make_shared<TaskSource>(train_set);
    log::info("metagater: training {} ({} rounds x {} nodes)", method_name(method), fed.rounds,
              fed.nodes_per_round);
    out.run = run_federated(job, nodes, in_process_links(source, nodes.size()),
                            net->params().clone(), fed);
    out.params = out.run.params;
  };
  if (!o.cache) {
    train();
    return out;
  }
  out.cache_file = train::cached_file(method_cache_name(method, o), [&](const std::string& path) {
    train();
    safetensors::save(path, params_to_file(out.params, recipe));
  });
  if (out.params.backbone.empty()) {
    out.params = params_from_file(safetensors::load(out.cache_file), job.net);
  }
  return out;
}

std::vector<Task> make_test_tasks(const MetagaterBenchOptions& o, const TaskSource& source) {
  const auto nodes = test_nodes(o);
  std::vector<Task> tasks;
  for (int64_t t = 0; t < o.test_tasks; ++t) {
    auto rng = make_rng(o.seed, 0x74657374ULL + static_cast<uint64_t>(t));
    tasks.push_back(source.sample(nodes[static_cast<size_t>(t % o.test_nodes)], o.task, rng));
  }
  return tasks;
}

MethodEval evaluate_method(const GatedNetImpl& net, const Params& p, const std::vector<Task>& tasks,
                           const AdaptOptions& adapt, const LossOptions& loss, double threshold) {
  std::vector<double> accuracy;
  MethodEval e;
  e.layer_active.assign(static_cast<size_t>(net.options().layers), 0.0);
  for (const auto& task : tasks) {
    const TaskEval t = evaluate_task(net, p, task, adapt, loss, threshold);
    accuracy.push_back(t.accuracy);
    e.macs += t.macs;
    for (size_t l = 0; l < e.layer_active.size(); ++l) e.layer_active[l] += t.active_fraction[l];
  }
  const auto n = static_cast<double>(tasks.size());
  std::tie(e.accuracy, e.ci95) = mean_ci95(accuracy);
  e.macs /= n;
  for (auto& a : e.layer_active) {
    a /= n;
    e.active += a / static_cast<double>(e.layer_active.size());
  }
  return e;
}

std::pair<double, double> mean_ci95(const std::vector<double>& values) {
  TESSERA_CHECK(!values.empty(), "mean_ci95: no values");
  double mean = 0.0;
  for (double v : values) mean += v;
  mean /= static_cast<double>(values.size());
  if (values.size() < 2) return {mean, 0.0};
  double var = 0.0;
  for (double v : values) var += (v - mean) * (v - mean);
  var /= static_cast<double>(values.size() - 1);
  return {mean, 1.96 * std::sqrt(var / static_cast<double>(values.size()))};
}

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  TESSERA_CHECK(a.size() == b.size() && a.size() >= 2, "spearman: need two equal-length series");
  const auto ranks = [](const std::vector<double>& v) {
    std::vector<size_t> order(v.size());
    for (size_t i = 0; i < v.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return v[x] < v[y]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < order.size();) {
      size_t j = i;
      while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
      for (size_t k = i; k <= j; ++k) r[order[k]] = 0.5 * static_cast<double>(i + j);
      i = j + 1;
    }
    return r;
  };
  const auto ra = ranks(a), rb = ranks(b);
  const auto [ma, ca] = mean_ci95(ra);
  const auto [mb, cb] = mean_ci95(rb);
  (void)ca;
  (void)cb;
  double num = 0.0, da = 0.0, db = 0.0;
  for (size_t i = 0; i < ra.size(); ++i) {
    num += (ra[i] - ma) * (rb[i] - mb);
    da += (ra[i] - ma) * (ra[i] - ma);
    db += (rb[i] - mb) * (rb[i] - mb);
  }
  return da == 0.0 || db == 0.0 ? 0.0 : num / std::sqrt(da * db);
}

MetagaterBenchResult run_metagater_bench(const MetagaterBenchOptions& options) {
  options.validate();
  MetagaterBenchResult result;
  result.options = options;
  const data::Dataset train_set = bench_data(options, "train");
  const TaskSource test_source(bench_data(options, "test"));
  const std::vector<Task> tasks = make_test_tasks(options, test_source);
  for (const auto& name : options.methods) {
    const Method method = parse_method(name);
    const TrainedMethod trained = train_method(method, options, train_set);
    const JobTemplate job = method_job(method, options);
    const GatedNet net(job.net);
    const AdaptOptions adapt = method_test_adapt(method, options);
    const MethodEval e = evaluate_method(*net, trained.params, tasks, adapt, options.loss, 0.0);
    if (result.dense_macs == 0.0) {
      GatedNetOptions dense = job.net;
      dense.width = options.net.width;
      result.dense_macs = GatedNet(dense)->dense_macs();
    }
    MethodRow row;
    row.method = name;
    row.accuracy = e.accuracy;
    row.ci95 = e.ci95;
    row.active_fraction = e.active;
    row.layer_active = e.layer_active;
    row.macs = e.macs;
    row.macs_ratio = e.macs / result.dense_macs;
    row.latency_ms = skip_latency(*net, trained.params, tasks, adapt, options.loss, 0.0,
                                  options.latency_images, options.latency_reps);
    row.train_seconds = trained.run.seconds;
    row.dropped = trained.run.dropped;
    row.cache_file = trained.cache_file;
    result.rows.push_back(row);
    if (method != Method::metagater) continue;
    std::vector<double> active, latency;
    for (double threshold : options.thresholds) {
      const MethodEval s =
          evaluate_method(*net, trained.params, tasks, adapt, options.loss, threshold);
      SweepRow r{threshold, s.accuracy, s.active, s.macs,
                 skip_latency(*net, trained.params, tasks, adapt, options.loss, threshold,
                              options.latency_images, options.latency_reps)};
      result.sweep.push_back(r);
      active.push_back(r.active_fraction);
      latency.push_back(r.latency_ms);
    }
    if (active.size() >= 2) result.sweep_spearman = spearman(active, latency);
  }
  return result;
}

const MethodRow* MetagaterBenchResult::find(const std::string& method) const {
  for (const auto& r : rows)
    if (r.method == method) return &r;
  return nullptr;
}

Table MetagaterBenchResult::table() const {
  Table t({"method", "accuracy %", "95% CI", "active channels %", "MMACs / image",
           "MACs % of dense", "latency ms (batch 1)", "train s"});
  for (const auto& r : rows) {
    t.add_row({r.method, percent(r.accuracy), "+-" + percent(r.ci95), percent(r.active_fraction, 1),
               fmt::format("{:.3f}", r.macs * 1e-6), percent(r.macs_ratio, 1), fmt_ms(r.latency_ms),
               fmt::format("{:.1f}", r.train_seconds)});
  }
  return t;
}

Table MetagaterBenchResult::sweep_table() const {
  Table t({"threshold", "accuracy %", "active channels %", "MMACs / image", "latency ms"});
  for (const auto& r : sweep) {
    t.add_row({fmt::format("{:g}", r.threshold), percent(r.accuracy), percent(r.active_fraction, 1),
               fmt::format("{:.3f}", r.macs * 1e-6), fmt_ms(r.latency_ms)});
  }
  return t;
}

Table MetagaterBenchResult::goals_table() const {
  Table t({"goal", "measured", "status"});
  const MethodRow* mg = find("metagater");
  const auto status = [](bool met) { return std::string(met ? "met" : "missed"); };
  if (mg != nullptr) {
    if (const MethodRow* pf = find("per-fedavg")) {
      const double ratio = mg->macs / pf->macs;
      const bool met = mg->accuracy >= pf->accuracy && ratio <= 0.40;
      // A shortfall smaller than the interval of the difference is a statistical tie.
      const bool tie = mg->accuracy < pf->accuracy && ratio <= 0.40 &&
                       pf->accuracy - mg->accuracy < std::hypot(mg->ci95, pf->ci95);
      t.add_row({"accuracy >= Per-FedAvg at <= 40% of its FLOPs",
                 fmt::format("{} vs {} %, MACs {} % of Per-FedAvg's", percent(mg->accuracy),
                             percent(pf->accuracy), percent(ratio, 1)),
                 met ? "met" : (tie ? "missed by less than the 95% interval" : "missed")});
    }
    for (const char* other : {"fedavg-ft-narrow", "gated-fedavg", "fedavg-ft"}) {
      if (const MethodRow* b = find(other)) {
        t.add_row({fmt::format("beats {} (MACs {} % vs {} % of dense)", other,
                               percent(mg->macs_ratio, 1), percent(b->macs_ratio, 1)),
                   fmt::format("{} vs {} %", percent(mg->accuracy), percent(b->accuracy)),
                   status(mg->accuracy > b->accuracy)});
      }
    }
  }
  if (sweep.size() >= 2) {
    t.add_row({"latency falls with the active fraction (threshold sweep)",
               fmt::format("Spearman(active, latency) = {:.2f} over {} points", sweep_spearman,
                           sweep.size()),
               status(sweep_spearman >= 0.8)});
  }
  return t;
}

std::string MetagaterBenchResult::to_string() const {
  return fmt::format(
      "{}-way {}-shot tasks ({} queries/class), {} held-out test tasks from rotations not seen in "
      "meta-training; dense Conv-4 {:.3f} MMACs/image\n{}\nMetaGater threshold sweep\n{}\nGoals "
      "(issue 19)\n{}",
      options.task.ways, options.task.shots, options.task.queries, options.test_tasks,
      dense_macs * 1e-6, table().to_string(), sweep_table().to_string(), goals_table().to_string());
}

nlohmann::json MetagaterBenchResult::to_json() const {
  nlohmann::json rows_json = nlohmann::json::array();
  for (const auto& r : rows) rows_json.push_back(r.to_json());
  nlohmann::json sweep_json = nlohmann::json::array();
  for (const auto& r : sweep)
    sweep_json.push_back({{"threshold", r.threshold},
                          {"accuracy", r.accuracy},
                          {"active_fraction", r.active_fraction},
                          {"macs", r.macs},
                          {"latency_ms", r.latency_ms}});
  return {{"dense_macs", dense_macs},
          {"methods", rows_json},
          {"sweep", sweep_json},
          {"sweep_spearman", sweep_spearman},
          {"goals", goals_table().to_json()}};
}

std::string MetagaterBenchResult::svg() const {
  SvgPlot latency("MetaGater: latency against active channels", "active channels (fraction)",
                  "batch-1 latency (ms)");
  SvgPlot accuracy("MetaGater: accuracy against active channels", "active channels (fraction)",
                   "accuracy after adaptation");
  SvgSeries l{"metagater (threshold sweep)", {}, true}, a{"metagater (threshold sweep)", {}, true};
  for (const auto& r : sweep) {
    l.points.emplace_back(r.active_fraction, r.latency_ms);
    a.points.emplace_back(r.active_fraction, r.accuracy);
  }
  std::sort(l.points.begin(), l.points.end());
  std::sort(a.points.begin(), a.points.end());
  latency.add_series(l);
  accuracy.add_series(a);
  for (const auto& r : rows) {
    if (r.method == "metagater") continue;
    accuracy.add_series({r.method, {{r.active_fraction, r.accuracy}}, false});
    latency.add_series({r.method, {{r.active_fraction, r.latency_ms}}, false});
  }
  return svg_side_by_side({accuracy.render(), latency.render()});
}

std::vector<train::ReferenceModel> reference_models() { return {}; }

std::vector<TourRow> tour(const TourContext& context) {
  // The bench's own configuration when `metagater bench` has cached its two models; otherwise a
  // small one that trains in about 40 s (width 16, 40 rounds).
  MetagaterBenchOptions o;
  o.methods = {"metagater", "per-fedavg"};
  o.data_dir = context.data_dir;
  o.seed = context.seed;
  const bool full = method_cached(Method::metagater, o) && method_cached(Method::per_fedavg, o);
  if (!full) {
    o.net.width = 16;
    o.fed.rounds = 40;
  }
  o.test_tasks = 100;
  o.latency_images = 50;
  o.thresholds = {-100.0, 0.0};
  const auto r = run_metagater_bench(o);
  const MethodRow* mg = r.find("metagater");
  const MethodRow* pf = r.find("per-fedavg");
  return {{"metagater",
           fmt::format("5-way 5-shot, 100 unseen tasks ({}): {} +- {} % at {} % of Per-FedAvg's "
                       "MACs (Per-FedAvg {} %)",
                       full ? "bench config" : "small config, width 16, 40 rounds",
                       percent(mg->accuracy, 1), percent(mg->ci95, 1),
                       percent(mg->macs / pf->macs, 0), percent(pf->accuracy, 1)),
           "one-step adapted gated net; no numbers in the abstract"}};
}

}  // namespace tessera::metagater
