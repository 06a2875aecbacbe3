// The bitflip bench functions on tiny options: aggregation against hand computations, the bench
// on a small model and on Fashion-MNIST-shaped synthetic data, the model cache, the reference
// models, the tour row, and protect / attack / verify.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "tessera/bitflip/bench.h"
#include "tessera/bitflip/bench_commands.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"
#include "test_support.h"

namespace tessera::bitflip {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;
using tessera::testing::TempDir;

/// 8x8 one-channel synthetic data with 4 classes.
data::Dataset small_data(int64_t n, uint64_t seed) {
  return data::make_synthetic(n, 1, 8, 4, seed);
}

/// A registry model (run_trial clones it, which needs the registry) small enough for
/// milliseconds per PBFA step: ResNet-20 at a quarter width on 8x8 inputs, 4 classes, trained
/// briefly with train::fit so that PBFA's gradients mean something.
models::Model trained_small_net() {
  models::ModelConfig config;
  config.name = "resnet20";
  config.image_size = 8;
  config.num_classes = 4;
  config.width_mult = 0.25;
  models::Model net = models::create(config);
  train::TrainOptions options;
  options.epochs = 4;
  options.batch_size = 32;
  options.augment_pad = 0;
  options.augment_flip = false;
  options.progress_label = "small";
  train::fit(net, small_data(256, 1), nullptr, options);
  return net;
}

/// Bench options small enough for a tiny model and a few seconds.
BenchOptions tiny_options() {
  BenchOptions o;
  o.n_seeds = 3;
  o.trial.n_flips = 4;
  o.trial.n_defended_flips = 3;
  o.trial.n_random_flips = 2;
  o.trial.group_sizes = {4, 8};
  o.trial.attack_batch = 16;
  o.evasion_trials = 200;
  o.overhead_batch = 8;
  o.overhead_reps = 1;
  return o;
}

/// A trial with the given PBFA curve, one RADAR outcome per (G, detected) and CRC figures.
TrialResult fake_trial(std::vector<double> pbfa, std::vector<double> random,
                       const std::vector<std::pair<int64_t, int64_t>>& radar, double crc_zero) {
  TrialResult t;
  t.pbfa_accuracy = std::move(pbfa);
  t.random_accuracy = std::move(random);
  t.defended_attack_accuracy = t.pbfa_accuracy[1];
  for (const auto& [g, detected] : radar) {
    RadarOutcome r;
    r.group_size = g;
    r.n_flips = 2;
    r.n_detected = detected;
    r.n_flagged_groups = detected;
    r.recovered_accuracy = 0.5 + 0.1 * static_cast<double>(detected);
    r.storage_fraction = 2.0 / static_cast<double>(8 * g);
    t.radar.push_back(r);
  }
  t.crc.n_layers_flagged = 1;
  t.crc.n_weights_zeroed = 100;
  t.crc.zeroed_accuracy = crc_zero;
  t.crc.reload_accuracy = 0.9;
  return t;
}

TEST(StopReason, ExplainsWhyAStalledRoundStopped) {
  TrialResult t = fake_trial({0.9, 0.8, 0.6}, {}, {}, 0.1);
  for (const int64_t index : {3, 4, 3}) {
    BitFlip f;
    f.layer = "conv.weight";
    f.index = index;
    t.flips.push_back(f);
  }
  t.pbfa_steps = {{1.0, 1.2, 1, true}, {1.2, 1.1, 2, false}, {1.1, 1.3, 1, true}};
  t.batch_agreement = 0.8;
  const std::string reason = stop_reason(t, 0.11);
  EXPECT_NE(reason.find("stuck at 60.00% after 3 flips"), std::string::npos) << reason;
  EXPECT_NE(reason.find("1 of 3 iterations found no flip"), std::string::npos) << reason;
  EXPECT_NE(reason.find("1 multi-bit iterations, 1 flips of an already flipped"), std::string::npos)
      << reason;
  EXPECT_NE(reason.find("loss 1.000 -> 1.300"), std::string::npos) << reason;
  t.batch_agreement = 0.1;
  EXPECT_NE(stop_reason(t, 0.11).find("attack batch stalled too (10.0%"), std::string::npos);
  t.pbfa_accuracy.back() = 0.1;  // reached the random level: nothing to explain
  EXPECT_EQ(stop_reason(t, 0.11), "");
}

TEST(MeanSd, EqualsAHandComputation) {
  const MeanSd s = mean_sd({1.0, 2.0, 4.0});
  const double mean = 7.0 / 3.0;
  const double var =
      ((1 - mean) * (1 - mean) + (2 - mean) * (2 - mean) + (4 - mean) * (4 - mean)) / 2;
  EXPECT_EQ(s.n, 3);
  EXPECT_DOUBLE_EQ(s.mean, mean);
  EXPECT_DOUBLE_EQ(s.sd, std::sqrt(var));
  EXPECT_EQ(s.format(1.0, 1), fmt::format("{:.1f} ± {:.1f}", mean, std::sqrt(var)));
  EXPECT_EQ(mean_sd({0.25}).sd, 0.0);
  EXPECT_EQ(mean_sd({0.25}).format(), "25.00 ± 0.00");
  EXPECT_EQ(mean_sd({}).n, 0);
  EXPECT_EQ(mean_sd({}).format(), "-");
}

TEST(SummarizeTrials, AggregatesOverTrialsAsComputedByHand) {
  // Trial 1 reaches 10 flips and random guessing at flip 6; trial 2 stops after 4 flips.
  const std::vector<TrialResult> trials = {
      fake_trial({0.8, 0.7, 0.6, 0.5, 0.4, 0.1, 0.1, 0.1, 0.1, 0.05}, {0.9, 0.85},
                 {{8, 2}, {16, 1}}, 0.1),
      fake_trial({0.9, 0.6, 0.5, 0.3}, {0.88}, {{8, 1}, {16, 0}}, 0.2),
  };
  const TrialSummary s = summarize_trials(trials, 0.11);
  EXPECT_EQ(s.n_trials, 2);
  EXPECT_EQ(s.pbfa_5.n, 1);  // only the first trial flipped 5 bits
  EXPECT_DOUBLE_EQ(s.pbfa_5.mean, 0.4);
  EXPECT_EQ(s.pbfa_10.n, 1);
  EXPECT_DOUBLE_EQ(s.pbfa_end.mean, (0.05 + 0.3) / 2);
  EXPECT_DOUBLE_EQ(s.pbfa_end.sd, std::sqrt(2 * 0.125 * 0.125));
  EXPECT_DOUBLE_EQ(s.random_end.mean, (0.85 + 0.88) / 2);
  EXPECT_EQ(s.n_reached_random, 1);
  EXPECT_DOUBLE_EQ(s.flips_to_random.mean, 6.0);
  EXPECT_DOUBLE_EQ(s.attacked.mean, (0.7 + 0.6) / 2);
  ASSERT_EQ(s.pbfa_curve.size(), 10u);
  EXPECT_DOUBLE_EQ(s.pbfa_curve[0], (0.8 + 0.9) / 2);
  EXPECT_DOUBLE_EQ(s.pbfa_curve[4], 0.4);  // mean over the trials that got there
  ASSERT_EQ(s.random_curve.size(), 2u);
  EXPECT_DOUBLE_EQ(s.random_curve[1], 0.85);
  ASSERT_EQ(s.radar.size(), 2u);
  EXPECT_EQ(s.radar[0].group_size, 8);
  EXPECT_EQ(s.radar[0].detected, (std::vector<double>{2, 1}));
  EXPECT_DOUBLE_EQ(s.radar[0].detected_stats.mean, 1.5);
  EXPECT_DOUBLE_EQ(s.radar[0].detected_stats.sd, std::sqrt(0.5));
  EXPECT_DOUBLE_EQ(s.radar[0].detection_rate, 0.75);
  EXPECT_DOUBLE_EQ(s.radar[1].detection_rate, 0.25);
  EXPECT_DOUBLE_EQ(s.radar[1].recovered_stats.mean, (0.6 + 0.5) / 2);
  EXPECT_DOUBLE_EQ(s.crc_zero_accuracy.mean, 0.15);
  EXPECT_DOUBLE_EQ(s.crc_reload_accuracy.sd, 0.0);
  // Trials run with different group sizes cannot be aggregated; nor can no trials.
  auto mixed = trials;
  mixed[1].radar[1].group_size = 32;
  EXPECT_NE(error_of([&] { summarize_trials(mixed, 0.11); }).find("different RADAR"),
            std::string::npos);
  EXPECT_THROW(summarize_trials({}, 0.11), Error);
}

TEST_F(SeededTest, BenchOneModelRunsEveryTrialAndAggregatesThem) {
  const models::Model net = trained_small_net();
  const BenchOptions o = tiny_options();
  const auto pool = small_data(128, 2);
  const auto eval_set = small_data(64, 3);
  const ModelBench m = bench_one_model("small", net, pool, eval_set, o);
  EXPECT_EQ(m.label, "small");
  EXPECT_GT(m.quantized_accuracy, 0.4);  // learned something (4 classes)
  ASSERT_EQ(m.trials.size(), 3u);
  std::vector<double> detected_g4, end;
  for (const auto& t : m.trials) {
    EXPECT_GE(t.flips.size(), 4u);  // one PBFA iteration may flip several bits
    EXPECT_EQ(t.pbfa_accuracy.size(), t.flips.size());
    EXPECT_EQ(t.random_accuracy.size(), 2u);
    ASSERT_EQ(t.radar.size(), 2u);
    for (const auto& r : t.radar) {
      EXPECT_EQ(r.n_flips, 3);
      EXPECT_GE(r.n_detected, 0);
      EXPECT_LE(r.n_detected, r.n_flips);
      // Flips sharing a group come at least in pairs.
      EXPECT_LE(r.n_shared, r.n_flips);
      EXPECT_NE(r.n_shared, 1);
      for (const double acc : {r.recovered_accuracy, r.marked_accuracy, r.oracle_accuracy}) {
        EXPECT_GE(acc, 0.0);
        EXPECT_LE(acc, 1.0);
      }
      // The finer recovery never zeroes more than the paper's.
      EXPECT_LE(r.n_marked_zeroed, r.n_weights_zeroed);
    }
    EXPECT_EQ(t.pbfa_steps.size() > 0, true);
    EXPECT_GE(t.batch_agreement, 0.0);
    detected_g4.push_back(static_cast<double>(t.radar[0].n_detected));
    end.push_back(t.pbfa_accuracy.back());
  }
  // The summary is the hand computation over the returned trials.
  const double mean_g4 = (detected_g4[0] + detected_g4[1] + detected_g4[2]) / 3;
  double var = 0;
  for (double d : detected_g4) var += (d - mean_g4) * (d - mean_g4);
  EXPECT_DOUBLE_EQ(m.summary.radar[0].detected_stats.mean, mean_g4);
  EXPECT_DOUBLE_EQ(m.summary.radar[0].detected_stats.sd, std::sqrt(var / 2));
  EXPECT_DOUBLE_EQ(m.summary.radar[0].detection_rate, mean_g4 / 3);
  EXPECT_DOUBLE_EQ(m.summary.pbfa_end.mean, (end[0] + end[1] + end[2]) / 3);
  // One row per batch size and SIMD kernel of this CPU (scalar when it has none), best last.
  const size_t n_kernels = std::max<size_t>(1, supported_check_kernels().size() - 1);
  ASSERT_EQ(m.overhead.size(), 2 * n_kernels);
  EXPECT_EQ(m.overhead.front().batch, 1);
  EXPECT_EQ(m.overhead.back().batch, 8);
  EXPECT_EQ(m.overhead.back().kernel, best_check_kernel());
  EXPECT_GT(m.overhead.back().timing.t_read_us, 0.0);
  EXPECT_GE(m.overhead.back().timing.t_check_us, 0.0);
  EXPECT_GT(m.overhead.back().timing.t_check_only_us, 0.0);
  EXPECT_EQ(check_kernel(), best_check_kernel());  // the timing restored the process's kernel
  ASSERT_EQ(m.evasion.size(), 2u);
  EXPECT_EQ(m.evasion[1].group_size, 8);
  EXPECT_EQ(m.evasion[1].n_trials, 200);
  // The tables have a row per model (per G for RADAR and evasion, per batch for the overhead).
  BenchResult result;
  result.options = o;
  result.eval_images = eval_set.size();
  result.models = {m};
  EXPECT_EQ(result.attack_table().n_rows(), 1u);
  EXPECT_EQ(result.radar_table().n_rows(), 2u);
  EXPECT_EQ(result.overhead_table().n_rows(), 2 * n_kernels);
  EXPECT_EQ(result.evasion_table().n_rows(), 2u);
  EXPECT_NE(result.to_string().find("Stretch"), std::string::npos);
  const auto json = result.to_json();
  EXPECT_EQ(json.at("small").at("seeds").size(), 3u);
  EXPECT_EQ(json.at("small").at("radar").at(0).at("detected").size(), 3u);
  EXPECT_NE(result.accuracy_plot().render().find("small PBFA"), std::string::npos);
  EXPECT_NE(result.detection_plot().render().find("<svg"), std::string::npos);
}

TEST_F(SeededTest, BenchModelTrainsOnceAndIsReusedFromTheCache) {
  TempDir cache;
  train::set_cache_dir(cache.path());
  BenchOptions o;
  o.vgg_width = 0.125;
  o.epochs = 1;
  BenchData data;
  data.name = "synthetic";
  data.train = data::make_synthetic(32, 1, 32, 10, 1);
  data.test = data::make_synthetic(16, 1, 32, 10, 2);
  const auto recipe = bench_recipe("vgg11_bn", o, data.name);
  EXPECT_EQ(recipe.arch.width_mult, 0.125);
  EXPECT_EQ(bench_recipe("resnet20", o).arch.width_mult, 1.0);  // the width is VGG's only
  EXPECT_NE(recipe.key(), bench_recipe("vgg11_bn", o).key());   // the data is in the key
  const std::string path = train::cached_path(recipe);
  EXPECT_FALSE(file_exists(path));
  models::Model first = bench_model("vgg11_bn", o, data);
  EXPECT_TRUE(file_exists(path));
  models::Model second = bench_model("vgg11_bn", o, data);
  auto a = first->parameters();
  auto b = second->parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::equal(a[i], b[i]));
  train::set_cache_dir("");
}

