// The model-extraction drivers, the attacker's data, `sfl attack` and `sfl bench-me` (see
// bench_extraction.h).
#include "tessera/splitfed/bench_extraction.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/core/svg.h"
#include "tessera/core/timer.h"
#include "tessera/models/registry.h"

namespace tessera::splitfed {

models::Model full_model(const SflOptions& options, const State& client, const State& server) {
  TESSERA_CHECK(options.split.bottleneck_channels == 0,
                "a run with a bottleneck has no uncut model to re-split");
  models::Model model = models::create(options.model);
  State all = client;
  all.insert(all.end(), server.begin(), server.end());
  // ClientSide / ServerSide register the units under their own names, so the states are
  // exactly the uncut model's parameters and buffers.
  State ordered;
  for (const auto& item : model->named_parameters()) {
    bool found = false;
    for (const auto& [name, t] : all) {
      if (name == item.key()) {
        ordered.emplace_back(name, t);
        found = true;
      }
    }
    TESSERA_CHECK(found, "saved run lacks parameter '{}'", item.key());
  }
  for (const auto& item : model->named_buffers()) {
    for (const auto& [name, t] : all) {
      if (name == item.key()) ordered.emplace_back(name, t);
    }
  }
  load_state(*model, ordered);
  model->eval();
  return model;
}

std::pair<ClientSide, ServerSide> resplit(models::Model& full, int64_t server_layers,
                                          LayerConvention convention) {
  const int64_t cut = cut_for_server_layers(full, server_layers, convention);
  SplitOptions split;
  split.cut = cut;
  ClientSide client(models::clone(full), split);
  ServerSide server(models::clone(full), split);
  client->eval();
  server->eval();
  return {client, server};
}

ExtractionResult extract_offline(models::Model& full, int64_t server_layers,
                                 LayerConvention convention, const ExtractionOptions& options,
                                 const data::Dataset* attacker_data, const data::Dataset& test,
                                 double grad_noise) {
  auto [client, server] = resplit(full, server_layers, convention);
  const torch::Tensor target_predictions = predict(client, server, test);
  SplitOptions split;
  split.cut = cut_for_server_layers(full, server_layers, convention);
  seed_everything(options.seed);
  const auto attack = make_extraction_attack(options, client, full->config(), split, attacker_data);
  OfflineOracle oracle(server, options.budget, grad_noise);
  attack->collect(oracle);
  return attack->fit(test, target_predictions);
}

OnlineExtraction extract_online(const SflOptions& options, const data::Dataset& train,
                                const data::Dataset& test, const ExtractionOptions& attack_options,
                                const data::Dataset* attacker_data, int64_t start_epoch) {
  TESSERA_CHECK(start_epoch >= 0 && start_epoch < options.epochs,
                "online attack start epoch {} outside [0, {})", start_epoch, options.epochs);
  auto oracle = std::make_shared<OnlineOracle>(attack_options.budget);
  std::unique_ptr<ExtractionAttack> attack;
  std::thread attack_thread;
  std::exception_ptr attack_error;
  auto strategy =
      std::make_shared<OnlineAttackerStrategy>(oracle, start_epoch, [&](const State& state) {
        auto sides = make_split(options.model, options.split);
        load_state(*sides.first, state);
        attack = make_extraction_attack(attack_options, sides.first, options.model, options.split,
                                        attacker_data);
        attack_thread = std::thread([&] {
          try {
            attack->collect(*oracle);
          } catch (...) {
            attack_error = std::current_exception();
          }
          oracle->attack_done();
        });
      });
  OnlineExtraction result;
  try {
    result.run = run_in_process(options, train, &test, {}, {{options.n_clients - 1, strategy}});
  } catch (...) {
    oracle->close();
    if (attack_thread.joinable()) attack_thread.join();
    throw;
  }
  oracle->close();
  if (attack_thread.joinable()) attack_thread.join();
  if (attack_error) std::rethrow_exception(attack_error);
  TESSERA_CHECK(attack != nullptr, "the online attack never started (start epoch {})", start_epoch);
  // Fidelity is measured against the final trained model.
  auto [client, server] = restore_split(options, result.run.client_state, result.run.server_state);
  const torch::Tensor target_predictions = predict(client, server, test);
  result.attack = attack->fit(test, target_predictions);
  return result;
}

train::TrainRecipe central_recipe(const SflOptions& options, DataSource source) {
  train::TrainRecipe recipe;
  recipe.arch = options.model;
  recipe.options = options.schedule_options();
  recipe.options.progress_label = "central";
  recipe.data = source == DataSource::fashion_mnist ? "fashion-mnist" : data_source_name(source);
  recipe.train_images = options.n_train;
  recipe.extra = {{"splitfed", "central baseline"}};
  return recipe;
}

CentralResult train_central(const SflOptions& options, DataSource source,
                            const data::Dataset& train, const data::Dataset& test) {
  const train::TrainRecipe recipe = central_recipe(options, source);
  CentralResult result;
  result.cached = file_exists(train::cached_path(recipe));
  Timer timer;
  // train::cached_fit's training, with the test set evaluated after every epoch (which leaves
  // the weights as they are) for the per-epoch curve; `train` holds the run's n_train images.
  models::Model model = train::cached_model(recipe, [&] {
    seed_everything(recipe.options.seed);
    models::Model m = models::create(recipe.arch);
    result.history = train::fit(m, train, &test, recipe.options);
    return m;
  });
  result.seconds = timer.elapsed_s();
  result.test = train::evaluate(model, test);
  return result;
}

// ---------------------------------------------------------------------------------------------
// The attacker

GmAux parse_gm_aux(const std::string& name) {
  if (name == "attacker") return GmAux::attacker;
  if (name == "heldout") return GmAux::heldout;
  TESSERA_CHECK(false, "unknown GM-ME auxiliary data '{}' (attacker, heldout)", name);
  return GmAux::attacker;
}

std::string gm_aux_name(GmAux aux) { return aux == GmAux::heldout ? "heldout" : "attacker"; }

void AttackerOptions::validate() const {
  TESSERA_CHECK(attacker_fraction > 0.0 && attacker_fraction <= 1.0,
                "--attacker-fraction {} must be in (0, 1]", attacker_fraction);
  TESSERA_CHECK(surrogate_epochs >= 1, "--surrogate-epochs {} must be >= 1", surrogate_epochs);
  TESSERA_CHECK(surrogate_lr > 0.0, "--surrogate-lr {} must be positive", surrogate_lr);
  TESSERA_CHECK(craft_steps >= 1, "--craft-steps {} must be >= 1", craft_steps);
}

ExtractionOptions AttackerOptions::extraction(ExtractionAttackKind attack, int64_t budget,
                                              uint64_t seed) const {
  ExtractionOptions o;
  o.attack = attack;
  o.budget = budget;
  o.surrogate_epochs = surrogate_epochs;
  o.lr = surrogate_lr;
  o.craft_steps = craft_steps;
  o.seed = seed;
  o.validate();
  return o;
}

nlohmann::json AttackerOptions::to_json() const {
  return {{"surrogate_epochs", surrogate_epochs},
          {"attacker_fraction", attacker_fraction},
          {"surrogate_lr", surrogate_lr},
          {"craft_steps", craft_steps},
          {"gm_aux", gm_aux_name(gm_aux)}};
}

data::Dataset attacker_data(const data::Dataset& train, double fraction, uint64_t seed) {
  TESSERA_CHECK(fraction > 0.0 && fraction <= 1.0, "--attacker-fraction {} must be in (0, 1]",
                fraction);
  std::mt19937_64 rng = make_rng(seed, 77);
  std::vector<int64_t> order = random::permutation(train.size(), rng);
  order.resize(std::max<int64_t>(1, std::llround(fraction * train.size())));
  return train.subset(order);
}

data::Dataset heldout_images(const data::Dataset& all_train, int64_t n_train) {
  TESSERA_CHECK(all_train.size() > n_train,
                "--gm-aux heldout: no training images beyond the run's {}", n_train);
  std::vector<int64_t> index;
  for (int64_t i = n_train; i < all_train.size(); ++i) index.push_back(i);
  return all_train.subset(index);
}

const data::Dataset* AttackerData::for_attack(ExtractionAttackKind attack) const {
  if (attack == ExtractionAttackKind::gm && gm_aux.size() > 0) return &gm_aux;
  return &labelled;
}

AttackerData make_attacker_data(const AttackerOptions& attacker, const data::Dataset& train,
                                const DataOptions& data, int64_t image_size, bool runs_gm,
                                uint64_t seed) {
  AttackerData d;
  d.labelled = attacker_data(train, attacker.attacker_fraction, seed);
  if (runs_gm && attacker.gm_aux == GmAux::heldout) {
    d.gm_aux = heldout_images(load_split(data, "train", image_size), train.size());
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// sfl attack

void OfflineAttackOptions::validate() const {
  TESSERA_CHECK(!run.empty(), "--run: no saved run given");
  TESSERA_CHECK(budget >= 0, "--budget {} must be >= 0", budget);
  TESSERA_CHECK(server_layers >= 1, "--server-layers {} must be >= 1", server_layers);
  TESSERA_CHECK(grad_noise >= 0.0, "--grad-noise {} must be >= 0", grad_noise);
  attacker.validate();
  data.validate();
}

nlohmann::json OfflineAttackOptions::to_json() const {
  return {{"run", run},
          {"attack", extraction_attack_name(attack)},
          {"budget", budget},
          {"server_layers", server_layers},
          {"convention", layer_convention_name(convention)},
          {"grad_noise", grad_noise},
          {"attacker", attacker.to_json()},
          {"data", data.to_json()},
          {"seed", seed}};
}

Table OfflineAttackResult::table() const {
  Table table({"attack", "server layers (" + layer_convention_name(options.convention) + ")",
               "budget", "queries", "target acc %", "best acc %", "best fidelity %", "s"});
  table.add_row({extraction_attack_label(options.attack), std::to_string(options.server_layers),
                 std::to_string(options.budget), std::to_string(extraction.queries_used),
                 percent(target_accuracy), percent(extraction.best_accuracy),
                 percent(extraction.best_fidelity), fmt::format("{:.1f}", extraction.seconds)});
  return table;
}

nlohmann::json OfflineAttackResult::to_json() const {
  nlohmann::json j = extraction.to_json();
  j["target_accuracy"] = target_accuracy;
  return j;
}

OfflineAttackResult offline_attack(const OfflineAttackOptions& options) {
  options.validate();
  seed_everything(options.seed);
  const SavedRun run = load_run(options.run);
  const SflOptions& o = run.options;
  const data::Dataset all_train = load_split(options.data, "train", o.model.image_size);
  TESSERA_CHECK(all_train.size() >= o.n_train, "{} was trained on {} images; only {} here",
                options.run, o.n_train, all_train.size());
  const data::Dataset train = all_train.head(o.n_train);
  const data::Dataset test = load_split(options.data, "test", o.model.image_size);
  const AttackerData attacker =
      make_attacker_data(options.attacker, train, options.data, o.model.image_size,
                         options.attack == ExtractionAttackKind::gm, options.seed);
  models::Model full = full_model(o, run.client, run.server);
  OfflineAttackResult result;
  result.options = options;
  const ExtractionOptions extraction =
      options.attacker.extraction(options.attack, options.budget, options.seed);
  result.target_accuracy = train::evaluate(full, test).accuracy;
  result.extraction =
      extract_offline(full, options.server_layers, options.convention, extraction,
                      attacker.for_attack(options.attack), test, options.grad_noise);
  return result;
}

// ---------------------------------------------------------------------------------------------
// sfl bench-me

std::string MeDefense::name() const {
  if (!spec.empty()) return spec;
  const char* kind_name = kind == MeDefenseKind::noise ? "noise"
                          : kind == MeDefenseKind::l1  ? "l1"
                                                       : "l2";
  return fmt::format("{}:{}", kind_name, strength);
}

SflOptions MeDefense::apply(SflOptions options) const {
  switch (kind) {
    case MeDefenseKind::noise:
      options.grad_noise = strength;
      break;
    case MeDefenseKind::l1:
      options.client_l1 = strength;
      break;
    case MeDefenseKind::l2:
      options.client_l2 = strength;
      break;
  }
  return options;
}

MeDefense parse_me_defense(const std::string& spec) {
  const auto colon = spec.find(':');
  TESSERA_CHECK(colon != std::string::npos, "'{}' is not kind:strength", spec);
  const std::string kind = spec.substr(0, colon), value = spec.substr(colon + 1);
  MeDefense d;
  d.spec = spec;
  if (kind == "noise") {
    d.kind = MeDefenseKind::noise;
  } else if (kind == "l1") {
    d.kind = MeDefenseKind::l1;
  } else if (kind == "l2") {
    d.kind = MeDefenseKind::l2;
  } else {
    TESSERA_CHECK(false, "unknown defense '{}' (noise, l1, l2)", kind);
  }
  size_t used = 0;
  try {
    d.strength = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TESSERA_CHECK(used > 0 && used == value.size() && std::isfinite(d.strength) && d.strength >= 0,
                "'{}' has no strength >= 0 after the colon", spec);
  return d;
}

void MeBenchOptions::validate() const {
  if (target_run.empty()) run.validate();
  run.data.validate();
  attacker.validate();
  TESSERA_CHECK(!layers.empty() && !budgets.empty() && !attacks.empty(),
                "--layers, --budgets and --attacks must not be empty");
  for (const int64_t l : layers) TESSERA_CHECK(l >= 1, "--layers: {} must be >= 1", l);
  for (const int64_t b : budgets) TESSERA_CHECK(b >= 1, "--budgets: {} must be >= 1", b);
  for (const double f : fractions) {
    TESSERA_CHECK(f > 0.0 && f <= 1.0, "--attacker-fractions: {} must be in (0, 1]", f);
  }
}

std::vector<double> MeBenchOptions::swept_fractions() const {
  return fractions.empty() ? std::vector<double>{attacker.attacker_fraction} : fractions;
}

nlohmann::json MeBenchOptions::to_json() const {
  std::vector<std::string> attack_names, online_names, defense_names;
  for (const auto a : attacks) attack_names.push_back(extraction_attack_name(a));
  for (const auto a : online) online_names.push_back(extraction_attack_name(a));
  for (const auto& d : defenses) defense_names.push_back(d.name());
  return {
      {"run", run.to_json()},      {"attacker", attacker.to_json()}, {"layers", layers},
      {"budgets", budgets},        {"fractions", swept_fractions()}, {"attacks", attack_names},
      {"defenses", defense_names}, {"online", online_names},         {"target_run", target_run}};
}

namespace {

int64_t max_budget(const MeBenchOptions& o) {
  return *std::max_element(o.budgets.begin(), o.budgets.end());
}

/// Train-ME asks no queries: its budget is 0.
int64_t budget_for(ExtractionAttackKind attack, int64_t budget) {
  return attack == ExtractionAttackKind::train ? 0 : budget;
}

/// The target: trained here (with the central baseline) or loaded from options.target_run.
struct TargetRun {
  SflOptions options;
  SflData data;
  RunResult run;
};

TargetRun prepare_target(const MeBenchOptions& options, MeBenchResult& result) {
  TargetRun t;
  t.data = load_sfl_data(options.run.data, options.run.sfl.model.image_size);
  if (!options.target_run.empty()) {
    const SavedRun saved = load_run(options.target_run);
    t.options = saved.options;
    const data::Dataset all = load_split(options.run.data, "train", t.options.model.image_size);
    TESSERA_CHECK(all.size() >= t.options.n_train, "{} was trained on {} images; only {} here",
                  options.target_run, t.options.n_train, all.size());
    t.data.train = all.head(t.options.n_train);
    t.run.client_state = saved.client;
    t.run.server_state = saved.server;
    models::Model full = full_model(t.options, saved.client, saved.server);
    t.run.final_test_accuracy = train::evaluate(full, t.data.test).accuracy;
  } else {
    t.options = options.run.resolve(t.data.train.size());
  }
  const SflOptions& o = t.options;
  const std::string model = fmt::format("{} x{} width", o.model.name, o.model.width_mult);
  const std::string sfl =
      fmt::format("SFL {} clients {} cut {}", o.n_clients, ordering_name(o.ordering), o.split.cut);
  if (options.target_run.empty()) {
    t.run = run_in_process(o, t.data.train, &t.data.test);
    const CentralResult central =
        train_central(o, options.run.data.source, t.data.train, t.data.test);
    result.targets.push_back(
        {model, sfl, o.epochs, t.run.final_test_accuracy, fmt::format("{:.1f}", t.run.seconds)});
    result.targets.push_back({model, "central", o.epochs, central.test.accuracy,
                              central.cached ? "cached" : fmt::format("{:.1f}", central.seconds)});
  } else {
    result.targets.push_back(
        {model, sfl + " (" + options.target_run + ")", o.epochs, t.run.final_test_accuracy, "-"});
  }
  result.target = o;
  result.target_accuracy = t.run.final_test_accuracy;
  return t;
}

bool runs_gm(const MeBenchOptions& options) {
  return std::find(options.attacks.begin(), options.attacks.end(), ExtractionAttackKind::gm) !=
         options.attacks.end();
}

void run_offline(const MeBenchOptions& options, models::Model& full, const data::Dataset& train,
                 const data::Dataset& test, uint64_t seed, MeBenchResult& result) {
  for (const double fraction : options.swept_fractions()) {
    AttackerOptions holder = options.attacker;
    holder.attacker_fraction = fraction;
    const AttackerData attacker = make_attacker_data(
        holder, train, options.run.data, full->config().image_size, runs_gm(options), seed);
    for (const ExtractionAttackKind attack : options.attacks) {
      const std::vector<int64_t> budgets =
          attack == ExtractionAttackKind::train ? std::vector<int64_t>{0} : options.budgets;
      for (const int64_t budget : budgets) {
        for (const int64_t l : options.layers) {
          const ExtractionOptions extraction = options.attacker.extraction(attack, budget, seed);
          const ExtractionResult r = extract_offline(full, l, options.run.convention, extraction,
                                                     attacker.for_attack(attack), test, 0.0);
          log::info("{} data {} budget {} L={}: acc {:.2f}% fidelity {:.2f}% ({:.1f} s)",
                    extraction_attack_label(attack), attacker.labelled.size(), budget, l,
                    100 * r.best_accuracy, 100 * r.best_fidelity, r.seconds);
          result.offline.push_back({attack, budget, l, fraction, attacker.labelled.size(), r});
        }
      }
    }
  }
}

MeBenchResult::Defense attack_defended(const MeBenchOptions& options, const std::string& name,
                                       const SflOptions& o, const RunResult& run,
                                       const AttackerData& attacker, const data::Dataset& test,
                                       uint64_t seed) {
  models::Model full = full_model(o, run.client_state, run.server_state);
  MeBenchResult::Defense row{name, run.final_test_accuracy, {}};
  for (const ExtractionAttackKind attack : options.attacks) {
    const ExtractionOptions extraction =
        options.attacker.extraction(attack, budget_for(attack, max_budget(options)), seed);
    const ExtractionResult r =
        extract_offline(full, options.run.server_layers, options.run.convention, extraction,
                        attacker.for_attack(attack), test, o.grad_noise);
    row.attack_accuracy.push_back(r.best_accuracy);
  }
  return row;
}

}  // namespace

MeBenchResult bench_me(const MeBenchOptions& options) {
  options.validate();
  MeBenchResult result;
  result.options = options;
  TargetRun t = prepare_target(options, result);
  const SflOptions& o = t.options;
  const AttackerData attacker = make_attacker_data(options.attacker, t.data.train, options.run.data,
                                                   o.model.image_size, runs_gm(options), o.seed);
  models::Model full = full_model(o, t.run.client_state, t.run.server_state);
  run_offline(options, full, t.data.train, t.data.test, o.seed, result);
  if (!options.defenses.empty()) {
    result.defenses.push_back(
        attack_defended(options, "none", o, t.run, attacker, t.data.test, o.seed));
    for (const MeDefense& d : options.defenses) {
      const SflOptions od = d.apply(o);
      const RunResult run = run_in_process(od, t.data.train, &t.data.test);
      result.defenses.push_back(
          attack_defended(options, d.name(), od, run, attacker, t.data.test, o.seed));
    }
  }
  for (const ExtractionAttackKind attack : options.online) {
    const ExtractionOptions extraction =
        options.attacker.extraction(attack, budget_for(attack, max_budget(options)), o.seed);
    const OnlineExtraction r = extract_online(o, t.data.train, t.data.test, extraction,
                                              attacker.for_attack(attack), o.epochs - 1);
    result.online.push_back({attack, extraction.budget, r.run.final_test_accuracy, r.attack});
  }
  return result;
}

Table MeBenchResult::targets_table() const {
  Table table({"model", "training", "epochs", "test acc %", "s"});
  for (const auto& t : targets) {
    table.add_row({t.model, t.training, std::to_string(t.epochs), percent(t.accuracy), t.seconds});
  }
  return table;
}

namespace {

/// "2% (240 images)".
std::string fraction_label(double fraction, int64_t images) {
  return fmt::format("{:g}% ({} images)", 100 * fraction, images);
}

/// Offline results as rows attacker data x attack x budget, columns L=...; `value` picks the cell.
Table layer_table(const MeBenchResult& r, double (*value)(const ExtractionResult&)) {
  std::vector<std::string> header = {"attacker data", "attack", "budget"};
  for (const int64_t l : r.options.layers) header.push_back(fmt::format("L={}", l));
  Table table(header);
  const size_t n_layers = r.options.layers.size();
  for (size_t i = 0; i + n_layers <= r.offline.size(); i += n_layers) {
    const auto& first = r.offline[i];
    std::vector<std::string> row = {fraction_label(first.fraction, first.images),
                                    extraction_attack_label(first.attack),
                                    first.budget ? std::to_string(first.budget) : "-"};
    for (size_t k = 0; k < n_layers; ++k) row.push_back(percent(value(r.offline[i + k].result)));
    table.add_row(row);
  }
  return table;
}

}  // namespace

Table MeBenchResult::accuracy_table() const {
  return layer_table(*this, [](const ExtractionResult& e) { return e.best_accuracy; });
}

Table MeBenchResult::fidelity_table() const {
  return layer_table(*this, [](const ExtractionResult& e) { return e.best_fidelity; });
}

Table MeBenchResult::defense_table() const {
  std::vector<std::string> header = {"defense", "target acc %"};
  for (const auto a : options.attacks) header.push_back(extraction_attack_label(a) + " acc %");
  Table table(header);
  for (const auto& d : defenses) {
    std::vector<std::string> row = {d.name, percent(d.target_accuracy)};
    for (const double a : d.attack_accuracy) row.push_back(percent(a));
    table.add_row(row);
  }
  return table;
}

Table MeBenchResult::online_table() const {
  Table table({"attack", "budget", "queries", "target acc %", "best acc %", "best fidelity %"});
  for (const auto& r : online) {
    table.add_row({extraction_attack_label(r.attack), std::to_string(r.budget),
                   std::to_string(r.result.queries_used), percent(r.target_accuracy),
                   percent(r.result.best_accuracy), percent(r.result.best_fidelity)});
  }
  return table;
}

std::string MeBenchResult::to_string() const {
  std::string out = targets_table().to_string() + "\n";
  out += fmt::format(
      "Surrogate accuracy % (offline; target {:.2f}%; server layers counted by the '{}' "
      "convention)\n",
      100 * target_accuracy, layer_convention_name(options.run.convention));
  out += accuracy_table().to_string() + "\n";
  out += "Surrogate fidelity % (agreement with the target's top-1)\n";
  out += fidelity_table().to_string() + "\n";
  if (!defenses.empty()) {
    out += fmt::format("Defenses (offline attacks at L={}, budget {})\n", options.run.server_layers,
                       max_budget(options));
    out += defense_table().to_string() + "\n";
  }
  if (!online.empty()) {
    out += fmt::format("Online attacks (cut {}, queries in the last epoch)\n", target.split.cut);
    out += online_table().to_string() + "\n";
  }
  return out;
}

nlohmann::json MeBenchResult::to_json() const {
  nlohmann::json j;
  j["target"] = target.to_json();
  j["target_accuracy"] = target_accuracy;
  j["layer_convention"] = layer_convention_name(options.run.convention);
  j["gm_aux"] = gm_aux_name(options.attacker.gm_aux);
  j["attacker_fraction"] = options.attacker.attacker_fraction;
  j["surrogate_epochs"] = options.attacker.surrogate_epochs;
  if (!options.target_run.empty()) j["run"] = options.target_run;
  j["targets"] = targets_table().to_json();
  j["offline"] = nlohmann::json::array();
  for (const auto& r : offline) {
    nlohmann::json row = r.result.to_json();
    row["budget"] = r.budget;
    row["server_layers"] = r.server_layers;
    row["attacker_fraction"] = r.fraction;
    row["attacker_images"] = r.images;
    j["offline"].push_back(row);
  }
  j["accuracy_table"] = accuracy_table().to_json();
  j["fidelity_table"] = fidelity_table().to_json();
  if (!defenses.empty()) j["defense_table"] = defense_table().to_json();
  if (!online.empty()) j["online_table"] = online_table().to_json();
  return j;
}

std::string MeBenchResult::svg() const {
  SvgPlot plot("Model extraction: best surrogate accuracy against the query budget",
               "gradient queries", "best surrogate accuracy %");
  plot.set_log_x(true);
  const double lo =
      static_cast<double>(*std::min_element(options.budgets.begin(), options.budgets.end()));
  const double hi = static_cast<double>(max_budget(options));
  const std::vector<double> fractions = options.swept_fractions();
  for (const double fraction : fractions) {
    for (const ExtractionAttackKind attack : options.attacks) {
      for (const int64_t l : options.layers) {
        SvgSeries series;
        series.name = fmt::format("{} L={}", extraction_attack_label(attack), l);
        if (fractions.size() > 1) series.name += fmt::format(" {:g}% data", 100 * fraction);
        for (const auto& r : offline) {
          if (r.attack != attack || r.server_layers != l || r.fraction != fraction) continue;
          const double accuracy = 100 * r.result.best_accuracy;
          if (attack == ExtractionAttackKind::train) {  // no queries: a flat reference
            series.name += " (no queries)";
            series.points = {{lo, accuracy}, {hi, accuracy}};
          } else {
            series.points.emplace_back(static_cast<double>(r.budget), accuracy);
          }
        }
        if (!series.points.empty()) plot.add_series(series);
      }
    }
  }
  plot.add_series({"target", {{lo, 100 * target_accuracy}, {hi, 100 * target_accuracy}}});
  return plot.render();
}

}  // namespace tessera::splitfed
