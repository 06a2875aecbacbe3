// The model-inversion tasks, attack suite, attack-mi, defended training and the MI benchmark
// (see bench_inversion.h).
#include "tessera/splitfed/bench_inversion.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <sstream>

#include "tessera/core/error.h"
#include "tessera/core/image.h"
#include "tessera/core/log.h"
#include "tessera/core/seed.h"
#include "tessera/core/svg.h"
#include "tessera/core/timer.h"
#include "tessera/models/registry.h"
#include "tessera/splitfed/runtime.h"

namespace tessera::splitfed {
namespace {

std::vector<int64_t> parse_integers(const std::string& text, const std::string& what) {
  std::vector<int64_t> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    try {
      values.push_back(std::stoll(item, &used));
    } catch (const std::exception&) {
      used = 0;
    }
    TESSERA_CHECK(used > 0 && used == item.size(), "{}: '{}' is not an integer", what, item);
  }
  TESSERA_CHECK(!values.empty(), "{} is empty", what);
  return values;
}

std::string f4(double v) { return fmt::format("{:.4f}", v); }

std::vector<std::string> decoder_names(const std::vector<DecoderSpec>& specs) {
  std::vector<std::string> names;
  for (const auto& s : specs) names.push_back(decoder_name(s));
  return names;
}

}  // namespace

std::vector<int64_t> parse_classes(const std::string& text) {
  if (text == "all") return {};
  const auto dash = text.find('-');
  if (dash != std::string::npos && text.find(',') == std::string::npos) {
    const auto range =
        parse_integers(text.substr(0, dash) + "," + text.substr(dash + 1), "the class range");
    TESSERA_CHECK(range.size() == 2 && range[0] <= range[1], "classes '{}' are not a range a-b",
                  text);
    std::vector<int64_t> classes;
    for (int64_t c = range[0]; c <= range[1]; ++c) classes.push_back(c);
    return classes;
  }
  return parse_integers(text, "the class list");
}

std::string classes_name(const std::vector<int64_t>& classes) {
  if (classes.empty()) return "all";
  bool range = classes.size() > 1;
  for (size_t i = 1; i < classes.size(); ++i) range = range && classes[i] == classes[i - 1] + 1;
  if (range) return fmt::format("{}-{}", classes.front(), classes.back());
  return fmt::format("{}", fmt::join(classes, ","));
}

Task load_task(const DataOptions& data, int64_t image_size, const std::vector<int64_t>& classes) {
  // CIFAR tasks are whole data sets (the class split applies to Fashion-MNIST only).
  const bool cifar = data.source == DataSource::cifar10 || data.source == DataSource::cifar100;
  for (const int64_t c : classes) {
    TESSERA_CHECK(cifar || (c >= 0 && c < 10), "--classes: Fashion-MNIST has no class {}", c);
  }
  Task t;
  t.train = load_split(data, "train", image_size);
  t.test = load_split(data, "test", image_size);
  if (!cifar && !classes.empty()) {
    t.train = t.train.filter_classes(classes);
    t.test = t.test.filter_classes(classes);
  }
  t.num_classes =
      cifar ? t.train.num_classes : (classes.empty() ? 10 : static_cast<int64_t>(classes.size()));
  t.channels = t.train.channels();
  if (data.train_samples > 0 && data.train_samples < t.train.size()) {
    t.train = t.train.head(data.train_samples);
  }
  if (data.test_samples > 0 && data.test_samples < t.test.size()) {
    t.test = t.test.head(data.test_samples);
  }
  return t;
}

SflOptions task_options(const SflRunOptions& run, const Task& task) {
  SflRunOptions r = run;
  r.sfl.model.num_classes = task.num_classes;
  r.sfl.model.in_channels = task.channels;
  return r.resolve(task.train.size());
}

void MiAttackOptions::validate() const {
  for (const auto& d : decoders) d.validate();
  TESSERA_CHECK(epochs >= 1, "--attack-epochs {} must be >= 1", epochs);
  TESSERA_CHECK(patience >= 0, "--attack-patience {} must be >= 0", patience);
  TESSERA_CHECK(targets >= 1 && aux >= 4, "--targets {} must be >= 1 and --aux {} >= 4", targets,
                aux);
  TESSERA_CHECK(optimization_steps >= 0, "--optimization-steps {} must be >= 0",
                optimization_steps);
  TESSERA_CHECK(!decoders.empty() || optimization_steps > 0,
                "no MI attack: give --decoders or --optimization-steps");
}

nlohmann::json MiAttackOptions::to_json() const {
  return {{"decoders", decoder_names(decoders)},
          {"attack_epochs", epochs},
          {"attack_patience", patience},
          {"targets", targets},
          {"aux", aux},
          {"optimization_steps", optimization_steps},
          {"optimization_lr", optimization_lr}};
}

