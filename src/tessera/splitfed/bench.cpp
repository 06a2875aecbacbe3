// Reference models and the tour step of splitfed (see bench.h).
#include "tessera/splitfed/bench.h"

#include <fmt/format.h>

#include <cmath>

namespace tessera::splitfed {
namespace {

/// "VGG-11 x1/8": the tour's wording of an architecture and width.
std::string model_label(const models::ModelConfig& model) {
  const std::string name = model.name.rfind("vgg11", 0) == 0 ? "VGG-11" : model.name;
  const double inverse = 1.0 / model.width_mult;
  if (std::abs(inverse - std::round(inverse)) < 1e-9 && inverse > 1.0) {
    return fmt::format("{} x1/{}", name, std::lround(inverse));
  }
  return fmt::format("{} x{}", name, model.width_mult);
}

}  // namespace

std::vector<TourRow> tour_extraction(const TourOptions& options) {
  const SflData d = load_sfl_data(options.me_run.data, options.me_run.sfl.model.image_size);
  const SflOptions o = options.me_run.resolve(d.train.size());
  const RunResult run = run_in_process(o, d.train, &d.test);
  models::Model full = full_model(o, run.client_state, run.server_state);
  const data::Dataset mine = attacker_data(d.train, options.attacker.attacker_fraction, o.seed);
  const ExtractionResult r = extract_offline(
      full, options.me_server_layers, LayerConvention::weights,
      options.attacker.extraction(ExtractionAttackKind::train, 0, o.seed), &mine, d.test, 0.0);
  return {{"splitfed",
           fmt::format("SFL {}, {} clients, {} ep: {:.1f}%; Train-ME ({} server layers, {} "
                       "imgs): acc {:.1f}%, fidelity {:.1f}%",
                       model_label(o.model), o.n_clients, o.epochs, 100 * run.final_test_accuracy,
                       options.me_server_layers, mine.size(), 100 * r.best_accuracy,
                       100 * r.best_fidelity),
           "VGG-11 CIFAR-10, 5 server layers: ME >90% acc, <2% below target"}};
}

std::vector<TourRow> tour_inversion(const TourOptions& options) {
  MiBenchOptions b = options.mi;
  b.defenses = {DefenseKind::none, DefenseKind::ressfl};
  b.checkpoints.clear();
  const MiBenchResult r = bench_mi(b);
  const MiRow& plain = r.rows[0];
  const MiRow& ressfl = r.rows[1];
  const double label_only = r.label_reference.mse;
  const std::string data = b.run.data.source == DataSource::fashion_mnist
                               ? "FMNIST"
                               : data_source_name(b.run.data.source);
  return {{"splitfed MI",
           fmt::format("MI MSE undefended {:.4f} vs ResSFL {:.4f} ({:.1f}x; {:.0f}% of the range "
                       "to the label-only {:.4f}; no-information {:.4f}); acc {:.1f}% vs {:.1f}% "
                       "({} {} -> {}, {}, {} ep)",
                       plain.mse, ressfl.mse, ressfl.mse / plain.mse,
                       100 * reachable_share(ressfl.mse, plain.mse, label_only), label_only,
                       r.reference.mse, 100 * plain.accuracy, 100 * ressfl.accuracy, data,
                       classes_name(b.source_classes), classes_name(b.target_classes),
                       model_label(b.run.sfl.model), b.run.sfl.epochs),
           "CIFAR-100 VGG-11: MSE 0.005 -> 0.050 at ~1% acc drop"}};
}

std::vector<train::ReferenceModel> reference_models() {
  train::ReferenceModel central;
  central.name = "splitfed-central-vgg11-x0.25";
  central.description =
      "VGG-11-BN x0.25, Fashion-MNIST 32x32, first 12000 images, 3 epochs SGD 0.05 cosine: the "
      "central baseline of `sfl bench-me` and `sfl train --central` (about 83%)";
  const auto options = [] {
    const SflRunOptions run;
    return run.resolve(run.data.train_samples);
  };
  central.recipe = [options] { return central_recipe(options(), DataSource::fashion_mnist); };
  central.build = [options](const std::string& data_dir) {
    SflRunOptions run;
    run.data.dir = data_dir;
    const SflData d = load_sfl_data(run.data, run.sfl.model.image_size);
    return train::cached_fit(central_recipe(options(), DataSource::fashion_mnist), d.train);
  };
  return {central};
}

TourOptions tour_options(const TourContext& context) {
  TourOptions t;
  // An SFL run long enough for the target to be a real classifier (VGG-11-BN at 1/4 width, 3
  // clients, 4 epochs on 12000 images) and one offline attack (Train-ME with 5% of the data, 5
  // server-side layers, 20 surrogate epochs): the surrogate's distance to the target shows.
  t.me_run.sfl.model.width_mult = 0.25;
  t.me_run.sfl.epochs = 4;
  t.me_run.sfl.seed = context.seed;
  t.me_run.data.train_samples = 12000;
  t.me_run.data.test_samples = 2000;
  if (!context.data_dir.empty()) t.me_run.data.dir = context.data_dir;
  t.attacker.surrogate_epochs = 20;
  t.attacker.attacker_fraction = 0.05;
  // Plain SFL and ResSFL (5-epoch expert on classes 0-4 with a res_normN2C32 simulated attacker,
  // then a 5-epoch transfer to classes 5-9; plain SFL also 5 epochs) on 3000 images per task,
  // VGG-11-BN at 1/4 width, cut 4 (+ C8 bottleneck for ResSFL), lambda 1, tau 0, the hinge only
  // on the decoder's steps (a fifth of the bench's adversarial cost); attacked by res_normN2C32
  // trained 10 epochs on 1000 auxiliary images (a reduced `sfl bench-mi`).
  MiBenchOptions& b = t.mi;
  b.run.sfl.epochs = 5;  // 2 left the plain run's BN statistics unsettled (chance accuracy)
  b.run.sfl.seed = context.seed;
  b.run.data.train_samples = 3000;
  b.run.data.test_samples = 2000;
  b.run.data.dir = t.me_run.data.dir;
  b.expert_epochs = 5;
  b.expert_decoder = {DecoderKind::residual, 2, 32};
  b.lambda = 1.0;
  b.tau = 0.0;
  b.hinge_every_batch = false;
  b.bottleneck = 8;
  b.attack.decoders = {{DecoderKind::residual, 2, 32}};
  b.attack.epochs = 10;  // a reduced attacker: fixed epochs, no patience (the bench's default)
  b.attack.patience = 0;
  b.attack.aux = 1000;
  return t;
}

std::vector<TourRow> tour(const TourContext& context) {
  const TourOptions options = tour_options(context);
  std::vector<TourRow> rows = tour_extraction(options);
  for (auto& row : tour_inversion(options)) rows.push_back(row);
  return rows;
}

}  // namespace tessera::splitfed
