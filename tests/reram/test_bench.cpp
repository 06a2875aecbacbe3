// reram's bench functions on tiny options: map, sweep, the paper bench and its validation
// selection, the cached donors, the tour step and the reference models, on synthetic images and
// tiny models; plus the parse_/_name pairs of the choices they take.
#include <gtest/gtest.h>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/reram/bench.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

class ReramBench : public testing::SeededTest {};

// Learnable synthetic "Fashion-MNIST": 160 training and 64 test images at any size.
ImageLoader synthetic_images() {
  return [](const std::string& split, int64_t size) {
    return split == "train" ? data::make_synthetic(160, 1, size, 10, 1)
                            : data::make_synthetic(64, 1, size, 10, 2);
  };
}

// A tiny 1-channel 10-class model saved to `path`.
models::Model save_tiny_model(const std::string& path, int64_t image_size = 8) {
  models::ModelConfig config;
  config.name = "resnet20";
  config.in_channels = 1;
  config.image_size = image_size;
  config.num_classes = 10;
  config.width_mult = 0.25;
  models::Model model = models::create(config);
  model->eval();
  models::save(path, model);
  return model;
}

TEST_F(ReramBench, ChoicesParseTheirOwnNamesAndListTheValidOnes) {
  for (MappingKind k : {MappingKind::Sme, MappingKind::Baseline})
    EXPECT_EQ(parse_mapping_kind(mapping_kind_name(k)), k);
  for (ImagenetNetwork n : {ImagenetNetwork::ResNet50, ImagenetNetwork::MobileNetV2})
    EXPECT_EQ(parse_imagenet_network(imagenet_network_name(n)), n);
  for (PositionScope s : {PositionScope::Row, PositionScope::Layer})
    EXPECT_EQ(parse_position_scope(position_scope_name(s)), s);
  EXPECT_NE(testing::error_of([] { parse_mapping_kind("isaac"); }).find("sme, baseline"),
            std::string::npos);
  const QuantizerSetting s = parse_quantizer_setting("2:3");
  EXPECT_EQ(s.terms, 2);
  EXPECT_EQ(s.positions, 3);
  EXPECT_EQ(quantizer_setting_name(s), "2:3");
  for (const char* bad : {"2", "a:b", "2:3x", ":3", "2:"}) {
    EXPECT_THROW(parse_quantizer_setting(bad), Error) << bad;
  }
  const BitSparseOptions q = quantizer_of({1, 2}, PositionScope::Layer);
  EXPECT_EQ(q.describe(), "t=1,K=2,layer");
}

TEST_F(ReramBench, MapCountsCrossbarsAndMeasuresAccuracy) {
  testing::TempDir dir;
  models::Model model = save_tiny_model(dir.file("m.safetensors"));
  MapOptions o;
  o.input.model = dir.file("m.safetensors");
  o.eval = true;
  o.eval_images = 40;
  o.recalibrate_bn = 32;
  const MapResult r = run_map(o, synthetic_images());
  EXPECT_GT(r.stats.total.crossbars, 0);
  EXPECT_GT(r.baseline.total.crossbars, 0);
  EXPECT_DOUBLE_EQ(r.reduction, static_cast<double>(r.baseline.total.crossbars) /
                                    static_cast<double>(r.stats.total.crossbars));
  // The eight step combinations: baseline first (= the baseline map), full SME last (= the map).
  ASSERT_EQ(r.ablation.size(), 8u);
  EXPECT_EQ(r.ablation.front().crossbars, r.baseline.total.crossbars);
  EXPECT_EQ(r.ablation.back().crossbars, r.stats.total.crossbars);
  EXPECT_EQ(r.stats_json()["total"]["stats"]["reduction"]["value"].get<double>(), r.reduction);
  EXPECT_EQ(r.layer_table().n_rows(), model->workload().weighted_layers().size());
  ASSERT_TRUE(r.accuracy.has_value());
  EXPECT_EQ(r.accuracy->images, 40);
  EXPECT_EQ(r.accuracy->recalibration_images, 32);
  for (double a : {r.accuracy->float_accuracy, r.accuracy->uniform, r.accuracy->bit_sparse}) {
    EXPECT_GE(a, 0.0);
    EXPECT_LE(a, 1.0);
  }
  EXPECT_NE(r.accuracy_text().find("BN statistics re-estimated over 32"), std::string::npos);
  EXPECT_EQ(r.to_json()["accuracy"]["images"], 40);

  // The baseline alone reduces nothing.
  o.mapping = MappingKind::Baseline;
  o.eval = false;
  const MapResult base = run_map(o, synthetic_images());
  EXPECT_EQ(base.stats.total.crossbars, r.baseline.total.crossbars);
  EXPECT_DOUBLE_EQ(base.reduction, 1.0);
  EXPECT_FALSE(base.accuracy.has_value());
  // A shape-only workload skips the steps that need values; eval needs a model.
  workload::save(dir.file("w.json"), model->workload());
  MapOptions shapes;
  shapes.input.workload = dir.file("w.json");
  const MapResult s = run_map(shapes);
  EXPECT_FALSE(s.sme.bit_sparse || s.sme.squeeze);
  EXPECT_TRUE(s.ablation.empty());
  shapes.eval = true;
  EXPECT_THROW(run_map(shapes), Error);
  shapes.eval = false;
  shapes.input.imagenet = ImagenetNetwork::MobileNetV2;  // two sources
  EXPECT_THROW(run_map(shapes), Error);
}