AttackData attack_data(const data::Dataset& test, int64_t n_targets, int64_t n_aux) {
  TESSERA_CHECK(n_targets >= 1 && n_aux >= 4, "--targets {} must be >= 1 and --aux {} >= 4",
                n_targets, n_aux);
  TESSERA_CHECK(n_targets + n_aux <= test.size(),
                "--targets {} + --aux {} exceed the task's {} test images", n_targets, n_aux,
                test.size());
  return {test.images.slice(0, 0, n_targets), test.images.slice(0, n_targets, n_targets + n_aux),
          test.labels.slice(0, 0, n_targets), test.labels.slice(0, n_targets, n_targets + n_aux)};
}

std::vector<InversionResult> run_mi_attacks(ClientSide& client, const AttackData& data,
                                            const MiAttackOptions& options, uint64_t seed,
                                            const SmashedTransform& transform) {
  std::vector<InversionResult> results;
  for (const auto& decoder : options.decoders) {
    InversionOptions o;
    o.decoder = decoder;
    o.epochs = options.epochs;
    o.patience = options.patience;
    o.seed = seed;
    results.push_back(attack_training(client, data.aux, data.targets, o, transform));
  }
  if (options.optimization_steps > 0) {
    OptimizationInversionOptions o;
    o.steps = options.optimization_steps;
    o.lr = options.optimization_lr;
    results.push_back(attack_optimization(client, data.targets, o, transform));
  }
  return results;
}

size_t strongest(const std::vector<InversionResult>& results) {
  TESSERA_CHECK(!results.empty(), "no MI attack ran");
  size_t best = 0;
  for (size_t i = 1; i < results.size(); ++i) {
    if (results[i].metrics.mse < results[best].metrics.mse) best = i;
  }
  return best;
}

InversionMetrics mean_image_reference(const AttackData& data) {
  return measure_inversion(data.aux.mean(0, true).expand_as(data.targets), data.targets);
}

InversionMetrics label_only_reference(const AttackData& data) {
  TESSERA_CHECK(data.target_labels.defined() && data.aux_labels.defined() &&
                    data.target_labels.size(0) == data.targets.size(0) &&
                    data.aux_labels.size(0) == data.aux.size(0),
                "label-only reference: the attack data has no labels for its images");
  const torch::Tensor overall = data.aux.mean(0);
  std::vector<torch::Tensor> guesses;
  for (int64_t i = 0; i < data.targets.size(0); ++i) {
    const torch::Tensor same = data.aux_labels.eq(data.target_labels[i]);
    guesses.push_back(same.any().item<bool>() ? data.aux.index({same}).mean(0) : overall);
  }
  return measure_inversion(torch::stack(guesses), data.targets);
}

std::string reference_line(const InversionMetrics& mean_image, const InversionMetrics& label_only) {
  return fmt::format(
      "no-information reference (mean auxiliary image for every target): MSE {:.4f}, SSIM "
      "{:.4f}, PSNR {:.2f} dB\n"
      "label-only reference (class-mean auxiliary image for every target): MSE {:.4f}, SSIM "
      "{:.4f}, PSNR {:.2f} dB\n",
      mean_image.mse, mean_image.ssim, mean_image.psnr, label_only.mse, label_only.ssim,
      label_only.psnr);
}

double reachable_share(double mse, double undefended_mse, double label_only_mse) {
  const double range = label_only_mse - undefended_mse;
  if (!(range > 0)) return std::numeric_limits<double>::quiet_NaN();
  return (mse - undefended_mse) / range;
}

// ---------------------------------------------------------------------------------------------
// sfl attack-mi

void AttackMiOptions::validate() const {
  TESSERA_CHECK(!run.empty(), "--run: no saved run given");
  data.validate();
  attack.validate();
  defense.validate();
}

nlohmann::json AttackMiOptions::to_json() const {
  return {{"run", run},
          {"data", data.to_json()},
          {"classes", classes_name(classes)},
          {"attack", attack.to_json()},
          {"defense", defense_name(defense.kind)},
          {"strength", defense.effective_strength()},
          {"seed", seed}};
}