TEST_F(SeededTest, RunBenchOnSyntheticDataReturnsOneModelPerArch) {
  TempDir cache;
  train::set_cache_dir(cache.path());
  BenchOptions o;
  o.archs = {"vgg11_bn"};
  o.vgg_width = 0.125;
  o.epochs = 1;
  o.n_seeds = 2;
  o.eval_size = 16;
  o.trial.n_flips = 2;
  o.trial.n_defended_flips = 1;
  o.trial.n_random_flips = 1;
  o.trial.group_sizes = {8};
  o.trial.attack_batch = 8;
  o.trial.pbfa.k_top = 10;
  o.evasion_trials = 0;
  o.overhead_batch = 4;
  o.overhead_reps = 1;
  BenchData data;
  data.name = "synthetic";
  data.train = data::make_synthetic(48, 1, 32, 10, 1);
  data.test = data::make_synthetic(32, 1, 32, 10, 2);
  const BenchResult result = run_bench(o, data);
  EXPECT_EQ(result.train_images, 48);
  EXPECT_EQ(result.eval_images, 16);
  ASSERT_EQ(result.models.size(), 1u);
  EXPECT_EQ(result.models[0].label, "vgg11_bn x0.125");
  EXPECT_EQ(result.models[0].trials.size(), 2u);
  EXPECT_EQ(result.models[0].summary.n_trials, 2);
  EXPECT_TRUE(result.models[0].evasion.empty());
  EXPECT_EQ(result.evasion_table().n_rows(), 0u);
  EXPECT_EQ(result.to_string().find("Stretch"), std::string::npos);
  EXPECT_TRUE(file_exists(train::cached_path(bench_recipe("vgg11_bn", o, "synthetic"))));
  // Bad options name their field.
  o.n_seeds = -1;
  EXPECT_NE(error_of([&] { run_bench(o, data); }).find("n_seeds"), std::string::npos);
  o.n_seeds = 1;
  o.trial.n_defended_flips = 3;
  EXPECT_NE(error_of([&] { run_bench(o, data); }).find("n_defended_flips"), std::string::npos);
  train::set_cache_dir("");
}