TEST_F(ReramBench, SweepMapsEveryPointOnceAndPlotsAccuracy) {
  testing::TempDir dir;
  models::Model model = save_tiny_model(dir.file("m.safetensors"));
  SweepOptions o;
  o.input.model = dir.file("m.safetensors");
  o.sizes = {32, 64};
  o.cells = {1, 2};
  o.settings = {{1, 1}, {2, 3}};
  o.eval_images = 32;
  const SweepResult r = run_sweep(o, synthetic_images());
  ASSERT_EQ(r.points.size(), 8u);  // sizes x cells x settings, in that order
  EXPECT_EQ(r.points[0].crossbar, 32);
  EXPECT_EQ(r.points[2].cell_bits, 2);
  EXPECT_EQ(r.points[7].crossbar, 64);
  EXPECT_EQ(r.points[1].quantizer.describe(), "t=2,K=3,row");
  EXPECT_EQ(r.test_images, 32);
  // One point against a direct computation; accuracy depends on the quantizer only.
  const SweepPoint& p = r.points[5];  // 64x64, 1-bit cells, t=2,K=3
  HardwareSpec spec;
  spec.crossbar_rows = spec.crossbar_cols = 64;
  const workload::Workload w = model->workload();
  const auto uniform = quantize_model(model, w, 8);
  EXPECT_EQ(p.baseline_crossbars, map_network(w, uniform, spec, {}).total.crossbars);
  EXPECT_EQ(
      p.sme_crossbars,
      map_network(w, bit_sparse_all(w, uniform, p.quantizer), spec, {true, true}).total.crossbars);
  EXPECT_DOUBLE_EQ(p.reduction(), static_cast<double>(p.baseline_crossbars) / p.sme_crossbars);
  EXPECT_EQ(r.points[1].accuracy, r.points[7].accuracy);
  EXPECT_GE(r.uniform_accuracy, 0.0);
  EXPECT_EQ(r.table().n_rows(), 8u);
  EXPECT_EQ(r.to_json()["points"].size(), 8u);
  const std::string svg = r.svg();
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("64x64, 2-bit cells"), std::string::npos);
  // Without a model there is no accuracy and no plot.
  workload::save(dir.file("w.json"), w);
  SweepOptions synthetic = o;
  synthetic.input = {};
  synthetic.input.workload = dir.file("w.json");
  synthetic.input.synthetic = true;
  const SweepResult no_acc = run_sweep(synthetic);
  EXPECT_EQ(no_acc.points.size(), 8u);
  EXPECT_EQ(no_acc.points[0].accuracy, -1);
  EXPECT_EQ(no_acc.svg(), "");
  synthetic.input.synthetic = false;  // shape-only: nothing to sweep
  EXPECT_THROW(run_sweep(synthetic), Error);
}

SettingResult setting(bool tuned, double val, double reduction) {
  SettingResult s;
  s.fine_tuned = tuned;
  s.val_accuracy = val;
  s.reduction = reduction;
  return s;
}