AttackMiResult attack_mi(const AttackMiOptions& options) {
  options.validate();
  seed_everything(options.seed);
  const SavedRun run = load_run(options.run);
  DataOptions data = options.data;
  data.train_samples = 1;  // the attack reads only the test split
  data.test_samples = 0;
  const Task task = load_task(data, run.options.model.image_size, options.classes);
  TESSERA_CHECK(task.num_classes == run.options.model.num_classes,
                "the run has {} classes but --classes gives {}", run.options.model.num_classes,
                task.num_classes);
  const AttackData d = attack_data(task.test, options.attack.targets, options.attack.aux);
  auto [client, server] = restore_split(run.options, run.client, run.server);
  DefenseOptions defense = options.defense;
  defense.seed = options.seed;
  const auto transform = smashed_transform(defense, 1000003);
  AttackMiResult result;
  result.accuracy = defended_accuracy(client, server, task.test, transform);
  result.attacks = run_mi_attacks(client, d, options.attack, options.seed, transform);
  result.strongest = strongest(result.attacks);
  result.reference = mean_image_reference(d);
  result.label_reference = label_only_reference(d);
  result.targets = d.targets;
  return result;
}

Table AttackMiResult::table() const {
  Table table({"attack", "MSE", "SSIM", "PSNR dB", "s"});
  for (const auto& r : attacks) {
    table.add_row({r.attack, f4(r.metrics.mse), f4(r.metrics.ssim),
                   fmt::format("{:.2f}", r.metrics.psnr), fmt::format("{:.1f}", r.seconds)});
  }
  return table;
}

std::string AttackMiResult::summary() const {
  const auto& best = attacks.at(strongest);
  return fmt::format(
             "test accuracy {:.2f}%; strongest attack {}: MSE {:.4f}, SSIM {:.4f}, PSNR {:.2f} "
             "dB\n",
             100 * accuracy, best.attack, best.metrics.mse, best.metrics.ssim, best.metrics.psnr) +
         reference_line(reference, label_reference);
}

nlohmann::json AttackMiResult::to_json() const {
  nlohmann::json j;
  j["attacks"] = nlohmann::json::array();
  for (const auto& r : attacks) j["attacks"].push_back(r.to_json());
  j["mean_image_reference"] = reference.to_json();
  j["label_only_reference"] = label_reference.to_json();
  j["accuracy"] = accuracy;
  return j;
}

std::string AttackMiResult::svg() const {
  SvgPlot plot("MI decoders: validation MSE against training epochs", "epoch",
               "validation MSE (auxiliary images)");
  size_t epochs = 1;
  for (const auto& r : attacks) {
    SvgSeries series{r.attack, {}};
    for (size_t e = 0; e < r.val_curve.size(); ++e) {
      series.points.emplace_back(static_cast<double>(e + 1), r.val_curve[e]);
    }
    epochs = std::max(epochs, r.val_curve.size());
    if (!series.points.empty()) plot.add_series(series);
  }
  const double last = static_cast<double>(epochs);
  plot.add_series(
      {"label-only reference", {{1.0, label_reference.mse}, {last, label_reference.mse}}});
  plot.add_series({"no-information reference", {{1.0, reference.mse}, {last, reference.mse}}});
  return plot.render();
}

torch::Tensor AttackMiResult::grid() const {
  const int64_t n = std::min<int64_t>(8, targets.size(0));
  std::vector<torch::Tensor> rows = {targets.slice(0, 0, n)};
  std::vector<std::string> labels = {"originals"};
  for (const auto& r : attacks) {
    rows.push_back(r.reconstructions.slice(0, 0, n));
    labels.push_back(r.attack);
  }
  return image::labelled_grid(rows, labels);
}

// ---------------------------------------------------------------------------------------------
// sfl pretrain, sfl train-defended

DefendedTrainOptions::DefendedTrainOptions() { run.sfl.split.cut = 4; }

DefendedTrainOptions DefendedTrainOptions::expert_pretraining() {
  DefendedTrainOptions o;
  o.run.sfl.split.bottleneck_channels = 8;
  o.run.sfl.n_clients = 1;
  o.classes = {0, 1, 2, 3, 4};
  o.defense.kind = DefenseKind::attacker_aware;
  return o;
}

void DefendedTrainOptions::validate() const {
  run.validate();
  defense.validate();
}

nlohmann::json DefendedTrainOptions::to_json() const {
  return {{"run", run.to_json()},
          {"classes", classes_name(classes)},
          {"defense", defense.to_json()},
          {"from", from}};
}

DefendedTrainResult train_defended(const DefendedTrainOptions& options) {
  options.validate();
  const Task t = load_task(options.run.data, options.run.sfl.model.image_size, options.classes);
  DefendedTrainResult result;
  result.sfl = task_options(options.run, t);
  result.defense = options.defense;
  result.defense.seed = result.sfl.seed;
  State client, server;
  if (!options.from.empty()) {
    const SavedRun expert = load_run(options.from);
    std::tie(client, server) =
        transfer_states(result.sfl, expert.options, expert.client, expert.server);
  }
  result.run = run_defended(result.sfl, result.defense, t.train, t.test, {}, client, server);
  return result;
}

Table DefendedTrainResult::table() const { return history_table(run.run.history); }

