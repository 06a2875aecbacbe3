// The plane-budget bench: donor (model cache), Fisher sensitivity, per-budget allocation and STE
// fine-tuning (cached), accuracy with paired standard errors, crossbars at ImageNet shapes
// against every named baseline, and the periphery cost of each mapping.
#include "tessera/reram/bench_budget.h"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/runtime.h"
#include "tessera/core/seed.h"
#include "tessera/models/model_io.h"
#include "tessera/train/cache.h"

namespace tessera::reram {
namespace {

// A fine-tuned model through the model cache: the donor's file and what was done to it are the
// recipe, so a rerun reuses every fine-tuning that finished.
models::Model cached_fine_tune(models::Model& donor, const std::string& donor_file,
                               const FineTuneOptions& ft, const nlohmann::json& what,
                               int64_t train_images, const std::function<models::Model()>& run,
                               std::string& path) {
  train::TrainRecipe recipe;
  recipe.arch = donor->config();
  recipe.options = ft.train_options("fine-tune");
  recipe.train_images = train_images;
  recipe.extra = {{"reram_fine_tune", what}, {"donor", donor_file}};
  path = train::cached_path(recipe);
  return train::cached_model(recipe, run);
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Context {
  const BudgetBenchOptions& options;
  const HardwareSpec& spec;
  const BenchData& data;
  const FineTuneOptions& ft;
  workload::Workload target, donor_workload;
  std::string donor_file;
  std::vector<torch::Tensor> fisher;
  std::vector<uint8_t> val_reference, test_reference, test_donor;
  std::vector<quant::QuantizedTensor> donor_uniform;
};

// The deployed ImageNet-shaped weights of a fine-tuned model and its target budgets.
std::vector<quant::QuantizedTensor> target_weights(const Context& c, models::Model& m,
                                                   const std::vector<RowBudgets>& budgets,
                                                   std::vector<RowBudgets>& target_budgets) {
  const int bits = c.spec.weight_bits;
  const auto uniform = quantize_all(
      c.target, imagenet_weights(c.target, m, m->config().name, c.options.base.seed).weights, bits);
  target_budgets = budgets_for_target(c.target, c.donor_workload.weighted_layers(), budgets);
  return budget_quantize_all(c.target, uniform, target_budgets);
}

// The allocation with the mean over the ImageNet-shaped weights: a donor row costs the target's
// cells per donor row (the 1000-class FC, the tiled 3-channel stem).
std::vector<RowBudgets> allocate(const Context& c, double budget) {
  BudgetAllocation a{budget, {}};
  const auto target = c.target.weighted_layers(), donor = c.donor_workload.weighted_layers();
  for (size_t i = 0; i < donor.size() && i < target.size(); ++i) {
    const int64_t groups = donor[i].kind == workload::OpKind::Conv2d ? donor[i].groups : 1;
    a.row_cost.push_back(static_cast<double>(target[i].weight_count()) /
                         static_cast<double>(groups * donor[i].weight_rows()));
  }
  return allocate_plane_budgets(c.donor_workload, c.donor_uniform, c.fisher, a);
}

BudgetPoint run_point(const Context& c, models::Model& donor, double budget) {
  BudgetPoint p;
  p.target_budget = budget;
  const std::vector<RowBudgets> budgets = allocate(c, budget);
  const int bits = c.spec.weight_bits;
  const WeightProjection project = [&budgets](const workload::Workload& w,
                                              const std::vector<quant::QuantizedTensor>& u) {
    return budget_quantize_all(w, u, budgets);
  };
  p.test_before_fine_tuning = paired_drop(
      c.test_donor, correct_images(donor, project(c.donor_workload, c.donor_uniform), c.data.test));
  const nlohmann::json what = {
      {"mean_plane_budget", budget}, {"fisher_images", c.options.fisher_images}, {"bits", bits}};
  const std::string label = fmt::format("fine-tune {} budget {}", donor->config().name, budget);
  models::Model tuned = cached_fine_tune(
      donor, c.donor_file, c.ft, what, c.options.base.train_images,
      [&] { return fine_tune_projected(donor, bits, project, c.data.train, c.ft, label); },
      p.model_file);
  tuned->eval();
  const auto deployed = project(c.donor_workload, quantize_model(tuned, c.donor_workload, bits));
  const auto val_hits = correct_images(tuned, deployed, c.data.val);
  const auto test_hits = correct_images(tuned, deployed, c.data.test);
  p.val = paired_drop(c.val_reference, val_hits);
  p.test = paired_drop(c.test_reference, test_hits);
  p.val_accuracy = std::count(val_hits.begin(), val_hits.end(), 1) / double(val_hits.size());
  p.test_accuracy = std::count(test_hits.begin(), test_hits.end(), 1) / double(test_hits.size());
  std::vector<RowBudgets> target_budgets;
  const auto sparse = target_weights(c, tuned, budgets, target_budgets);
  p.mean_budget = mean_plane_budget(c.target, target_budgets);
  MappingOptions sme{true, true, c.options.residual_fill};
  p.sme = map_network(c.target, sparse, c.spec, sme).total;
  p.crossbars_no_residual = map_network(c.target, sparse, c.spec, {true, true}).total.crossbars;
  return p;
}

// The SME mapping of the chosen point timed on one core (LibTorch pinned to one thread).
void time_point(BudgetNetwork& nb, const Context& c, models::Model& tuned,
                const std::vector<RowBudgets>& budgets) {
  std::vector<RowBudgets> target_budgets;
  const auto sparse = target_weights(c, tuned, budgets, target_budgets);
  const ScopedThreads one_thread(1);
  const double cpu = thread_cpu_seconds();
  const NetworkStats net =
      map_network(c.target, sparse, c.spec, {true, true, c.options.residual_fill});
  nb.map_cpu_seconds = thread_cpu_seconds() - cpu;
  nb.map_seconds = net.map_seconds;
}

BudgetNetwork bench_network(const BudgetBenchOptions& o, const HardwareSpec& spec,
                            const FineTuneOptions& ft, ImagenetNetwork network,
                            const ImageLoader& images) {
  BudgetNetwork nb;
  nb.network = network;
  const DonorTraining training = o.base.donor_training(network);
  const BenchData data = load_bench_data(o.base, training.image_size, images);
  const std::string& file =
      network == ImagenetNetwork::ResNet50 ? o.base.resnet_donor : o.base.mobilenet_donor;
  Donor donor = load_or_train_donor(file, training, data.full_train);
  nb.donor_provenance = donor.provenance;
  Context c{o,
            spec,
            data,
            ft,
            imagenet_workload(network),
            donor.model->workload(),
            std::filesystem::path(
                file.empty() ? train::cached_path(training.recipe(data.full_train.size())) : file)
                .filename()
                .string(),
            {},
            {},
            {},
            {},
            {}};
  const int bits = spec.weight_bits;
  c.donor_uniform = quantize_model(donor.model, c.donor_workload, bits);
  c.test_donor = correct_images(donor.model, c.donor_uniform, data.test);
  std::string control_file;
  models::Model control = cached_fine_tune(
      donor.model, c.donor_file, ft, {{"uniform_bits", bits}}, o.base.train_images,
      [&] {
        return fine_tune_projected(donor.model, bits, {}, data.train, ft, "fine-tune uniform");
      },
      control_file);
  control->eval();
  const auto control_q = quantize_model(control, c.donor_workload, bits);
  c.val_reference = correct_images(control, control_q, data.val);
  c.test_reference = correct_images(control, control_q, data.test);
  nb.val_uniform = std::count(c.val_reference.begin(), c.val_reference.end(), 1) /
                   double(c.val_reference.size());
  nb.test_uniform = std::count(c.test_reference.begin(), c.test_reference.end(), 1) /
                    double(c.test_reference.size());
  c.fisher = fisher_sensitivity(donor.model, data.train, o.fisher_images);
  const ImagenetWeights weights =
      imagenet_weights(c.target, donor.model, training.arch, o.base.seed);
  TESSERA_CHECK(weights.same_architecture,
                "budgets: the {} donor must have the architecture of the ImageNet-shaped network "
                "(the row budgets are carried over layer by layer): {}",
                imagenet_network_name(network), weights.source);
  nb.weight_source = weights.source;
  nb.baseline_specs = named_baselines();
  for (const HardwareSpec& b : nb.baseline_specs)
    nb.baselines.push_back(map_network(c.target, {}, b, {}).total);
  const auto& budgets_list =
      network == ImagenetNetwork::ResNet50 ? o.resnet_budgets : o.mobilenet_budgets;
  for (double budget : budgets_list) {
    log::info("reram budgets {}: mean plane budget {}", imagenet_network_name(network), budget);
    nb.points.push_back(run_point(c, donor.model, budget));
  }
  for (size_t i = 0; i < nb.points.size(); ++i) {
    const BudgetPoint& p = nb.points[i];
    if (p.val.points > o.base.max_drop_points) continue;
    if (nb.chosen < 0 || p.sme.crossbars < nb.points[nb.chosen].sme.crossbars)
      nb.chosen = static_cast<int>(i);
  }
  const BudgetPoint& timed = nb.points[nb.chosen >= 0 ? nb.chosen : nb.points.size() - 1];
  models::Model tuned = models::load(timed.model_file);
  time_point(nb, c, tuned, allocate(c, timed.target_budget));
  return nb;
}

std::string drop_text(const PairedDrop& d) {
  return fmt::format("{:.2f} +- {:.2f}", d.points, d.standard_error);
}

}  // namespace

BenchOptions BudgetBenchOptions::defaults() {
  BenchOptions b;
  b.epochs = 3;
  b.train_images = 30000;
  b.val_images = 15000;  // SE of a paired drop ~0.13 points: resolves 0.3 at 2 SE
  b.test_images = 0;
  return b;
}

void BudgetBenchOptions::validate() const {
  base.validate();
  TESSERA_CHECK(residual_fill >= 0 && residual_fill <= 1,
                "budgets: residual_fill = {} must be in [0, 1]", residual_fill);
  TESSERA_CHECK(fisher_images > 0, "budgets: fisher_images must be positive, got {}",
                fisher_images);
  for (ImagenetNetwork n : base.networks) {
    const auto& list = n == ImagenetNetwork::ResNet50 ? resnet_budgets : mobilenet_budgets;
    TESSERA_CHECK(!list.empty(), "budgets: no mean budget for {}", imagenet_network_name(n));
    for (double b : list) BudgetAllocation{b, {}}.validate();
  }
}

nlohmann::json BudgetBenchOptions::to_json() const {
  nlohmann::json j = base.to_json();
  j.erase("settings");
  j.erase("fine_tune_settings");
  j["resnet_budgets"] = resnet_budgets;
  j["mobilenet_budgets"] = mobilenet_budgets;
  j["residual_fill"] = residual_fill;
  j["fisher_images"] = fisher_images;
  return j;
}

BudgetBenchResult run_budget_bench(const BudgetBenchOptions& options, const ImageLoader& images) {
  options.validate();
  seed_everything(options.base.seed);
  HardwareSpec spec =
      options.base.spec.empty() ? named_baselines().front() : load_spec(options.base.spec);
  FineTuneOptions ft = options.base.fine_tune;
  ft.seed = options.base.seed;
  const ImageLoader& loader = images ? images : fashion_mnist_loader(options.base.data_dir);
  BudgetBenchResult result;
  for (ImagenetNetwork network : options.base.networks)
    result.networks.push_back(bench_network(options, spec, ft, network, loader));
  result.config = options.to_json();
  result.config["spec"] = spec.to_json();
  return result;
}

namespace {

nlohmann::json drop_json(const PairedDrop& d) {
  return {{"points", d.points}, {"standard_error", d.standard_error}, {"images", d.images}};
}

nlohmann::json cost_json(const LayerStats& t) {
  nlohmann::json j = {{"crossbars", t.crossbars},
                      {"adcs", t.adcs},
                      {"adc_conversions", t.adc_conversions},
                      {"shift_adds", t.shift_adds},
                      {"crossbar_reads", t.crossbar_reads},
                      {"index_entries", t.index_entries},
                      {"residual_crossbars", t.residual_crossbars}};
  if (t.energy_pj) j["energy_pj"] = *t.energy_pj;
  if (t.area_um2) j["area_um2"] = *t.area_um2;
  if (t.latency_ns) j["latency_ns"] = *t.latency_ns;
  return j;
}

std::string opt_text(const std::optional<double>& v, double scale, const char* unit) {
  return v ? fmt::format("{:.3f} {}", *v * scale, unit) : "-";
}

}  // namespace

nlohmann::json BudgetNetwork::to_json() const {
  nlohmann::json baselines_json = nlohmann::json::object();
  for (size_t i = 0; i < baselines.size(); ++i)
    baselines_json[baseline_specs[i].name] = cost_json(baselines[i]);
  nlohmann::json points_json = nlohmann::json::array();
  for (const BudgetPoint& p : points) {
    nlohmann::json ratios = nlohmann::json::object();
    for (size_t i = 0; i < baselines.size(); ++i)
      ratios[baseline_specs[i].name] = crossbar_reduction(baselines[i].crossbars, p.sme.crossbars);
    points_json.push_back({{"target_mean_budget", p.target_budget},
                           {"mean_budget_imagenet", p.mean_budget},
                           {"sme", cost_json(p.sme)},
                           {"moved_cells", p.sme.moved_cells},
                           {"crossbars_no_residual", p.crossbars_no_residual},
                           {"reduction", ratios},
                           {"val_drop", drop_json(p.val)},
                           {"test_drop", drop_json(p.test)},
                           {"test_drop_before_fine_tuning", drop_json(p.test_before_fine_tuning)},
                           {"val_accuracy", p.val_accuracy},
                           {"test_accuracy", p.test_accuracy},
                           {"model_file", p.model_file}});
  }
  nlohmann::json j = {{"donor", donor_provenance},
                      {"weights", weight_source},
                      {"val_uniform_fine_tuned", val_uniform},
                      {"test_uniform_fine_tuned", test_uniform},
                      {"baselines", baselines_json},
                      {"points", points_json},
                      {"map_seconds", map_seconds},
                      {"map_cpu_seconds", map_cpu_seconds}};
  if (chosen >= 0) j["chosen_mean_budget"] = points[chosen].target_budget;
  return j;
}

Table BudgetBenchResult::ratio_table() const {
  std::vector<std::string> header = {"network", "mean K_r", "SME xbars (residual)", "no residual"};
  if (!networks.empty()) {
    for (const HardwareSpec& b : networks.front().baseline_specs) header.push_back("vs " + b.name);
  }
  for (const char* h : {"val drop +- SE", "test drop +- SE", "test drop before FT"})
    header.push_back(h);
  Table t(header);
  for (const BudgetNetwork& nb : networks) {
    for (size_t k = 0; k < nb.points.size(); ++k) {
      const BudgetPoint& p = nb.points[k];
      std::vector<std::string> row = {
          imagenet_network_name(nb.network) + (static_cast<int>(k) == nb.chosen ? " (chosen)" : ""),
          fmt::format("{:.2f} ({:.3f})", p.target_budget, p.mean_budget),
          fmt::format("{} ({})", p.sme.crossbars, p.sme.residual_crossbars),
          std::to_string(p.crossbars_no_residual)};
      for (const LayerStats& b : nb.baselines)
        row.push_back(fmt::format("{} / {:.2f}x", b.crossbars,
                                  crossbar_reduction(b.crossbars, p.sme.crossbars)));
      row.push_back(drop_text(p.val));
      row.push_back(drop_text(p.test));
      row.push_back(drop_text(p.test_before_fine_tuning));
      t.add_row(row);
    }
  }
  return t;
}

Table BudgetBenchResult::cost_table() const {
  Table t({"network", "mapping", "crossbars", "ADCs", "ADC conv./inf.", "shift-adds/inf.",
           "index entries", "energy/inf.", "area"});
  for (const BudgetNetwork& nb : networks) {
    auto add = [&](const std::string& name, const LayerStats& s) {
      t.add_row({imagenet_network_name(nb.network), name, std::to_string(s.crossbars),
                 std::to_string(s.adcs), fmt::format("{:.3g}", double(s.adc_conversions)),
                 fmt::format("{:.3g}", double(s.shift_adds)), std::to_string(s.index_entries),
                 opt_text(s.energy_pj, 1e-6, "uJ"), opt_text(s.area_um2, 1e-6, "mm^2")});
    };
    for (size_t i = 0; i < nb.baselines.size(); ++i)
      add(nb.baseline_specs[i].name, nb.baselines[i]);
    if (nb.chosen >= 0)
      add(fmt::format("SME K={:.2f}", nb.points[nb.chosen].target_budget),
          nb.points[nb.chosen].sme);
  }
  return t;
}

std::string BudgetBenchResult::summary() const {
  std::string s;
  for (const BudgetNetwork& nb : networks) {
    const std::string name = imagenet_network_name(nb.network);
    s += fmt::format(
        "{}: donor {}; 8-bit uniform fine-tuned control: val {:.2f}% ({} images), test {:.2f}% "
        "({} images)\n",
        name, nb.donor_provenance, 100 * nb.val_uniform,
        nb.points.empty() ? 0 : nb.points.front().val.images, 100 * nb.test_uniform,
        nb.points.empty() ? 0 : nb.points.front().test.images);
    s += fmt::format("{}: SME mapping of the {} point on one core: {:.3f} s wall, {:.3f} s CPU\n",
                     name, nb.chosen >= 0 ? "chosen" : "last", nb.map_seconds, nb.map_cpu_seconds);
  }
  return s;
}

nlohmann::json BudgetBenchResult::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const BudgetNetwork& nb : networks) j[imagenet_network_name(nb.network)] = nb.to_json();
  return j;
}

}  // namespace tessera::reram