TEST_F(ReramBench, ValidationSelectionPicksTheLargestReductionWithinBudget) {
  const std::vector<SettingResult> settings = {
      setting(false, 0.800, 1.5),  // 0.0 points down
      setting(true, 0.790, 4.0),   // 1.0 point down: over a 0.3 budget
      setting(false, 0.798, 2.5),  // 0.2 down
      setting(true, 0.799, 2.0),   // 0.1 down
      setting(false, 0.700, 9.0),  // 10 down
      setting(false, 0.799, 2.5),  // tie with #2: the first stays
  };
  EXPECT_EQ(choose_setting(settings, false, 0.8, 0.3), 2);
  EXPECT_EQ(choose_setting(settings, true, 0.8, 0.3), 3);
  EXPECT_EQ(choose_setting(settings, true, 0.8, 1.5), 1);
  EXPECT_EQ(choose_setting(settings, false, 0.8, 100), 4);
  EXPECT_EQ(choose_setting(settings, false, 0.9, 0.3), -1);  // nothing within budget
  EXPECT_EQ(choose_setting({}, false, 0.8, 0.3), -1);
}

TEST_F(ReramBench, DonorsAreTrainedOnceThroughTheModelCache) {
  testing::TempDir dir;
  train::set_cache_dir(dir.path());
  DonorTraining t;
  t.arch = "resnet20";
  t.width_mult = 0.25;
  t.image_size = 8;
  t.epochs = 2;
  t.train_images = 40;
  t.batch_size = 16;
  t.data = "synthetic";
  const data::Dataset train_set = data::make_synthetic(64, 1, 8, 10, 1);
  const train::TrainOptions fit = t.train_options(train_set.size());
  EXPECT_EQ(fit.steps, 2 * 3);  // 2 epochs of ceil(40 / 16) batches
  EXPECT_EQ(fit.warmup_steps, 1);
  EXPECT_TRUE(fit.per_step_schedule);
  EXPECT_EQ(fit.augment_pad, 0);
  EXPECT_FALSE(fit.augment_flip);
  EXPECT_EQ(t.recipe(64).extra["bn_recalibration"], kDonorBatchNormImages);

  Donor first = load_or_train_donor("", t, train_set);
  EXPECT_EQ(first.provenance.rfind("trained here", 0), 0u) << first.provenance;
  EXPECT_TRUE(file_exists(train::cached_path(t.recipe(train_set.size()))));
  Donor again = load_or_train_donor("", t, train_set);
  EXPECT_EQ(again.provenance.rfind("model cache: ", 0), 0u) << again.provenance;
  for (const auto& item : first.model->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), again.model->named_parameters()[item.key()]))
        << item.key();
  }
  // Training is a function of the recipe: the same options train the same weights.
  models::Model direct = train_fashion_model(t, train_set, nullptr);
  EXPECT_TRUE(torch::allclose(direct->parameters()[0], first.model->parameters()[0], 1e-4, 1e-5));
  DonorTraining other = t;
  other.seed = 1;
  EXPECT_NE(other.recipe(64).key(), t.recipe(64).key());
  train::set_cache_dir("");
}