std::string DefendedTrainResult::summary() const {
  return fmt::format(
      "SFL with defense {} ({} clients, cut {}, bottleneck {}): test accuracy {:.2f}%, client "
      "compute {:.2f} ms/step, {:.1f} s\n",
      defense_name(defense.kind), sfl.n_clients, sfl.split.cut, sfl.split.bottleneck_channels,
      100 * run.accuracy, 1000 * run.client_seconds_per_step, run.run.seconds);
}

std::string DefendedTrainResult::to_string() const { return table().to_string() + summary(); }

nlohmann::json DefendedTrainResult::to_json() const {
  nlohmann::json j = run.to_json();
  j["sfl"] = sfl.to_json();
  j["defense"] = defense.to_json();
  return j;
}

// ---------------------------------------------------------------------------------------------
// sfl bench-mi

MiTaskPair parse_mi_task_pair(const std::string& name) {
  if (name == "fmnist") return MiTaskPair::fmnist;
  if (name == "cifar") return MiTaskPair::cifar;
  TESSERA_CHECK(false, "--dataset '{}' must be fmnist or cifar", name);
  return MiTaskPair::fmnist;
}

std::string mi_task_pair_name(MiTaskPair pair) {
  return pair == MiTaskPair::cifar ? "cifar" : "fmnist";
}

ResSflTransfer parse_ressfl_transfer(const std::string& name) {
  if (name == "lite") return ResSflTransfer::lite;
  if (name == "naive") return ResSflTransfer::naive;
  if (name == "freeze") return ResSflTransfer::freeze;
  TESSERA_CHECK(false, "ResSFL transfer '{}' must be lite, naive or freeze", name);
  return ResSflTransfer::lite;
}

std::string ressfl_transfer_name(ResSflTransfer transfer) {
  switch (transfer) {
    case ResSflTransfer::naive:
      return "naive";
    case ResSflTransfer::freeze:
      return "freeze";
    case ResSflTransfer::lite:
      break;
  }
  return "lite";
}

std::string mi_defense_name(const MiDefense& d) {
  std::string name = defense_name(d.kind);
  if (d.transfer != ResSflTransfer::lite) name += "/" + ressfl_transfer_name(d.transfer);
  return d.strength > 0.0 ? fmt::format("{}:{:g}", name, d.strength) : name;
}

