// The model-extraction experiments of arXiv 2303.08581 (research/sfl.md 2): re-splitting a
// trained SFL model at another cut, offline and online extraction, the central baseline, the
// threat model's attacker data, one offline attack against a saved run (`sfl attack`) and the
// benchmark (`sfl bench-me`: every attack x server layers x budget, defenses, online attacks).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/splitfed/bench_common.h"
#include "tessera/splitfed/extraction.h"
#include "tessera/splitfed/runtime.h"
#include "tessera/train/cache.h"

namespace tessera::splitfed {

/// The uncut model f_s o f_c of a trained run (no bottleneck), in eval mode.
models::Model full_model(const SflOptions& options, const State& client, const State& server);

/// The trained model cut again so that the server keeps `server_layers` layers (the offline
/// attack's "resplit", research/sfl.md 1.4); {attacker's client side, target server side}.
std::pair<ClientSide, ServerSide> resplit(models::Model& full, int64_t server_layers,
                                          LayerConvention convention);

/// Offline ME (research/sfl.md 2.2): the target's server side frozen, the attacker's client side
/// known. `grad_noise` is the server's gradient-noise defense.
ExtractionResult extract_offline(models::Model& full, int64_t server_layers,
                                 LayerConvention convention, const ExtractionOptions& options,
                                 const data::Dataset* attacker_data, const data::Dataset& test,
                                 double grad_noise);

struct OnlineExtraction {
  RunResult run;            ///< the SFL training the attacker took part in
  ExtractionResult attack;  ///< surrogate measured against the final model
};

/// Online ME: SFL training from scratch with the last client as the attacker; its queries start
/// at `start_epoch` and are normal SFL steps (the server trains on them). RECONSTRUCTED: the
/// surrogate keeps, frozen, the averaged client side the attacker held when its queries began
/// (the one its collected data and gradients belong to); fidelity is against the final model.
OnlineExtraction extract_online(const SflOptions& options, const data::Dataset& train,
                                const data::Dataset& test, const ExtractionOptions& attack,
                                const data::Dataset* attacker_data, int64_t start_epoch);

/// The central baseline's recipe: the uncut model with the run's epochs, batch size, schedule,
/// augmentation and seed, on the run's first n_train training images of `source`.
train::TrainRecipe central_recipe(const SflOptions& options, DataSource source);

struct CentralResult {
  train::EvalResult test;
  /// Per-epoch statistics with the test accuracy when it was trained here (empty when cached).
  std::vector<train::EpochStats> history;
  double seconds = 0.0;  ///< training (or, when cached, loading) time
  bool cached = false;   ///< the model came from the model cache
};

/// Central training of the uncut model (train::cached_fit of central_recipe(): trained once,
/// then reused), evaluated on `test`. `train` holds the run's n_train images.
CentralResult train_central(const SflOptions& options, DataSource source,
                            const data::Dataset& train, const data::Dataset& test);

/// GM-ME's auxiliary images: the attacker's data (labels unused) or the training images beyond
/// the run's first n_train, which the target never saw.
enum class GmAux { attacker, heldout };
/// "attacker" or "heldout"; throws tessera::Error listing the valid names.
GmAux parse_gm_aux(const std::string& name);
std::string gm_aux_name(GmAux aux);

/// The malicious client of the ME threat model (research/sfl.md 2.1): what it holds and how it
/// trains its surrogate.
struct AttackerOptions {
  int64_t surrogate_epochs = 10;    ///< paper: 200
  double attacker_fraction = 0.02;  ///< labelled data, a fraction of the training set
  double surrogate_lr = 0.02;       ///< surrogate SGD
  int64_t craft_steps = 50;         ///< Craft-ME Adam steps per image
  GmAux gm_aux = GmAux::attacker;

  void validate() const;
  /// The ExtractionOptions of one attack with this attacker.
  ExtractionOptions extraction(ExtractionAttackKind attack, int64_t budget, uint64_t seed) const;
  nlohmann::json to_json() const;
};

/// A seeded random subset of the training set of the given fraction (at least one image).
data::Dataset attacker_data(const data::Dataset& train, double fraction, uint64_t seed);
/// The images of `all_train` after its first n_train.
data::Dataset heldout_images(const data::Dataset& all_train, int64_t n_train);

/// The data each attack holds.
struct AttackerData {
  data::Dataset labelled;  ///< attacker_data() of the run's training images
  data::Dataset gm_aux;    ///< GM-ME's images (empty: the labelled set)
  /// What `attack` uses (GM-ME: gm_aux when set).
  const data::Dataset* for_attack(ExtractionAttackKind attack) const;
};
/// The attacker's data for a run trained on `train` (its n_train images). The held-out GM-ME
/// images come from the whole training split of `data` when gm_aux is heldout and GM-ME runs.
AttackerData make_attacker_data(const AttackerOptions& attacker, const data::Dataset& train,
                                const DataOptions& data, int64_t image_size, bool runs_gm,
                                uint64_t seed);

/// `sfl attack`: one offline attack against a saved run.
struct OfflineAttackOptions {
  std::string run = "sfl_run.safetensors";  ///< saved run (`sfl train --out`)
  ExtractionAttackKind attack = ExtractionAttackKind::train;
  int64_t budget = 10000;     ///< gradient queries (1 = one sample)
  int64_t server_layers = 5;  ///< of the re-split target
  LayerConvention convention = LayerConvention::weights;
  double grad_noise = 0.0;  ///< defense: noise on the returned gradients
  AttackerOptions attacker;
  DataOptions data;  ///< where the images are; the run fixes n_train, the whole test split is used
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

struct OfflineAttackResult {
  OfflineAttackOptions options;
  double target_accuracy = 0.0;  ///< the saved model on the test split
  ExtractionResult extraction;