TEST_F(ReramBench, PaperBenchMeasuresChoosesAndFineTunes) {
  testing::TempDir dir;
  train::set_cache_dir(dir.file("cache"));
  BenchOptions o;
  o.networks = {ImagenetNetwork::MobileNetV2};
  o.mobilenet_donor = dir.file("donor.safetensors");
  o.work_dir = dir.file("work");
  o.mobilenet_image_size = 8;
  o.train_images = 64;
  o.val_images = 32;
  o.test_images = 48;
  o.settings = {{2, 3}, {1, 1}};
  o.fine_tune_settings = {{2, 3}};
  o.fine_tune.steps = 2;
  o.fine_tune.batch_size = 16;
  o.max_drop_points = 100;  // every setting is within budget
  // A trained tiny donor of another architecture: its rows are resampled onto MobileNetV2.
  DonorTraining t = o.donor_training(ImagenetNetwork::MobileNetV2);
  t.arch = "resnet20";
  t.width_mult = 0.25;
  t.epochs = 4;
  t.batch_size = 16;
  models::Model donor = train_fashion_model(t, synthetic_images()("train", 8), nullptr);
  models::save(o.mobilenet_donor, donor);

  const BenchResult r = run_bench(o, synthetic_images());
  ASSERT_EQ(r.networks.size(), 1u);
  const NetworkBench& nb = r.networks[0];
  ASSERT_FALSE(nb.donor_at_chance) << nb.test_uniform;
  EXPECT_EQ(nb.donor_provenance, "loaded " + o.mobilenet_donor);
  EXPECT_NE(nb.weight_source.find("resampled"), std::string::npos);
  EXPECT_EQ(nb.baseline_crossbars,
            map_network(mobilenetv2_imagenet(), {}, HardwareSpec{}, {}).total.crossbars);
  ASSERT_EQ(nb.settings.size(), 3u);  // 2:3 plain, 2:3 fine-tuned, 1:1 plain
  EXPECT_FALSE(nb.settings[0].fine_tuned);
  EXPECT_TRUE(nb.settings[1].fine_tuned);
  EXPECT_TRUE(file_exists(nb.settings[1].model_file));
  EXPECT_TRUE(nb.fine_tuned_control);
  for (const SettingResult& s : nb.settings) {
    EXPECT_GT(s.crossbars, 0);
    EXPECT_DOUBLE_EQ(s.reduction, static_cast<double>(nb.baseline_crossbars) / s.crossbars);
  }
  // Fewer bit positions, fewer crossbars; the selection takes the largest reduction.
  EXPECT_GT(nb.settings[2].reduction, nb.settings[0].reduction);
  EXPECT_EQ(nb.chosen_plain, 2);
  EXPECT_EQ(nb.chosen_fine_tuned, 1);
  EXPECT_EQ(nb.ablation_setting, 1);
  ASSERT_EQ(nb.ablation.size(), 8u);
  EXPECT_EQ(nb.ablation.back().crossbars, nb.settings[1].crossbars);
  EXPECT_FALSE(nb.timing.has_value());  // ResNet-50 only
  EXPECT_EQ(r.paper_table().n_rows(), 1u);
  EXPECT_EQ(r.detail_table().n_rows(), 3u);
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j["mobilenetv2"]["chosen_no_fine_tuning"], "t=1,K=1,row");
  EXPECT_EQ(j["mobilenetv2"]["settings"].size(), 3u);
  EXPECT_TRUE(j.contains("paper_table"));

  // An untrained donor is at chance: no drop, no fine-tuning, no selection.
  save_tiny_model(o.mobilenet_donor);
  o.settings = {{2, 3}};
  const NetworkBench chance = run_bench(o, synthetic_images()).networks[0];
  EXPECT_TRUE(chance.donor_at_chance);
  EXPECT_EQ(chance.settings.size(), 1u);
  EXPECT_EQ(chance.chosen_plain, -1);
  o.val_images = 200;  // 64 + 200 > 160 training images
  EXPECT_THROW(run_bench(o, synthetic_images()), Error);
  train::set_cache_dir("");
}

TEST_F(ReramBench, TourReportsBothNetworksBesideThePaper) {
  const std::vector<TourRow> rows = tour(TourContext{"", "", 0});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_NE(rows[0].measured.find("resnet50 crossbars 21900 -> "), std::string::npos)
      << rows[0].measured;
  EXPECT_NE(rows[1].paper.find("2.1x"), std::string::npos) << rows[1].paper;
}

TEST_F(ReramBench, ReferenceModelsAreTheBenchDonors) {
  const std::vector<train::ReferenceModel> refs = reference_models();
  ASSERT_EQ(refs.size(), 2u);
  EXPECT_EQ(refs[0].name, "reram-resnet50-fmnist32");
  EXPECT_EQ(refs[1].name, "reram-mobilenetv2-fmnist16");
  const train::TrainRecipe r50 = refs[0].recipe();
  EXPECT_EQ(r50.arch.extra["zero_init_residual"], 1);
  EXPECT_EQ(r50.train_images, BenchOptions{}.train_images);
  EXPECT_EQ(r50.options.steps, 2 * ((10000 + 127) / 128));
  EXPECT_EQ(r50.key(),
            BenchOptions{}.donor_training(ImagenetNetwork::ResNet50).recipe(60000).key());
  EXPECT_NE(refs[1].recipe().key(), r50.key());
}

}  // namespace
}  // namespace tessera::reram