MiDefense parse_mi_defense(const std::string& spec) {
  const size_t colon = spec.find(':');
  const std::string head = spec.substr(0, colon);
  const size_t slash = head.find('/');
  MiDefense d{parse_defense(head.substr(0, slash))};
  if (slash != std::string::npos) {
    TESSERA_CHECK(d.kind == DefenseKind::ressfl,
                  "defense '{}': only ressfl takes a transfer after '/'", spec);
    d.transfer = parse_ressfl_transfer(head.substr(slash + 1));
  }
  if (colon == std::string::npos) return d;
  const std::string value = spec.substr(colon + 1);
  size_t used = 0;
  try {
    d.strength = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  TESSERA_CHECK(used == value.size() && used > 0 && d.strength > 0.0 && std::isfinite(d.strength),
                "defense '{}': the strength after ':' must be a positive number", spec);
  TESSERA_CHECK(d.kind != DefenseKind::none, "defense '{}': none takes no strength", spec);
  TESSERA_CHECK(d.kind != DefenseKind::bottleneck || d.strength == std::floor(d.strength),
                "defense '{}': a bottleneck's strength is its channel count", spec);
  return d;
}

namespace {

// The defense options of one row: the row's strength where it has one, else the bench's.
DefenseOptions row_defense(const MiDefense& d, const MiBenchOptions& b) {
  DefenseOptions o;
  o.kind = d.kind;
  o.lambda = b.lambda;
  o.tau = b.tau;
  o.hinge_every_batch = b.hinge_every_batch;
  o.decoder_pretrain_epochs = b.decoder_pretrain_epochs;
  o.seed = b.run.sfl.seed;
  if (o.attacker_aware() && d.strength > 0.0) o.lambda = d.strength;
  if (o.needs_strategy() && !o.attacker_aware()) o.strength = d.strength;
  return o;
}

int64_t row_bottleneck(const MiDefense& d, const MiBenchOptions& b) {
  if (d.kind == DefenseKind::bottleneck)
    return d.strength > 0.0 ? static_cast<int64_t>(d.strength) : b.bottleneck;
  return d.kind == DefenseKind::attacker_aware || d.kind == DefenseKind::ressfl ? b.bottleneck : 0;
}

}  // namespace

MiBenchOptions::MiBenchOptions() {
  run.sfl.split.cut = 4;
  run.sfl.n_clients = 2;
  run.sfl.epochs = 10;
  run.data.train_samples = 3000;
  run.data.test_samples = 2000;
  attack.aux = 1000;
}

void MiBenchOptions::validate() const {
  run.validate();
  attack.validate();
  TESSERA_CHECK(expert_epochs >= 1, "--expert-epochs {} must be >= 1", expert_epochs);
  TESSERA_CHECK(expert_train_samples >= -1,
                "--expert-train-samples {} must be >= 0 (0: all; -1: as the target task)",
                expert_train_samples);
  TESSERA_CHECK(expert_path.empty() || std::filesystem::is_regular_file(expert_path),
                "--expert {}: no such file", expert_path);
  TESSERA_CHECK(bottleneck >= 0, "--defense-bottleneck {} must be >= 0 (0 = automatic)",
                bottleneck);
  TESSERA_CHECK(compression >= 1.0, "--compression {} must be >= 1", compression);
  TESSERA_CHECK(transfer_client_lr > 0.0, "--transfer-client-lr {} must be positive",
                transfer_client_lr);
  TESSERA_CHECK(!defenses.empty(), "--defenses is empty");
  TESSERA_CHECK(tau < 1.0, "--tau {} must be < 1 (negative: automatic)", tau);
  TESSERA_CHECK(tau_fraction > 0.0 && tau_fraction < 1.0, "--tau-fraction {} must be in (0, 1)",
                tau_fraction);
  TESSERA_CHECK(
      tau >= 0.0 || std::find(defenses.begin(), defenses.end(), MiDefense{}) != defenses.end(),
      "an automatic --tau needs the 'none' row in --defenses (or give --tau)");
  for (const MiDefense& d : defenses) {
    DefenseOptions probe = row_defense(d, *this);
    probe.tau = std::max(tau, 0.0);
    probe.interval = transfer_interval;
    probe.decoder = expert_decoder;
    probe.validate();  // bad lambda / tau / interval / strength fail before any training
  }
  transfer_decoder.validate();
  checkpoint_decoder.validate();
  if (tasks == MiTaskPair::fmnist) {
    for (const int64_t c : source_classes) {
      TESSERA_CHECK(
          std::find(target_classes.begin(), target_classes.end(), c) == target_classes.end(),
          "source and target classes must be disjoint; both hold {}", c);
    }
  }
}

nlohmann::json MiBenchOptions::to_json() const {
  std::vector<std::string> names;
  for (const MiDefense& d : defenses) names.push_back(mi_defense_name(d));
  return {{"run", run.to_json()},
          {"attack", attack.to_json()},
          {"dataset", mi_task_pair_name(tasks)},
          {"source_classes", classes_name(source_classes)},
          {"target_classes", classes_name(target_classes)},
          {"expert_epochs", expert_epochs},
          {"expert_train_samples", expert_train_samples},
          {"expert", expert_path},
          {"bottleneck", bottleneck},
          {"compression", compression},
          {"lambda", lambda},
          {"tau", tau},
          {"tau_fraction", tau_fraction},
          {"expert_decoder", decoder_name(expert_decoder)},
          {"transfer_decoder", decoder_name(transfer_decoder)},
          {"transfer_interval", transfer_interval},
          {"hinge_every_batch", hinge_every_batch},
          {"decoder_pretrain_epochs", decoder_pretrain_epochs},
          {"transfer_client_lr", transfer_client_lr},
          {"defenses", names},
          {"checkpoints", checkpoints},
          {"checkpoint_decoder", decoder_name(checkpoint_decoder)}};
}

MiTasks load_mi_tasks(const MiBenchOptions& options) {
  const int64_t size = options.run.sfl.model.image_size;
  DataOptions source = options.run.data, target = options.run.data;
  if (options.expert_train_samples >= 0) source.train_samples = options.expert_train_samples;
  if (options.tasks == MiTaskPair::cifar) {  // CIFAR-10 -> CIFAR-100, as in the paper
    source.source = DataSource::cifar10;
    source.cifar_dir = options.cifar10_dir;
    target.source = DataSource::cifar100;
    target.cifar_dir = options.cifar100_dir;
    return {load_task(source, size, {}), load_task(target, size, {})};
  }
  return {load_task(source, size, options.source_classes),
          load_task(target, size, options.target_classes)};
}

namespace {

/// The row's defended run: ResSFL's transfer from its expert for ressfl, else one run from
/// scratch.
DefendedRun train_mi_row(const MiDefense& row, const MiBenchOptions& b, const MiTasks& tasks,
                         const std::vector<int64_t>& checkpoint_epochs, MiExperts& experts,
                         SflOptions& o, DefenseOptions& defense) {
  SflRunOptions run = b.run;
  const DefenseKind kind = row.kind;
  defense = row_defense(row, b);
  run.sfl.split.bottleneck_channels = row_bottleneck(row, b);
  State init_client, init_server;
  if (kind == DefenseKind::attacker_aware) {
    defense.decoder = b.expert_decoder;  // from scratch with the strong simulated attacker
    defense.interval = 1;
  }
  if (kind == DefenseKind::ressfl) {
    const SavedRun& e = experts.get(b, tasks, run, defense);
    // Step B (3.4 B): lite keeps the hinge with a light decoder; naive and freeze train on
    // cross-entropy alone, freeze with the client's learning rate at 0.
    run.sfl.client_lr = row.transfer == ResSflTransfer::freeze ? 0.0 : b.transfer_client_lr;
    defense.decoder = b.transfer_decoder;
    defense.interval = b.transfer_interval;
    if (row.transfer != ResSflTransfer::lite) defense.kind = DefenseKind::none;
    const SflOptions ot = task_options(run, tasks.target);
    std::tie(init_client, init_server) = transfer_states(ot, e.options, e.client, e.server);
  }
  o = task_options(run, tasks.target);
  return run_defended(o, defense, tasks.target.train, tasks.target.test, checkpoint_epochs,
                      init_client, init_server);
}

}  // namespace

const SavedRun& MiExperts::get(const MiBenchOptions& b, const MiTasks& tasks,
                               const SflRunOptions& run, const DefenseOptions& defense) {
  const double lambda = b.expert_path.empty() ? defense.lambda : 0.0;  // a file: one expert
  if (const auto it = experts_.find(lambda); it != experts_.end()) return it->second;
  if (!b.expert_path.empty()) {
    log::info("ResSFL expert: {}", b.expert_path);
    return experts_[lambda] = load_run(b.expert_path);
  }
  // Step A (3.4 A): one client on the source task, the strong attacker's decoder every batch.
  SflRunOptions expert_run = run;
  expert_run.sfl.n_clients = 1;
  expert_run.sfl.epochs = b.expert_epochs;
  const Task& source = tasks.source;
  const SflOptions os = task_options(expert_run, source);
  DefenseOptions expert = defense;
  expert.kind = DefenseKind::attacker_aware;
  expert.decoder = b.expert_decoder;
  expert.interval = 1;
  Timer timer;
  const DefendedRun e = run_defended(os, expert, source.train, source.test);
  log::info(
      "ResSFL expert (lambda {:g}): source accuracy {:.2f}% after {} epochs on {} images "
      "({:.1f} s)",
      lambda, 100 * e.accuracy, os.epochs, source.train.size(), timer.elapsed_s());
  return experts_[lambda] = SavedRun{os, e.run.client_state, e.run.server_state};
}

MiRow run_mi_row(const MiDefense& kind, const MiBenchOptions& b, const MiTasks& tasks,
                 const AttackData& d, const std::vector<int64_t>& checkpoint_epochs,
                 MiExperts& experts) {
  SflOptions o;
  DefenseOptions defense;
  const DefendedRun r = train_mi_row(kind, b, tasks, checkpoint_epochs, experts, o, defense);
  const std::string name = mi_defense_name(kind);
  MiRow row;
  row.defense = kind;
  row.accuracy = r.accuracy;
  row.client_seconds_per_step = r.client_seconds_per_step;
  auto [client, server] = restore_split(o, r.run.client_state, r.run.server_state);
  const auto transform = smashed_transform(defense, 1000003);
  const auto results = run_mi_attacks(client, d, b.attack, o.seed, transform);
  row.mse = std::numeric_limits<double>::infinity();
  row.ssim = row.psnr = -std::numeric_limits<double>::infinity();
  for (const auto& res : results) {
    row.mse = std::min(row.mse, res.metrics.mse);
    row.ssim = std::max(row.ssim, res.metrics.ssim);
    row.psnr = std::max(row.psnr, res.metrics.psnr);
    log::info("MI {} vs {}: MSE {:.4f} SSIM {:.4f} PSNR {:.2f}", res.attack, name, res.metrics.mse,
              res.metrics.ssim, res.metrics.psnr);
  }
  const auto& best = results[strongest(results)];
  row.strongest = best.attack;
  row.reconstructions = best.reconstructions;
  for (const auto& [epoch, state] : r.checkpoints) {
    auto [c, s] = make_split(o.model, o.split);
    load_state(*c, state);
    InversionOptions io;
    io.decoder = b.checkpoint_decoder;
    io.epochs = b.attack.epochs;
    io.patience = b.attack.patience;
    io.seed = o.seed;
    const auto m = attack_training(c, d.aux, d.targets, io, transform);
    row.checkpoints.emplace_back(epoch, m.metrics);
    log::info("MI checkpoint {} epoch {}: MSE {:.4f} SSIM {:.4f}", name, epoch, m.metrics.mse,
              m.metrics.ssim);
  }
  return row;
}

int64_t compression_bottleneck(const MiBenchOptions& options, const Task& task) {
  const SflOptions o = task_options(options.run, task);
  models::Model model = models::create(o.model);
  const std::vector<int64_t> z = model->shape_after(static_cast<size_t>(o.split.cut));
  TESSERA_CHECK(z.size() == 3, "the cut {} is not at an image-shaped layer", o.split.cut);
  const int64_t stride = std::max<int64_t>(1, o.split.bottleneck_stride);
  const double kept = static_cast<double>((z[1] / stride) * (z[2] / stride));
  const double input =
      static_cast<double>(o.model.in_channels) * o.model.image_size * o.model.image_size;
  return std::max<int64_t>(1, std::llround(input / (options.compression * kept)));
}

MiBenchResult bench_mi(const MiBenchOptions& options) {
  options.validate();
  const MiTasks tasks = load_mi_tasks(options);
  const AttackData d = attack_data(tasks.target.test, options.attack.targets, options.attack.aux);
  std::vector<int64_t> checkpoints;
  for (const int64_t e : options.checkpoints) {
    if (e <= options.run.sfl.epochs) checkpoints.push_back(e);
  }
  MiBenchResult result;
  result.options = options;
  if (options.bottleneck == 0) {
    result.bottleneck_auto = true;
    result.options.bottleneck = compression_bottleneck(options, tasks.target);
    log::info("bottleneck: {} channels (about 1/{} of the input's floats)",
              result.options.bottleneck, options.compression);
  }
  result.rows.resize(options.defenses.size());
  MiExperts experts;
  size_t first = options.defenses.size();  // a row run ahead of the others
  if (options.tau < 0.0) {                 // the undefended row first: its attack's SSIM sets tau
    first = static_cast<size_t>(
        std::find(options.defenses.begin(), options.defenses.end(), MiDefense{}) -
        options.defenses.begin());
    MiBenchOptions undefended = result.options;
    undefended.tau = 0.0;  // unused: the row has no hinge
    const MiRow& row = result.rows[first] =
        run_mi_row(options.defenses[first], undefended, tasks, d, {}, experts);
    result.tau_auto = true;
    result.options.tau = options.tau_fraction * row.ssim;
    log::info("tau = {:.3f} ({} x the undefended attack's SSIM {:.4f})", result.options.tau,
              options.tau_fraction, row.ssim);
  }
  for (size_t i = 0; i < options.defenses.size(); ++i) {
    if (i == first) continue;
    const MiDefense& row = options.defenses[i];
    const bool track = row.kind == DefenseKind::attacker_aware || row.kind == DefenseKind::ressfl;
    result.rows[i] = run_mi_row(row, result.options, tasks, d,
                                track ? checkpoints : std::vector<int64_t>{}, experts);
  }
  result.reference = mean_image_reference(d);
  result.label_reference = label_only_reference(d);
  result.targets = d.targets;
  return result;
}

namespace {

const MiRow* plain_row(const std::vector<MiRow>& rows) {
  for (const auto& r : rows) {
    if (r.defense.kind == DefenseKind::none) return &r;
  }
  return nullptr;
}

}  // namespace

Table MiBenchResult::table() const {
  Table table({"defense", "target acc %", "acc drop (pts)", "attack MSE", "share of range %",
               "SSIM", "PSNR dB", "strongest attack", "client compute (x plain)"});
  const MiRow* base = plain_row(rows);
  for (const auto& r : rows) {
    const double share = base ? reachable_share(r.mse, base->mse, label_reference.mse)
                              : std::numeric_limits<double>::quiet_NaN();
    table.add_row(
        {mi_defense_name(r.defense), percent(r.accuracy),
         base ? fmt::format("{:.2f}", 100 * (base->accuracy - r.accuracy)) : "-", f4(r.mse),
         std::isnan(share) ? "-" : fmt::format("{:.1f}", 100 * share), f4(r.ssim),
         fmt::format("{:.2f}", r.psnr), r.strongest,
         base ? fmt::format("{:.2f}", r.client_seconds_per_step / base->client_seconds_per_step)
              : "-"});
  }
  return table;
}

Table MiBenchResult::pareto_table() const {
  Table table({"acc drop at most (pts)", "best defense", "attack MSE", "share of range %",
               "acc drop (pts)"});
  const MiRow* base = plain_row(rows);
  if (base == nullptr) return table;
  for (const double cost : {0.5, 1.0, 2.0, 5.0}) {
    const MiRow* best = nullptr;
    for (const auto& r : rows) {
      const double drop = 100 * (base->accuracy - r.accuracy);
      if (drop <= cost && (best == nullptr || r.mse > best->mse)) best = &r;
    }
    const double share = reachable_share(best->mse, base->mse, label_reference.mse);
    table.add_row({fmt::format("{:g}", cost), mi_defense_name(best->defense), f4(best->mse),
                   std::isnan(share) ? "-" : fmt::format("{:.1f}", 100 * share),
                   fmt::format("{:.2f}", 100 * (base->accuracy - best->accuracy))});
  }
  return table;
}

Table MiBenchResult::checkpoint_table() const {
  Table table({"epoch", "defense", "attack MSE", "SSIM", "PSNR dB"});
  for (const auto& r : rows) {
    for (const auto& [epoch, m] : r.checkpoints) {
      const std::string what =
          r.defense.kind == DefenseKind::ressfl ? "ResSFL transfer" : "attacker-aware from scratch";
      table.add_row({std::to_string(epoch), what + " (" + mi_defense_name(r.defense) + ")",
                     f4(m.mse), f4(m.ssim), fmt::format("{:.2f}", m.psnr)});
    }
  }
  return table;
}

std::string MiBenchResult::to_string() const {
  std::string out = table().to_string() + reference_line(reference, label_reference) + "\n";
  out += fmt::format(
      "hinge threshold tau = {:.3f}{}; bottleneck {} channels{}\n", options.tau,
      tau_auto ? fmt::format(" ({} x the undefended attack's SSIM)", options.tau_fraction) : "",
      options.bottleneck,
      bottleneck_auto ? fmt::format(" (about 1/{} of the input's floats)", options.compression)
                      : "");
  const Table pareto = pareto_table();
  if (pareto.n_rows() > 0) out += "Best defense at each accuracy cost:\n" + pareto.to_string();
  const Table ck = checkpoint_table();
  if (ck.n_rows() > 0) out += ck.to_string();
  return out;
}

nlohmann::json MiBenchResult::to_json() const {
  nlohmann::json j;
  j["rows"] = nlohmann::json::array();
  j["checkpoints"] = nlohmann::json::array();
  for (const auto& r : rows) {
    j["rows"].push_back({{"defense", mi_defense_name(r.defense)},
                         {"accuracy", r.accuracy},
                         {"mse", r.mse},
                         {"ssim", r.ssim},
                         {"psnr", r.psnr},
                         {"strongest", r.strongest},
                         {"client_seconds_per_step", r.client_seconds_per_step}});
    for (const auto& [epoch, m] : r.checkpoints) {
      j["checkpoints"].push_back(
          {{"defense", mi_defense_name(r.defense)}, {"epoch", epoch}, {"metrics", m.to_json()}});
    }
  }
  j["mean_image_reference"] = reference.to_json();
  j["label_only_reference"] = label_reference.to_json();
  j["tau"] = options.tau;
  j["tau_auto"] = tau_auto;
  j["bottleneck"] = options.bottleneck;
  j["bottleneck_auto"] = bottleneck_auto;
  return j;
}

torch::Tensor MiBenchResult::grid() const {
  std::vector<torch::Tensor> grid_rows = {targets.slice(0, 0, 8)};
  std::vector<std::string> labels = {"originals"};
  for (const auto& r : rows) {
    grid_rows.push_back(r.reconstructions.slice(0, 0, 8));
    labels.push_back(mi_defense_name(r.defense));
  }
  return image::labelled_grid(grid_rows, labels);
}

std::string MiBenchResult::grid_caption() const {
  std::vector<std::string> names;
  for (const auto& r : rows) names.push_back(mi_defense_name(r.defense));
  return fmt::format("originals, then one row per defense: {}", fmt::join(names, ","));
}

std::string MiBenchResult::svg() const {
  SvgPlot plot("Model inversion: reconstruction error against accuracy", "target accuracy %",
               "strongest attack's MSE (higher: better defended)");
  double lo = 100.0, hi = 0.0;
  for (const DefenseKind kind : all_defenses()) {  // one series a kind, through its strengths
    SvgSeries s{defense_name(kind), {}, true};
    for (const auto& r : rows) {
      if (r.defense.kind == kind) s.points.emplace_back(100 * r.accuracy, r.mse);
    }
    if (s.points.empty()) continue;
    std::sort(s.points.begin(), s.points.end());
    s.line = s.points.size() > 1;
    for (const auto& [accuracy, mse] : s.points) {
      lo = std::min(lo, accuracy);
      hi = std::max(hi, accuracy);
    }
    plot.add_series(std::move(s));
  }
  plot.add_series({"no-information reference", {{lo, reference.mse}, {hi, reference.mse}}});
  plot.add_series({"label-only reference", {{lo, label_reference.mse}, {hi, label_reference.mse}}});
  return plot.render();
}

}  // namespace tessera::splitfed