TEST(ReferenceModels, ListTheBenchDefaultsAndTheTourModel) {
  const auto refs = reference_models();
  std::set<std::string> names;
  for (const auto& r : refs) {
    names.insert(r.name);
    EXPECT_FALSE(r.description.empty());
    EXPECT_TRUE(r.recipe && r.build);
  }
  EXPECT_EQ(names.size(), refs.size());
  ASSERT_EQ(names.count("bitflip-resnet20"), 1u);
  ASSERT_EQ(names.count("bitflip-vgg11-x0.25"), 1u);
  EXPECT_EQ(names.count("resnet20-fmnist"), 1u);
  const BenchOptions defaults;
  for (const auto& r : refs) {
    if (r.name == "bitflip-resnet20") {
      EXPECT_EQ(r.recipe().key(), bench_recipe("resnet20", defaults).key());
    }
    if (r.name == "bitflip-vgg11-x0.25") {
      EXPECT_EQ(r.recipe().key(), bench_recipe("vgg11_bn", defaults).key());
      EXPECT_EQ(r.recipe().arch.width_mult, 0.25);
    }
  }
}

TEST_F(SeededTest, TourRowReportsTheTrialOnTheGivenModel) {
  const QuantizedModel clean = quantize_model(trained_small_net(), 8);
  TourTrialOptions options;
  options.n_flips = 4;
  options.n_defended_flips = 2;
  options.group_size = 4;
  const TourRow row =
      tour_row(clean, small_data(64, 2), small_data(64, 3), 5, "small ResNet", options);
  EXPECT_EQ(row.system, "bitflip: PBFA on 8-bit small ResNet");
  EXPECT_NE(row.measured.find("after 2 PBFA flips"), std::string::npos);
  EXPECT_NE(row.measured.find("RADAR G=4"), std::string::npos);
  EXPECT_NE(row.measured.find("(64 test images)"), std::string::npos);
  EXPECT_FALSE(row.paper.empty());
}

