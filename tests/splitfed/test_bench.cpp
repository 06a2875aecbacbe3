// The splitfed experiments as library calls, each on tiny options (synthetic 8x8 data, VGG-11 at
// 1/16 width, one epoch): what they return (counts, ordering, invariants) and their bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <sys/stat.h>

#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/image.h"
#include "tessera/models/registry.h"
#include "tessera/splitfed/bench.h"
#include "tessera/train/cache.h"
#include "test_support.h"

namespace tessera::splitfed {
namespace {

/// VGG-11-BN at 1/16 width on 1x8x8 inputs, 10 classes, no dropout.
SflRunOptions tiny_run() {
  SflRunOptions r;
  r.sfl.model.image_size = 8;
  r.sfl.model.width_mult = 0.0625;
  r.sfl.model.extra = {{"dropout", 0.0}};
  r.sfl.n_clients = 2;
  r.sfl.epochs = 1;
  r.sfl.batch_size = 16;
  r.sfl.schedule = "constant";
  r.sfl.augment_pad = 0;
  r.sfl.seed = 3;
  r.data.source = DataSource::synthetic;
  r.data.synthetic_train = 120;
  r.data.synthetic_test = 60;
  r.data.train_samples = 90;  // 30 training images the target never sees (GM-ME held out)
  r.data.test_samples = 0;
  return r;
}

/// A trained tiny run saved to `path`; returns its options.
SflOptions save_tiny_run(const SflRunOptions& r, const std::string& path) {
  const SflData d = load_sfl_data(r.data, r.sfl.model.image_size);
  const SflOptions o = r.resolve(d.train.size());
  const RunResult run = run_in_process(o, d.train, &d.test);
  save_run(path, o, run.client_state, run.server_state);
  return o;
}

class BenchTest : public testing::SeededTest {
 protected:
  void SetUp() override {
    testing::SeededTest::SetUp();
    train::set_cache_dir(cache_.path());
  }
  void TearDown() override { train::set_cache_dir(""); }
  testing::TempDir cache_;
};

TEST_F(BenchTest, ParsersRoundTripAndRefuseUnknownNames) {
  for (const auto kind : all_extraction_attacks()) {
    EXPECT_EQ(parse_extraction_attack(extraction_attack_name(kind)), kind);
  }
  EXPECT_EQ(extraction_attack_label(ExtractionAttackKind::softtrain), "SoftTrain-ME");
  EXPECT_EQ(parse_gm_aux("heldout"), GmAux::heldout);
  EXPECT_THROW(parse_gm_aux("public"), Error);
  EXPECT_EQ(parse_data_source(data_source_name(DataSource::cifar100)), DataSource::cifar100);
  EXPECT_THROW(parse_data_source("mnist"), Error);
  EXPECT_EQ(parse_mi_task_pair("cifar"), MiTaskPair::cifar);
  EXPECT_THROW(parse_ordering("v3"), Error);
  EXPECT_EQ(parse_partition(partition_name(Partition::label_shards)), Partition::label_shards);

  const MeDefense l1 = parse_me_defense("l1:1.2e-4");
  EXPECT_EQ(l1.kind, MeDefenseKind::l1);
  EXPECT_DOUBLE_EQ(l1.strength, 1.2e-4);
  EXPECT_EQ(l1.name(), "l1:1.2e-4");
  EXPECT_DOUBLE_EQ(l1.apply(SflOptions{}).client_l1, 1.2e-4);
  EXPECT_DOUBLE_EQ(parse_me_defense("noise:0.01").apply(SflOptions{}).grad_noise, 0.01);
  for (const std::string bad : {"noise", "dp:0.1", "l2:x", "l2:0.1x", "noise:-1"}) {
    EXPECT_THROW(parse_me_defense(bad), Error) << bad;
  }

  EXPECT_EQ(parse_classes("5-9"), (std::vector<int64_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(parse_classes("0,2,4"), (std::vector<int64_t>{0, 2, 4}));
  EXPECT_TRUE(parse_classes("all").empty());
  EXPECT_EQ(classes_name(parse_classes("5-9")), "5-9");
  EXPECT_EQ(classes_name({0, 2, 4}), "0,2,4");
  EXPECT_EQ(classes_name({}), "all");
  EXPECT_THROW(parse_classes("9-5"), Error);
  EXPECT_THROW(parse_classes("1,a"), Error);
}

TEST_F(BenchTest, RunOptionsResolveTheCutFromTheServerLayers) {
  SflRunOptions r = tiny_run();
  const SflOptions o = r.resolve(90);
  models::Model probe = models::create(o.model);
  EXPECT_EQ(server_layers_of_cut(probe, o.split.cut), 5);
  EXPECT_EQ(o.n_train, 90);
  EXPECT_FALSE(o.augment_flip);  // no crop, no flip
  r.sfl.split.cut = 4;
  EXPECT_EQ(r.resolve(90).split.cut, 4);
  r.data.train_samples = -1;
  EXPECT_THROW(r.validate(), Error);
  const SflData d = load_sfl_data(tiny_run().data, 8);
  EXPECT_EQ(d.train.size(), 90);
  EXPECT_EQ(d.test.size(), 60);
  EXPECT_EQ(history_table({EpochRecord{}, EpochRecord{}}).n_rows(), 2u);
}

TEST_F(BenchTest, AttackerDataIsASeededFractionAndHeldOutImagesAreDisjoint) {
  const data::Dataset train = data::make_synthetic(200, 1, 8, 10, 5);
  const data::Dataset a = attacker_data(train, 0.05, 7), b = attacker_data(train, 0.05, 7);
  EXPECT_EQ(a.size(), 10);
  EXPECT_TRUE(torch::equal(a.images, b.images));
  EXPECT_FALSE(torch::equal(a.images, attacker_data(train, 0.05, 8).images));
  EXPECT_EQ(attacker_data(train, 1e-6, 7).size(), 1);
  EXPECT_THROW(attacker_data(train, 0.0, 7), Error);
  const data::Dataset held = heldout_images(train, 150);
  EXPECT_EQ(held.size(), 50);
  EXPECT_TRUE(torch::equal(held.images[0], train.images[150]));
  EXPECT_THROW(heldout_images(train, 200), Error);
}

TEST_F(BenchTest, TrainSflRunsInProcessWithTheCentralBaseline) {
  TrainSflOptions t;
  t.run = tiny_run();
  t.central = true;
  const TrainSflResult r = train_sfl(t);
  EXPECT_EQ(r.run.history.size(), 1u);
  EXPECT_EQ(r.sfl.n_train, 90);
  ASSERT_TRUE(r.central.has_value());
  EXPECT_FALSE(r.central->cached);
  EXPECT_EQ(r.central->test.n, 60);
  EXPECT_NE(r.to_string().find("central (same model"), std::string::npos);
  EXPECT_DOUBLE_EQ(r.to_json().at("central_accuracy").get<double>(), r.central->test.accuracy);
  // Trained here, central has a per-epoch curve beside SFL's.
  ASSERT_EQ(r.central->history.size(), 1u);
  EXPECT_EQ(r.central->history[0].test_accuracy, r.central->test.accuracy);
  EXPECT_EQ(r.convergence_table().n_rows(), 1u);
  EXPECT_EQ(r.epoch_within(1000.0), 1);
  EXPECT_EQ(r.epoch_within(-1000.0), -1);
  EXPECT_NE(r.svg().find("central"), std::string::npos);
  // Cached on the second run: no curve, its final accuracy drawn flat.
  const TrainSflResult again = train_sfl(t);
  ASSERT_TRUE(again.central->cached);
  EXPECT_TRUE(again.central->history.empty());
  EXPECT_EQ(again.convergence_table().n_rows(), 0u);
  EXPECT_EQ(again.epoch_within(1000.0), -1);
  EXPECT_NE(again.svg().find("cached: final accuracy"), std::string::npos);
}

TEST_F(BenchTest, SflMeetsCentralFromTheFirstEpochThatStaysWithinThePoints) {
  TrainSflResult r;
  r.central = CentralResult{};
  const std::vector<double> sfl = {0.5, 0.8, 0.7, 0.85}, central = {0.6, 0.805, 0.74, 0.855};
  for (size_t e = 0; e < sfl.size(); ++e) {
    EpochRecord record;
    record.epoch = static_cast<int64_t>(e);
    record.test_accuracy = sfl[e];
    r.run.history.push_back(record);
    train::EpochStats stats;
    stats.epoch = static_cast<int64_t>(e) + 1;
    stats.test_accuracy = central[e];
    r.central->history.push_back(stats);
  }
  // Gaps 10, 0.5, 4 and 0.5 points: within 1 point at epochs 2 and 4, staying within from 4.
  EXPECT_EQ(r.epoch_within(1.0), 4);
  EXPECT_EQ(r.epoch_within(5.0), 2);
  EXPECT_EQ(r.epoch_within(20.0), 1);
  EXPECT_EQ(r.epoch_within(0.1), -1);
  EXPECT_EQ(r.convergence_table().to_json()[2].at("gap (pts)"), "4.00");
  r.central->history.pop_back();  // curves of different lengths are not compared
  EXPECT_EQ(r.epoch_within(100.0), -1);
}

TEST_F(BenchTest, ServeAndJoinGiveTheInProcessModelWithOneClient) {
  testing::TempDir dir;
  ServeOptions s;
  s.run = tiny_run();
  s.run.sfl.n_clients = 1;
  s.listen = "127.0.0.1:50791";
  s.tokens = dir.file("tokens.txt");
  testing::write_bytes(s.tokens, "client0 secret\n");
  s.checkpoint = dir.file("server.ckpt");
  JoinOptions j;
  j.net.address = s.listen;
  j.token_file = s.tokens;
  j.data = s.run.data;
  j.image_size = 8;
  j.retry_s = 20;
  ServeResult served;
  std::thread server([&] { served = serve(s); });
  const ClientReport client = join(j);
  server.join();
  EXPECT_EQ(client.epochs_active, 1);
  EXPECT_TRUE(file_exists(s.checkpoint));
  TrainSflOptions t;
  t.run = s.run;
  EXPECT_DOUBLE_EQ(served.run.final_test_accuracy, train_sfl(t).run.final_test_accuracy);
  EXPECT_NE(served.to_string().find("SFL over gRPC"), std::string::npos);
  s.tls_key = "key.pem";  // without --tls-cert
  EXPECT_THROW(serve(s), Error);
}

TEST_F(BenchTest, OfflineAttackMatchesADirectEvaluationOfTheSavedRun) {
  testing::TempDir dir;
  const SflRunOptions r = tiny_run();
  const SflOptions o = save_tiny_run(r, dir.file("run.safetensors"));
  OfflineAttackOptions a;
  a.run = dir.file("run.safetensors");
  a.attack = ExtractionAttackKind::softtrain;
  a.budget = 500;  // one query batch of the 45 attacker images x 10 classes
  a.attacker.surrogate_epochs = 1;
  a.attacker.attacker_fraction = 0.5;
  a.data = r.data;
  const OfflineAttackResult result = offline_attack(a);
  const SavedRun saved = load_run(a.run);
  models::Model full = full_model(saved.options, saved.client, saved.server);
  const data::Dataset test = load_split(r.data, "test", 8);
  EXPECT_DOUBLE_EQ(result.target_accuracy, train::evaluate(full, test).accuracy);
  EXPECT_EQ(result.extraction.attack, ExtractionAttackKind::softtrain);
  EXPECT_GT(result.extraction.queries_used, 0);
  EXPECT_LE(result.extraction.queries_used, a.budget);
  EXPECT_EQ(result.table().n_rows(), 1u);
  EXPECT_EQ(result.to_json().at("target_accuracy").get<double>(), result.target_accuracy);
  a.run = dir.file("missing.safetensors");
  EXPECT_THROW(offline_attack(a), Error);
  EXPECT_EQ(o.n_train, 90);
}

TEST_F(BenchTest, BenchMeSweepsAttacksBudgetsLayersDefensesAndOnline) {
  MeBenchOptions b;
  b.run = tiny_run();
  b.attacker.surrogate_epochs = 1;
  b.attacker.attacker_fraction = 0.2;
  b.attacker.craft_steps = 2;
  b.attacker.gm_aux = GmAux::heldout;
  b.layers = {2, 3};
  b.budgets = {400, 800};
  b.attacks = {ExtractionAttackKind::craft, ExtractionAttackKind::gm, ExtractionAttackKind::train};
  b.defenses = {parse_me_defense("l1:0.001")};
  b.online = {ExtractionAttackKind::train};
  const MeBenchResult r = bench_me(b);
  ASSERT_EQ(r.targets.size(), 2u);  // SFL and central
  EXPECT_EQ(r.targets[1].training, "central");
  EXPECT_NE(r.targets[1].seconds, "cached");
  EXPECT_DOUBLE_EQ(r.targets[0].accuracy, r.target_accuracy);
  // craft and gm: 2 budgets x 2 layers; train: one budget-free row x 2 layers.
  ASSERT_EQ(r.offline.size(), 10u);
  for (const auto& row : r.offline) {
    EXPECT_LE(row.result.queries_used, row.budget);
    EXPECT_EQ(row.attack == ExtractionAttackKind::train, row.budget == 0);
  }
  EXPECT_EQ(r.offline[0].server_layers, 2);
  EXPECT_EQ(r.offline[1].server_layers, 3);
  EXPECT_EQ(r.accuracy_table().n_rows(), 5u);
  EXPECT_EQ(r.fidelity_table().to_json()[4].at("L=3").get<std::string>(),
            percent(r.offline[9].result.best_fidelity));
  ASSERT_EQ(r.defenses.size(), 2u);
  EXPECT_EQ(r.defenses[0].name, "none");
  EXPECT_DOUBLE_EQ(r.defenses[0].target_accuracy, r.target_accuracy);
  EXPECT_EQ(r.defenses[1].name, "l1:0.001");
  EXPECT_EQ(r.defenses[1].attack_accuracy.size(), 3u);
  ASSERT_EQ(r.online.size(), 1u);
  EXPECT_EQ(r.online[0].budget, 0);
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j.at("offline").size(), 10u);
  EXPECT_EQ(j.at("gm_aux"), "heldout");
  EXPECT_TRUE(j.contains("defense_table") && j.contains("online_table"));
  const std::string text = r.to_string();
  EXPECT_NE(text.find("Surrogate accuracy %"), std::string::npos);
  EXPECT_NE(text.find("Online attacks"), std::string::npos);
  EXPECT_NE(r.svg().find("Craft-ME L=3"), std::string::npos);
  // The central baseline now comes from the model cache.
  b.attacks = {ExtractionAttackKind::train};
  b.defenses.clear();
  b.online.clear();
  const MeBenchResult again = bench_me(b);
  EXPECT_EQ(again.targets[1].seconds, "cached");
  EXPECT_DOUBLE_EQ(again.targets[1].accuracy, r.targets[1].accuracy);
  b.budgets.clear();
  EXPECT_THROW(bench_me(b), Error);
}

TEST_F(BenchTest, BenchMeAttacksASavedTargetWithoutTraining) {
  testing::TempDir dir;
  const SflRunOptions run = tiny_run();
  save_tiny_run(run, dir.file("target.safetensors"));
  MeBenchOptions b;
  b.run = run;
  b.run.sfl.epochs = 99;  // replaced by the saved run's options
  b.target_run = dir.file("target.safetensors");
  b.attacker.surrogate_epochs = 1;
  b.layers = {5};
  b.budgets = {100};
  b.attacks = {ExtractionAttackKind::train};
  const MeBenchResult r = bench_me(b);
  ASSERT_EQ(r.targets.size(), 1u);
  EXPECT_EQ(r.targets[0].seconds, "-");
  EXPECT_EQ(r.target.epochs, 1);
  EXPECT_EQ(r.offline.size(), 1u);
  // A sweep over the attacker's data share: one row per share, in the table and the plot.
  b.fractions = {0.1, 0.5};
  const MeBenchResult swept = bench_me(b);
  ASSERT_EQ(swept.offline.size(), 2u);
  EXPECT_EQ(swept.offline[0].images, 9);  // of the run's 90 training images
  EXPECT_EQ(swept.offline[1].images, 45);
  const nlohmann::json table = swept.accuracy_table().to_json();
  EXPECT_EQ(table[1].at("attacker data"), "50% (45 images)");
  EXPECT_NE(swept.svg().find("10% data"), std::string::npos);
  b.fractions = {1.5};
  EXPECT_THROW(bench_me(b), Error);
}

TEST_F(BenchTest, BenchTransportRunsTheProcessesAndReadsTheServerReport) {
  testing::TempDir dir;
  // A stand-in for the tessera binary: the server writes its report, clients succeed.
  const std::string fake = dir.file("fake-tessera.sh");
  write_file_atomic(fake,
                    "#!/bin/sh\n"
                    "while [ $# -gt 0 ]; do\n"
                    "  if [ \"$1\" = --json ]; then\n"
                    "    echo '{\"results\":{\"sfl\":{\"final_test_accuracy\":0.25,"
                    "\"seconds\":1.5}}}' > \"$2\"; fi\n"
                    "  shift\n"
                    "done\n");
  chmod(fake.c_str(), 0755);
  TransportBenchOptions t;
  t.run = tiny_run();
  t.work_dir = dir.file("work");
  t.executable = fake;
  const TransportBenchResult r = bench_transport(t);
  EXPECT_DOUBLE_EQ(r.grpc_accuracy, 0.25);
  EXPECT_DOUBLE_EQ(r.grpc_server_seconds, 1.5);
  EXPECT_GE(r.in_process_accuracy, 0.0);
  EXPECT_GE(r.in_process_seconds, r.in_process_training_seconds);
  EXPECT_EQ(r.n_clients, 2);
  EXPECT_EQ(r.table().n_rows(), 2u);
  EXPECT_NE(r.summary().find("wall ratio"), std::string::npos);
  EXPECT_TRUE(file_exists(t.work_dir + "/client1.log"));
  const SflOptions o = t.run.resolve(90);
  const auto server = transport_server_command(t, o);
  const auto arch = std::find(server.begin(), server.end(), "--arch");
  ASSERT_NE(arch, server.end());
  EXPECT_EQ(*(arch + 1), "vgg11_bn");
  const auto cut = std::find(server.begin(), server.end(), "--cut");
  EXPECT_EQ(*(cut + 1), std::to_string(o.split.cut));
  EXPECT_EQ(transport_client_command(t, o, 1)[8], "client1");
  write_file_atomic(fake, "#!/bin/sh\nexit 1\n");
  EXPECT_THROW(bench_transport(t), Error);
}

TEST_F(BenchTest, AttackMiRunsTheSuiteAgainstASavedRun) {
  testing::TempDir dir;
  SflRunOptions r = tiny_run();
  r.sfl.split.cut = 4;  // smashed data 2x2: a power-of-two fraction of the 8x8 image
  save_tiny_run(r, dir.file("run.safetensors"));
  AttackMiOptions a;
  a.run = dir.file("run.safetensors");
  a.data = r.data;
  a.attack.decoders = {parse_decoder("conv_normN0C16")};
  a.attack.epochs = 1;
  a.attack.targets = 8;
  a.attack.aux = 40;
  a.attack.optimization_steps = 2;
  a.defense.kind = DefenseKind::dropout;
  const AttackMiResult m = attack_mi(a);
  ASSERT_EQ(m.attacks.size(), 2u);
  EXPECT_EQ(m.attacks[0].attack, "conv_normN0C16");
  EXPECT_EQ(m.attacks[1].attack, "optimization");
  EXPECT_LE(m.attacks[m.strongest].metrics.mse, m.attacks[1 - m.strongest].metrics.mse);
  EXPECT_GT(m.reference.mse, 0.0);
  EXPECT_EQ(m.table().n_rows(), 2u);
  EXPECT_NE(m.summary().find("no-information reference"), std::string::npos);
  EXPECT_NE(m.summary().find("label-only reference"), std::string::npos);
  const torch::Tensor g = m.grid();
  const torch::Tensor plain =
      image::grid({m.targets, m.attacks[0].reconstructions, m.attacks[1].reconstructions});
  EXPECT_EQ(g.size(1), plain.size(1));
  EXPECT_GT(g.size(2), plain.size(2));     // the label column
  EXPECT_LT(g.min().item<float>(), 0.5f);  // ink
  // The decoder's training curve (one epoch: one point) and the references in the plot.
  EXPECT_EQ(m.attacks[0].val_curve.size(), 1u);
  EXPECT_NE(m.svg().find("conv_normN0C16"), std::string::npos);
  EXPECT_NE(m.svg().find("label-only reference"), std::string::npos);
  a.classes = {0, 1, 2};  // the run has 10 classes
  EXPECT_THROW(attack_mi(a), Error);
}

TEST_F(BenchTest, MiDefenseSpecsCarryAStrengthPerRow) {
  EXPECT_EQ(parse_mi_defense("ressfl"), MiDefense(DefenseKind::ressfl));
  EXPECT_EQ(parse_mi_defense("ressfl:3"), MiDefense(DefenseKind::ressfl, 3.0));
  EXPECT_EQ(mi_defense_name(parse_mi_defense("laplace:0.5")), "laplace:0.5");
  EXPECT_EQ(parse_mi_defense("bottleneck:4").strength, 4.0);
  EXPECT_EQ(parse_mi_defense("ressfl/freeze"),
            MiDefense(DefenseKind::ressfl, 0.0, ResSflTransfer::freeze));
  EXPECT_EQ(parse_mi_defense("ressfl/lite:0.3"), MiDefense(DefenseKind::ressfl, 0.3));
  EXPECT_EQ(mi_defense_name(parse_mi_defense("ressfl/naive:0.3")), "ressfl/naive:0.3");
  EXPECT_EQ(mi_defense_name(parse_mi_defense("ressfl/lite")), "ressfl");
  for (const char* bad :
       {"none:1", "ressfl:", "ressfl:x", "ressfl:-1", "ressfl:2x", "bottleneck:2.5", "twist:1",
        "dropout/freeze", "ressfl/thaw", "ressfl/"}) {
    EXPECT_THROW(parse_mi_defense(bad), Error) << bad;
  }
  MiBenchOptions b;
  b.defenses = {parse_mi_defense("dropout:1.5")};  // p must stay below 1
  EXPECT_THROW(b.validate(), Error);
  b.defenses = {DefenseKind::ressfl};  // the automatic tau needs the undefended row
  EXPECT_THROW(b.validate(), Error);
  b.tau = 0.5;
  EXPECT_NO_THROW(b.validate());
}

TEST_F(BenchTest, LabelOnlyReferenceIsTheClassMeanOfTheAuxiliaryImages) {
  // Two 1x1x2 targets of classes 0 and 2; auxiliary images of classes 0, 0, 1 (class 2 absent:
  // its target gets the mean of all auxiliary images).
  AttackData d;
  d.targets = torch::tensor({0.5f, 0.5f, 1.0f, 0.0f}).reshape({2, 1, 1, 2});
  d.target_labels = torch::tensor({0, 2}, torch::kLong);
  d.aux = torch::tensor({0.2f, 0.4f, 0.6f, 0.8f, 0.4f, 0.0f}).reshape({3, 1, 1, 2});
  d.aux_labels = torch::tensor({0, 0, 1}, torch::kLong);
  // Guesses: class 0 mean (0.4, 0.6); overall mean (0.4, 0.4).
  // Squared errors: (0.1^2 + 0.1^2) + (0.6^2 + 0.4^2) = 0.02 + 0.52 over 4 values.
  EXPECT_NEAR(label_only_reference(d).mse, 0.54 / 4, 1e-6);
  EXPECT_NEAR(mean_image_reference(d).mse, (0.01 + 0.01 + 0.36 + 0.16) / 4, 1e-6);
  EXPECT_DOUBLE_EQ(reachable_share(0.03, 0.01, 0.05), 0.5);
  EXPECT_TRUE(std::isnan(reachable_share(0.03, 0.05, 0.05)));
  d.aux_labels = torch::Tensor();
  EXPECT_THROW(label_only_reference(d), Error);
}

TEST_F(BenchTest, DefendedTrainingPretrainsAnExpertAndTransfersFromIt) {
  testing::TempDir dir;
  DefendedTrainOptions pre = DefendedTrainOptions::expert_pretraining();
  const SflRunOptions tiny = tiny_run();
  pre.run.sfl.model = tiny.sfl.model;
  pre.run.sfl.epochs = 1;
  pre.run.sfl.batch_size = 16;
  pre.run.sfl.augment_pad = 0;
  pre.run.data = tiny.data;
  pre.defense.decoder = parse_decoder("conv_normN0C16");
  const DefendedTrainResult expert = train_defended(pre);
  EXPECT_EQ(expert.sfl.model.num_classes, 5);
  EXPECT_EQ(expert.sfl.n_clients, 1);
  EXPECT_EQ(expert.sfl.split.bottleneck_channels, 8);
  EXPECT_EQ(expert.table().n_rows(), 1u);
  EXPECT_GT(expert.run.client_seconds_per_step, 0.0);
  EXPECT_NE(expert.summary().find("attacker_aware"), std::string::npos);
  save_run(dir.file("expert.safetensors"), expert.sfl, expert.run.run.client_state,
           expert.run.run.server_state);
  DefendedTrainOptions transfer = pre;
  transfer.classes = {5, 6, 7, 8, 9};
  transfer.defense.kind = DefenseKind::ressfl;
  transfer.from = dir.file("expert.safetensors");
  const DefendedTrainResult t = train_defended(transfer);
  EXPECT_EQ(t.sfl.model.num_classes, 5);
  EXPECT_EQ(t.to_json().at("defense").at("name"), "ressfl");
  // ResSFL's "freeze" transfer: client learning rate 0, so the client keeps the expert's
  // weights (its BN statistics still follow the target data, as in train mode).
  DefendedTrainOptions freeze = transfer;
  freeze.defense.kind = DefenseKind::none;
  freeze.run.sfl.client_lr = 0.0;
  const DefendedTrainResult f = train_defended(freeze);
  ASSERT_EQ(f.run.run.history.size(), 1u);
  EXPECT_EQ(f.run.run.history[0].n_dropped, 0);  // the frozen client ran the epoch
  EXPECT_GT(f.run.run.history[0].n_steps, 0);
  size_t weights = 0;
  for (const auto& [name, tensor] : f.run.run.client_state) {
    if (name.find("running") != std::string::npos || name.find("num_batches") != std::string::npos)
      continue;
    const auto it =
        std::find_if(expert.run.run.client_state.begin(), expert.run.run.client_state.end(),
                     [&](const auto& e) { return e.first == name; });
    ASSERT_NE(it, expert.run.run.client_state.end()) << name;
    EXPECT_TRUE(torch::equal(tensor, it->second)) << name;
    ++weights;
  }
  EXPECT_GT(weights, 0u);
  transfer.run.sfl.split.cut = 5;  // not the expert's split
  EXPECT_THROW(train_defended(transfer), Error);
}

MiBenchOptions tiny_mi() {
  MiBenchOptions b;
  const SflRunOptions tiny = tiny_run();
  b.run.sfl.model = tiny.sfl.model;
  b.run.sfl.epochs = 1;
  b.run.sfl.batch_size = 16;
  b.run.sfl.augment_pad = 0;
  b.run.data = tiny.data;
  b.run.data.synthetic_train = 200;
  b.run.data.train_samples = 0;
  b.run.data.test_samples = 0;
  b.expert_epochs = 1;
  b.expert_decoder = parse_decoder("conv_normN0C16");
  b.checkpoint_decoder = parse_decoder("conv_normN0C16");
  b.attack.decoders = {parse_decoder("conv_normN0C16")};
  b.attack.epochs = 1;
  b.attack.targets = 8;
  b.attack.aux = 16;
  return b;
}

TEST_F(BenchTest, BenchMiTrainsOneExpertPerLambdaOrUsesASavedOne) {
  MiBenchOptions b = tiny_mi();
  b.tau = 0.5;
  b.bottleneck = 3;
  const MiTasks tasks = load_mi_tasks(b);
  SflRunOptions run = b.run;
  run.sfl.split.bottleneck_channels = 3;
  DefenseOptions d;
  d.lambda = 0.3;
  MiExperts experts;
  const SavedRun* first = &experts.get(b, tasks, run, d);
  EXPECT_EQ(first->options.n_clients, 1);
  EXPECT_EQ(&experts.get(b, tasks, run, d), first);  // trained once
  d.lambda = 1.0;
  EXPECT_NE(&experts.get(b, tasks, run, d), first);
  // A saved expert serves every row; the transfer variants run from it.
  testing::TempDir dir;
  save_run(dir.file("expert.safetensors"), first->options, first->client, first->server);
  b.expert_path = dir.file("expert.safetensors");
  b.defenses = {DefenseKind::none, parse_mi_defense("ressfl/naive"),
                parse_mi_defense("ressfl/freeze")};
  const MiBenchResult r = bench_mi(b);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(mi_defense_name(r.rows[2].defense), "ressfl/freeze");
  EXPECT_GT(r.rows[2].mse, 0.0);
  b.expert_path = dir.file("missing.safetensors");
  EXPECT_THROW(b.validate(), Error);
  b.expert_path.clear();
  b.expert_train_samples = -2;
  EXPECT_THROW(b.validate(), Error);
}

TEST_F(BenchTest, BenchMiTrainsEveryDefenseAndAttacksItsCheckpoints) {
  MiBenchOptions b = tiny_mi();
  b.defenses = {DefenseKind::none, DefenseKind::ressfl, DefenseKind::dropout,
                parse_mi_defense("dropout:0.5")};
  b.checkpoints = {0, 1, 5};  // 5 is beyond the run's one epoch
  const MiBenchResult r = bench_mi(b);
  ASSERT_EQ(r.rows.size(), 4u);
  EXPECT_TRUE(r.tau_auto);  // the default: a share of the undefended attack's SSIM
  EXPECT_DOUBLE_EQ(r.options.tau, b.tau_fraction * r.rows[0].ssim);
  // The default bottleneck keeps 1/6 of the input: 1x8x8 in, 2x2 at cut 4: 64 / (6 x 4) -> 3.
  EXPECT_TRUE(r.bottleneck_auto);
  EXPECT_EQ(r.options.bottleneck, 3);
  const MiTasks tasks = load_mi_tasks(b);
  b.compression = 1.0;
  EXPECT_EQ(compression_bottleneck(b, tasks.target), 16);
  EXPECT_EQ(r.rows[1].defense.kind, DefenseKind::ressfl);
  EXPECT_EQ(mi_defense_name(r.rows[3].defense), "dropout:0.5");
  EXPECT_EQ(r.rows[0].checkpoints.size(), 0u);  // only attacker_aware and ressfl are tracked
  ASSERT_EQ(r.rows[1].checkpoints.size(), 2u);
  EXPECT_EQ(r.rows[1].checkpoints[1].first, 1);
  for (const auto& row : r.rows) {
    EXPECT_EQ(row.strongest, "conv_normN0C16");
    EXPECT_GT(row.mse, 0.0);
    EXPECT_EQ(row.reconstructions.size(0), 8);
  }
  const nlohmann::json table = r.table().to_json();
  EXPECT_EQ(table[0].at("acc drop (pts)"), "0.00");
  EXPECT_EQ(table[0].at("client compute (x plain)"), "1.00");
  // The undefended row starts the range; "-" when a weak attack is already past the label-only MSE.
  EXPECT_EQ(table[0].at("share of range %"), r.label_reference.mse > r.rows[0].mse ? "0.0" : "-");
  EXPECT_GT(r.label_reference.mse, 0.0);
  EXPECT_NE(r.to_string().find("label-only reference"), std::string::npos);
  EXPECT_EQ(r.checkpoint_table().n_rows(), 2u);
  EXPECT_EQ(r.to_json().at("rows").size(), 4u);
  EXPECT_EQ(r.grid().size(1), image::grid(std::vector<torch::Tensor>(5, r.targets)).size(1));
  // The best row within each accuracy cost: never below the undefended row's MSE.
  const nlohmann::json pareto = r.pareto_table().to_json();
  ASSERT_EQ(pareto.size(), 4u);
  for (const auto& p : pareto) {
    EXPECT_LE(std::stod(p.at("acc drop (pts)").get<std::string>()),
              std::stod(p.at("acc drop at most (pts)").get<std::string>()));
    EXPECT_GE(std::stod(p.at("attack MSE").get<std::string>()) + 1e-4, r.rows[0].mse);
  }
  EXPECT_NE(r.to_string().find("Best defense at each accuracy cost"), std::string::npos);
  EXPECT_NE(r.svg().find("ressfl"), std::string::npos);
  EXPECT_NE(r.to_string().find("ResSFL transfer"), std::string::npos);
  b.source_classes = {4, 5};
  EXPECT_THROW(bench_mi(b), Error);  // overlaps the target classes
}

TEST_F(BenchTest, TourRowsReportBothExperiments) {
  TourOptions t = tour_options(TourContext{});
  EXPECT_EQ(t.me_run.data.train_samples, 12000);
  EXPECT_EQ(t.mi.run.sfl.epochs, 5);
  t.me_run = tiny_run();
  t.attacker.surrogate_epochs = 1;
  t.mi = tiny_mi();
  const auto me = tour_extraction(t);
  ASSERT_EQ(me.size(), 1u);
  EXPECT_EQ(me[0].system, "splitfed");
  EXPECT_NE(me[0].measured.find("SFL VGG-11 x1/16, 2 clients, 1 ep"), std::string::npos);
  const auto mi = tour_inversion(t);
  ASSERT_EQ(mi.size(), 1u);
  EXPECT_EQ(mi[0].system, "splitfed MI");
  EXPECT_NE(mi[0].measured.find("synthetic 0-4 -> 5-9"), std::string::npos);
  ASSERT_EQ(reference_models().size(), 1u);
  EXPECT_EQ(reference_models()[0].recipe().train_images, 12000);
}

TEST_F(BenchTest, LabelledGridWritesEachLabelLeftOfItsRow) {
  EXPECT_EQ(image::render_text("ab").sizes(), (std::vector<int64_t>{7, 11}));
  EXPECT_TRUE(torch::equal(image::render_text("a"), image::render_text("A")));
  EXPECT_GT(image::render_text("?").sum().item<float>(), 0.0f);
  EXPECT_EQ(image::render_text("~").sum().item<float>(),
            image::render_text("?").sum().item<float>());
  const torch::Tensor rows = torch::ones({2, 1, 8, 8});
  const torch::Tensor g = image::labelled_grid({rows, rows}, {"", "x"});
  // Row 0's label is empty: the column is white there; row 1's holds ink.
  const torch::Tensor column = g.slice(2, 0, g.size(2) - image::grid({rows, rows}).size(2));
  EXPECT_EQ(column.slice(1, 0, 10).min().item<float>(), 1.0f);
  EXPECT_LT(column.slice(1, 10).min().item<float>(), 1.0f);
  EXPECT_THROW(image::labelled_grid({rows}, {"a", "b"}), Error);
}

}  // namespace
}  // namespace tessera::splitfed
