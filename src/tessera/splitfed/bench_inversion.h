// The model-inversion experiments of ResSFL (arXiv 2205.04007, research/sfl.md 3): the tasks
// (disjoint class splits, CIFAR-10 -> CIFAR-100), the attack suite against one client side,
// `sfl attack-mi`, defended training (`sfl pretrain`, `sfl train-defended`) and the benchmark
// `sfl bench-mi` with ResSFL's two-step protocol (expert pre-training, then resistance transfer).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/data/dataset.h"
#include "tessera/splitfed/bench_common.h"
#include "tessera/splitfed/inversion.h"
#include "tessera/splitfed/resistance.h"
#include "tessera/splitfed/runtime.h"

namespace tessera::splitfed {

/// "all", "0-4" or "5,6,7" -> class indices (empty = all classes); throws tessera::Error.
std::vector<int64_t> parse_classes(const std::string& text);
/// The inverse: "all", "a-b" for a contiguous ascending range, else "a,b,c".
std::string classes_name(const std::vector<int64_t>& classes);

/// One task's data: `data`'s images restricted to some classes (relabelled 0..n-1).
struct Task {
  data::Dataset train;
  data::Dataset test;
  int64_t num_classes = 10;
  int64_t channels = 1;
};
/// Fashion-MNIST or synthetic images of `classes` (empty: all 10), or the whole of CIFAR-10 /
/// CIFAR-100 (`classes` ignored); the first train_samples / test_samples of each split.
Task load_task(const DataOptions& data, int64_t image_size, const std::vector<int64_t>& classes);
/// The run's options on a task: its class and channel counts, n_train = its training images.
SflOptions task_options(const SflRunOptions& run, const Task& task);

/// The curious server's attack suite (research/sfl.md 3.1).
struct MiAttackOptions {
  std::vector<DecoderSpec> decoders = decoder_suite();  ///< training-based MI decoders
  /// Decoder training epochs (paper: 50), a cap when patience > 0: a decoder stops once its
  /// validation MSE has not improved for `patience` epochs (InversionOptions::patience). Ten
  /// fixed epochs left the decoder far from trained (docs/systems/splitfed.md).
  int64_t epochs = 50;
  int64_t patience = 5;
  int64_t targets = 128;           ///< fixed held-out target images (paper: 128)
  int64_t aux = 2000;              ///< auxiliary images (test split, after the targets)
  int64_t optimization_steps = 0;  ///< optimisation-based MI steps per image (0 = off)
  double optimization_lr = 0.05;   ///< its Adam step (paper 0.8 on normalised inputs)

  void validate() const;
  nlohmann::json to_json() const;
};

/// The attacker's images: the first `n_targets` test images of the task are the fixed targets,
/// the next `n_aux` its auxiliary data (held out of training; research/sfl.md 3.1).
struct AttackData {
  torch::Tensor targets;        ///< [n_targets, C, S, S]
  torch::Tensor aux;            ///< [n_aux, C, S, S]
  torch::Tensor target_labels;  ///< [n_targets] int64 (for the label-only reference)
  torch::Tensor aux_labels;     ///< [n_aux] int64
};
AttackData attack_data(const data::Dataset& test, int64_t n_targets, int64_t n_aux);

/// Every configured attack on one client side, decoders first, then optimisation-based MI.
std::vector<InversionResult> run_mi_attacks(ClientSide& client, const AttackData& data,
                                            const MiAttackOptions& options, uint64_t seed,
                                            const SmashedTransform& transform);
/// The index of the strongest attack (lowest MSE).
size_t strongest(const std::vector<InversionResult>& results);
/// The attack that learns nothing: every target "reconstructed" as the mean auxiliary image. An
/// attack's MSE can only be read against this ceiling (about 0.06 on zero-padded Fashion-MNIST).
InversionMetrics mean_image_reference(const AttackData& data);
/// The attacker who knows only each target's label: every target "reconstructed" as the mean
/// auxiliary image of its class (the overall mean for a class the auxiliary set lacks). A
/// defense that keeps accuracy reveals the label, so this is the most it can hide at no
/// accuracy cost (issue 14: MSE about 0.042 on Fashion-MNIST).
InversionMetrics label_only_reference(const AttackData& data);
/// The two references, one line each: "no-information reference (mean auxiliary image ...): MSE
/// ..." and "label-only reference (class-mean auxiliary image ...): MSE ...".
std::string reference_line(const InversionMetrics& mean_image, const InversionMetrics& label_only);
/// Where `mse` lies in the range a defense can reach at no accuracy cost: 0 at the undefended
/// attack's MSE, 1 at the label-only reference's (NaN when the range is empty).
double reachable_share(double mse, double undefended_mse, double label_only_mse);

/// `sfl attack-mi`: the attack suite against a saved run (ResSFL 3.1).
struct AttackMiOptions {
  std::string run = "sfl_run.safetensors";  ///< saved run (train, train-defended, pretrain)
  DataOptions data;                         ///< the task's images (whole test split)
  std::vector<int64_t> classes;             ///< the run's Fashion-MNIST classes (empty: all)
  MiAttackOptions attack;
  /// The perturbation the client applies to its smashed data at attack time (laplace,
  /// gaussian, dropout, topk with its strength; the other kinds apply nothing).
  DefenseOptions defense;
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

struct AttackMiResult {
  double accuracy = 0.0;  ///< test accuracy with the attack-time perturbation
  std::vector<InversionResult> attacks;
  size_t strongest = 0;
  InversionMetrics reference;        ///< mean_image_reference
  InversionMetrics label_reference;  ///< label_only_reference
  torch::Tensor targets;             ///< the fixed target images