TEST_F(SeededTest, ProtectAttackAndVerifyASmallModel) {
  QuantizedModel model = quantize_model(trained_small_net(), 8);
  const RadarKey key = RadarKey::from_seed(3);
  const ProtectResult protect = protect_model(model, key, RadarOptions{8, 2});
  int64_t n_weights = 0, n_groups = 0;
  for (const auto& w : model.weights) {
    n_weights += w.numel();
    n_groups += (w.numel() + 255) / 256 * 32;  // zero-padded to 32 G codes per layer
  }
  EXPECT_EQ(protect.n_weights, n_weights);
  EXPECT_EQ(protect.golden.n_groups(), n_groups);
  EXPECT_DOUBLE_EQ(protect.storage_fraction, 2.0 * n_groups / (8.0 * n_weights));
  EXPECT_EQ(protect.table(123).n_rows(), 1u);
  const Radar radar(key, RadarOptions{8, 2}, model.weights);
  const auto eval_set = small_data(64, 3);
  // Clean: OK, nothing zeroed, accuracy unchanged.
  QuantizedModel clean = model.clone();
  const VerifyResult ok = verify_model(clean, radar, protect.golden, true, &eval_set);
  EXPECT_TRUE(ok.check.clean());
  EXPECT_FALSE(ok.recovered);
  EXPECT_EQ(ok.to_string().rfind("OK:", 0), 0u);
  EXPECT_EQ(ok.accuracy_after, ok.accuracy_before);
  EXPECT_EQ(ok.exit_code(), 0);
  // PBFA: a row per flip after the clean row; the JSON carries the accuracy after each flip.
  AttackRunOptions attack;
  attack.attack.n_flips = 3;
  attack.attack_batch = 16;
  const auto pool = small_data(64, 4);
  const AttackRun run = attack_model(model, eval_set, &pool, attack);
  ASSERT_GE(run.result.flips.size(), 3u);
  EXPECT_EQ(run.table().n_rows(), run.result.flips.size() + 1);
  EXPECT_EQ(run.to_json().at("flips").size(), run.result.flips.size());
  EXPECT_NE(run.summary().find("pbfa flips"), std::string::npos);
  EXPECT_NE(run.plot("t").render().find("pbfa"), std::string::npos);
  EXPECT_THROW(attack_model(model, eval_set, nullptr, attack), Error);  // PBFA needs a pool
  // An MSB flip is always detected; recovery zeroes its group (8 weights, fewer in a tail).
  QuantizedModel hit = clean.clone();
  hit.weights[0].flip_bit(5, 7);
  hit.sync();
  const VerifyResult bad = verify_model(hit, radar, protect.golden, true, &eval_set);
  EXPECT_FALSE(bad.check.clean());
  EXPECT_EQ(bad.exit_code(), kVerifyMismatchExit);
  EXPECT_EQ(bad.exit_code(), 3);
  EXPECT_TRUE(bad.recovered);
  EXPECT_GE(bad.weights_zeroed, 1);
  EXPECT_LE(bad.weights_zeroed, 8 * bad.check.n_flagged_groups());
  EXPECT_NE(bad.to_string().find("MISMATCH"), std::string::npos);
  // It names the layer and the flagged group.
  EXPECT_NE(bad.to_string().find(model.weights[0].name), std::string::npos);
  EXPECT_NE(bad.to_string().find(std::to_string(radar.layout(0).group_of(5))), std::string::npos);
  EXPECT_EQ(bad.to_json().at("weights_zeroed"), bad.weights_zeroed);
  EXPECT_EQ(hit.weights[0].values.view(-1)[5].item<int32_t>(), 0);
}

TEST(AttackMethod, ParsesItsNamesAndListsThemOnError) {
  EXPECT_EQ(parse_attack_method("pbfa"), AttackMethod::pbfa);
  EXPECT_EQ(parse_attack_method("random"), AttackMethod::random);
  EXPECT_EQ(attack_method_name(AttackMethod::random), "random");
  const std::string error = error_of([] { parse_attack_method("hammer"); });
  EXPECT_NE(error.find("hammer"), std::string::npos);
  EXPECT_NE(error.find("pbfa or random"), std::string::npos);
}

}  // namespace
}  // namespace tessera::bitflip