  /// attack, server layers, budget, queries, target acc %, best acc %, best fidelity %, s.
  Table table() const;
  nlohmann::json to_json() const;
};

OfflineAttackResult offline_attack(const OfflineAttackOptions& options);

/// A defense of the ME bench (research/sfl.md 2.3): gradient noise s U[0,1) from the server, or
/// an L1 / L2 penalty on the client-side weights.
enum class MeDefenseKind { noise, l1, l2 };
struct MeDefense {
  MeDefenseKind kind = MeDefenseKind::noise;
  double strength = 0.0;
  std::string spec;  ///< the text it was parsed from (its label in the tables)
  /// spec, or "kind:strength" when it was not parsed.
  std::string name() const;
  /// The run's options with this defense applied.
  SflOptions apply(SflOptions options) const;
};
/// "noise:0.01", "l1:1.2e-4", "l2:0.05"; throws tessera::Error for any other form.
MeDefense parse_me_defense(const std::string& spec);

/// `sfl bench-me` (research/sfl.md 2): target + central baseline, every attack x server layers x
/// budget offline, optionally retrained defended targets and online attacks.
struct MeBenchOptions {
  SflRunOptions run;  ///< the target's training (and, with --run, only the data)
  AttackerOptions attacker;
  std::vector<int64_t> layers = {2, 3, 4, 5, 6, 7, 8};  ///< server-side layer counts attacked
  std::vector<int64_t> budgets = {1000, 10000, 100000};
  /// The attacker's labelled shares of the data that the offline attacks sweep (each share's
  /// images contain the smaller shares'); empty: attacker.attacker_fraction alone. Defenses and
  /// online attacks use attacker.attacker_fraction.
  std::vector<double> fractions;
  std::vector<ExtractionAttackKind> attacks = all_extraction_attacks();
  /// Targets retrained with each defense, attacked at run.server_layers with the largest budget.
  std::vector<MeDefense> defenses;
  /// Attacks also run online (a fresh SFL run, queries in its last epoch, largest budget).
  std::vector<ExtractionAttackKind> online;
  /// Attack this saved run instead of training a target: its options replace run.sfl, and no
  /// central baseline runs.
  std::string target_run;

  void validate() const;
  nlohmann::json to_json() const;
  /// `fractions`, or {attacker.attacker_fraction} when it is empty.
  std::vector<double> swept_fractions() const;
};

struct MeBenchResult {
  /// One trained (or loaded) model of the targets table.
  struct Target {
    std::string model, training;
    int64_t epochs = 0;
    double accuracy = 0.0;
    std::string seconds;  ///< "12.3", "cached" or "-"
  };
  struct Offline {
    ExtractionAttackKind attack = ExtractionAttackKind::train;
    int64_t budget = 0;  ///< 0 for Train-ME (no queries)
    int64_t server_layers = 0;
    double fraction = 0.0;  ///< the attacker's labelled share of the data
    int64_t images = 0;     ///< its labelled images
    ExtractionResult result;
  };
  struct Defense {
    std::string name;  ///< "none" or the defense's spec
    double target_accuracy = 0.0;
    std::vector<double> attack_accuracy;  ///< best surrogate accuracy, one per attack
  };
  struct Online {
    ExtractionAttackKind attack = ExtractionAttackKind::train;
    int64_t budget = 0;
    double target_accuracy = 0.0;  ///< the SFL run the attacker took part in
    ExtractionResult result;
  };

  MeBenchOptions options;
  SflOptions target;  ///< the target run's options
  double target_accuracy = 0.0;
  std::vector<Target> targets;
  std::vector<Offline> offline;   ///< fraction-major, then attack, then budget, then layers
  std::vector<Defense> defenses;  ///< "none" first; empty without options.defenses
  std::vector<Online> online;

  Table targets_table() const;
  /// Rows attacker data x attack x budget, columns L=...: best surrogate accuracy % / fidelity %.
  Table accuracy_table() const;
  Table fidelity_table() const;
  Table defense_table() const;
  Table online_table() const;
  /// Every table with its heading, as `sfl bench-me` prints them.
  std::string to_string() const;
  nlohmann::json to_json() const;
  /// Best surrogate accuracy against the query budget (log x), one curve per attack, server
  /// layer count and attacker data share; Train-ME (no queries) and the target as flat lines.
  std::string svg() const;
};

MeBenchResult bench_me(const MeBenchOptions& options);

}  // namespace tessera::splitfed