  /// attack, MSE, SSIM, PSNR dB, s.
  Table table() const;
  /// The accuracy, the strongest attack and the no-information reference.
  std::string summary() const;
  nlohmann::json to_json() const;
  /// The first min(8, targets) originals above each attack's reconstructions, rows labelled.
  torch::Tensor grid() const;
  /// Each decoder's validation MSE against its training epoch (does more training still lower
  /// it?), the label-only and no-information MSEs as lines.
  std::string svg() const;
};

AttackMiResult attack_mi(const AttackMiOptions& options);

/// `sfl train-defended` (and, with expert_pretraining(), `sfl pretrain`): in-process SFL on a
/// task with an MI defense on every client.
struct DefendedTrainOptions {
  SflRunOptions run;             ///< default cut 4 (two convs of VGG-11 on the client)
  std::vector<int64_t> classes;  ///< the task's classes (empty: all)
  DefenseOptions defense;
  std::string from;  ///< an expert (saved run): start from its client and server feature layers

  DefendedTrainOptions();
  /// ResSFL step A's defaults (research/sfl.md 3.4 A): one client, classes 0-4, a C8 bottleneck
  /// at cut 4, attacker-aware training.
  static DefendedTrainOptions expert_pretraining();
  void validate() const;
  nlohmann::json to_json() const;
};

struct DefendedTrainResult {
  SflOptions sfl;
  DefenseOptions defense;
  DefendedRun run;

  /// The per-epoch history.
  Table table() const;
  /// "SFL with defense ... test accuracy ...%, client compute ... ms/step, ... s".
  std::string summary() const;
  /// The table, then the summary.
  std::string to_string() const;
  nlohmann::json to_json() const;
};

DefendedTrainResult train_defended(const DefendedTrainOptions& options);

/// The task pair of the MI bench: a disjoint class split of Fashion-MNIST (or synthetic data),
/// or CIFAR-10 -> CIFAR-100 as in the paper.
enum class MiTaskPair { fmnist, cifar };
/// "fmnist" or "cifar"; throws tessera::Error listing the valid names.
MiTaskPair parse_mi_task_pair(const std::string& name);
std::string mi_task_pair_name(MiTaskPair pair);

/// How ResSFL's step B trains the client on the target task (the paper's Table 3 variants).
enum class ResSflTransfer {
  lite,    ///< "lowLRlite", ResSFL proper: small client LR, the hinge with the light decoder
  naive,   ///< "lowLRsimple": small client LR, plain cross-entropy (no simulated attacker)
  freeze,  ///< "freeze": client LR 0, plain cross-entropy; the client only runs forward
};
/// "lite", "naive" or "freeze"; throws tessera::Error listing the valid names.
ResSflTransfer parse_ressfl_transfer(const std::string& name);
std::string ressfl_transfer_name(ResSflTransfer transfer);

/// One row of `sfl bench-mi`: a defense at a strength, so that one run can sweep each defense's
/// strength (research/sfl.md 3.5) and draw the accuracy / reconstruction-error trade-off.
struct MiDefense {
  DefenseKind kind = DefenseKind::none;
  /// lambda of attacker_aware and ressfl, the channels of bottleneck, DefenseOptions::strength of
  /// the baselines; 0: the bench's lambda or bottleneck, or the baseline's default.
  double strength = 0.0;
  ResSflTransfer transfer = ResSflTransfer::lite;  ///< ressfl rows only
  MiDefense(DefenseKind k = DefenseKind::none, double s = 0.0,
            ResSflTransfer t = ResSflTransfer::lite)
      : kind(k), strength(s), transfer(t) {}
  bool operator==(const MiDefense& o) const {
    return kind == o.kind && strength == o.strength && transfer == o.transfer;
  }
};
/// "ressfl", "ressfl:3", "ressfl/freeze", "ressfl/naive:0.3", "laplace:5", "bottleneck:4";
/// throws tessera::Error for an unknown kind or transfer, a transfer on another kind than
/// ressfl, a strength that is not a positive number, or a strength on none.
MiDefense parse_mi_defense(const std::string& spec);
/// The inverse: "ressfl", "ressfl:3", "ressfl/freeze:0.3" (the lite transfer is not named).
std::string mi_defense_name(const MiDefense& defense);

/// `sfl bench-mi` (research/sfl.md 3.4-3.5, reduced for a CPU; docs/systems/splitfed.md): every
/// defense trained on the target task and attacked by the suite; ResSFL pre-trains an expert on
/// the source task first.
struct MiBenchOptions {
  SflRunOptions run;       ///< default cut 4, 2 clients, 10 epochs, 3000 / 2000 images per task
  MiAttackOptions attack;  ///< default 1000 auxiliary images
  MiTaskPair tasks = MiTaskPair::fmnist;
  std::vector<int64_t> source_classes = {0, 1, 2, 3, 4};  ///< the expert's (fmnist pair)
  std::vector<int64_t> target_classes = {5, 6, 7, 8, 9};  ///< the target task's, disjoint
  std::string cifar10_dir, cifar100_dir;                  ///< the cifar pair's files
  int64_t expert_epochs = 5;                              ///< ResSFL expert pre-training epochs
  /// The expert's source images: -1 (the default) as many as the target task's
  /// (run.data.train_samples), 0 all of them (30000 for Fashion-MNIST's classes 0-4).
  int64_t expert_train_samples = -1;
  /// A saved run of `sfl pretrain` (same model, cut and bottleneck) that every ressfl row
  /// transfers from instead of pre-training its own expert; empty: pre-train one per lambda.
  std::string expert_path;
  /// Channels of the bottleneck, attacker_aware and ressfl rows; 0 (the default): the fewest
  /// that keep one smashed float per `compression` input floats at the cut (at least 1).
  int64_t bottleneck = 0;
  /// The automatic bottleneck's input floats per smashed float: the paper's C8 at 8x8 keeps 512
  /// of CIFAR's 3072 (6x); on 1x32x32 Fashion-MNIST at cut 4 that gives C3 (192 of 1024, 5.3x).
  double compression = 6.0;
  double lambda = 0.3;  ///< hinge weight
  /// SSIM threshold of the hinge; < 0 (the default): tau_fraction x the SSIM of the strongest
  /// attack on the undefended (`none`) row, which then runs first. The paper's 0.5 can lie
  /// above what the simulated attacker reaches on another data set, and then the hinge never
  /// fires (docs/systems/splitfed.md).
  double tau = -1.0;
  double tau_fraction = 0.75;  ///< RECONSTRUCTED
  /// The simulated attacker of pre-training and of attacker_aware from scratch.
  DecoderSpec expert_decoder = {DecoderKind::residual, 4, 64};
  DecoderSpec transfer_decoder = {DecoderKind::conv, 0, 16};  ///< the transfer's light decoder
  int64_t transfer_interval = 5;                              ///< its update interval, batches
  bool hinge_every_batch = true;        ///< DefenseOptions::hinge_every_batch of the defended rows
  int64_t decoder_pretrain_epochs = 0;  ///< DefenseOptions::decoder_pretrain_epochs of every row
  double transfer_client_lr = 0.005;    ///< client learning rate of the transfer
  /// The rows, in order (a kind may come back at other strengths).
  std::vector<MiDefense> defenses =
      std::vector<MiDefense>(all_defenses().begin(), all_defenses().end());
  /// Epochs at which attacker_aware and ressfl are attacked (0 = the start; later ones than the
  /// run's epochs are skipped).
  std::vector<int64_t> checkpoints = {0, 1, 2, 5, 10};
  DecoderSpec checkpoint_decoder = {DecoderKind::residual, 4, 64};  ///< the checkpoints' attack

  MiBenchOptions();
  void validate() const;
  nlohmann::json to_json() const;
};

/// The source and target tasks of the bench.
struct MiTasks {
  Task source;
  Task target;
};
MiTasks load_mi_tasks(const MiBenchOptions& options);
/// The automatic bottleneck's channels on `task` (MiBenchOptions::compression).
int64_t compression_bottleneck(const MiBenchOptions& options, const Task& task);

/// One defense trained on the target task and attacked.
struct MiRow {
  MiDefense defense;
  double accuracy = 0.0;
  double client_seconds_per_step = 0.0;
  double mse = 0.0, ssim = 0.0, psnr = 0.0;  ///< min MSE, max SSIM, max PSNR over the attacks
  std::string strongest;                     ///< the lowest-MSE attack
  torch::Tensor reconstructions;             ///< the strongest attack's
  std::vector<std::pair<int64_t, InversionMetrics>> checkpoints;
};

/// ResSFL's step A, done once per lambda in one bench: the expert on the source task with one
/// client and the strong simulated attacker, or the saved one of MiBenchOptions::expert_path.
class MiExperts {
 public:
  /// The expert for `defense`'s lambda under `run` (the row's split); trained on first use.
  const SavedRun& get(const MiBenchOptions& options, const MiTasks& tasks, const SflRunOptions& run,
                      const DefenseOptions& defense);

 private:
  std::map<double, SavedRun> experts_;  ///< by lambda (one entry for a saved expert)
};

/// Trains one defended SFL run on the target task (for ressfl: the expert of `experts`, then
/// the transfer of the row's variant) and attacks it, also at `checkpoint_epochs`.
MiRow run_mi_row(const MiDefense& defense, const MiBenchOptions& options, const MiTasks& tasks,
                 const AttackData& data, const std::vector<int64_t>& checkpoint_epochs,
                 MiExperts& experts);

struct MiBenchResult {
  MiBenchOptions options;            ///< with the tau the rows used (auto resolved)
  bool tau_auto = false;             ///< tau came from the undefended row's SSIM
  bool bottleneck_auto = false;      ///< the bottleneck came from options.compression
  std::vector<MiRow> rows;           ///< one per options.defenses
  InversionMetrics reference;        ///< mean_image_reference
  InversionMetrics label_reference;  ///< label_only_reference
  torch::Tensor targets;

  /// defense, target acc %, acc drop (pts), attack MSE, share of the reachable range %
  /// (reachable_share against the `none` row), SSIM, PSNR dB, strongest attack, client compute
  /// (x plain); the drop, share and compute are against the `none` row ("-" without one).
  Table table() const;
  /// Attack strength at the checkpoints of attacker_aware and ressfl.
  Table checkpoint_table() const;
  /// The tables and the reference line, as `sfl bench-mi` prints them.
  std::string to_string() const;
  nlohmann::json to_json() const;
  /// 8 originals, then the strongest attack's reconstructions against each defense (labelled).
  torch::Tensor grid() const;
  /// "originals, then one row per defense: none,ressfl,..." (what grid() shows).
  std::string grid_caption() const;
  /// For each accuracy cost (drop from the `none` row at most 0.5, 1, 2, 5 points): the row with
  /// the highest attack MSE within it, and its share of the reachable range.
  Table pareto_table() const;
  /// Attack MSE against target accuracy, one line per defense kind through its strengths, the
  /// no-information and label-only MSEs as lines.
  std::string svg() const;
};

MiBenchResult bench_mi(const MiBenchOptions& options);

}  // namespace tessera::splitfed
