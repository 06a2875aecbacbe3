// The obfuscate bench functions on tiny options: the attacker cache, the held-out evaluation, the
// bench (both models, both GAs, saved model files, output equality) and its report.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "tessera/core/fs.h"
#include "tessera/models/model_io.h"
#include "tessera/obfuscate/bench.h"
#include "tessera/train/cache.h"
#include "test_support.h"

namespace tessera::obfuscate {
namespace {

using testing::error_of;

class Bench : public testing::SeededTest {};

ObfuscateBenchOptions tiny(const std::string& dir) {
  ObfuscateBenchOptions o;
  o.image_size = 16;
  o.width_mult = 0.5;
  o.recipe.random.max_log2_channels = 5;
  o.recipe.random.max_conv_units = 5;
  o.recipe.train_nets = 20;
  o.recipe.test_nets = 5;
  o.recipe.trace_repeats = 1;
  o.recipe.attacker.hidden = 16;
  o.recipe.attacker.epochs = 2;
  o.recipe.attacker.dim_epochs = 2;
  o.seq_ga.population = 4;
  o.seq_ga.generations = 2;
  o.dim_ga.population = 2;
  o.dim_ga.generations = 1;
  o.ga_latency_reps = 1;
  o.final_latency_reps = 3;
  o.retime_reps = 3;
  o.eval_images = 8;
  o.data_dir = "";  // synthetic images
  o.save_dir = dir;
  return o;
}

TEST_F(Bench, RunsBothModelsAndSavesRunnableModelFiles) {
  testing::TempDir dir;
  train::set_cache_dir(dir.file("cache"));
  ObfuscateBenchOptions o = tiny(dir.file("out"));
  o.width_mult = 1.0;  // the 64 -> 128 conv exists at full width
  o.image_size = 8;    // the random nets are traced at 8 px too (attacker_recipe)
  const ObfuscateBenchResult r = run_obfuscate_bench(o);
  EXPECT_EQ(r.held_out.nets, 5);
  EXPECT_GT(r.held_out.convs, 0);
  ASSERT_EQ(r.rows.size(), 4u);  // sequence + dimension for each model
  for (const auto& row : r.rows) {
    SCOPED_TRACE(row.model + " " + row.mode);
    EXPECT_GT(row.true_sequence.size(), 10u);
    EXPECT_GE(row.obfuscated_steps, 1);
    EXPECT_EQ(row.compared_images, 8);
    EXPECT_LT(row.max_rel_diff, 1e-4);
    EXPECT_EQ(row.argmax_agreement, 1.0);
    EXPECT_GT(row.clean_us, 0);
    // The chosen genome was re-timed (or is the clean one) and is within budget * (1 - margin).
    EXPECT_LE(row.ga_retimed_overhead, 0.02 * (1.0 - o.seq_ga.margin) + 1e-12);
    EXPECT_TRUE(std::isfinite(row.ga_first_overhead));
    EXPECT_EQ(row.clean_distance, edit_distance(row.clean_prediction, row.true_sequence));
    ASSERT_TRUE(file_exists(row.model_file));
    models::Model m = models::load(row.model_file);  // a normal Tessera model file
    EXPECT_EQ(m->config().name, "graph");
    if (row.mode == "dimension") {
      EXPECT_EQ(row.true_ic, 64);
      EXPECT_EQ(row.true_oc, 128);
    }
  }
  // ResNet-18: stem + 8 x (conv conv add relu) + 3 shortcuts + pool + fc; VGG-11: 8 conv, 5 pool,
  // 3 fc (BN and ReLU fused).
  EXPECT_EQ(r.rows[0].true_sequence.size(), 38u);
  EXPECT_EQ(r.rows[2].true_sequence.size(), 16u);
  const std::string text = r.to_string();
  EXPECT_NE(text.find("Goals:"), std::string::npos);
  EXPECT_NE(text.find("ResNet-18 sequence differs"), std::string::npos);
  EXPECT_TRUE(r.to_json().contains("rows"));
  // The attacker learnt on random nets of the victims' input size, and its file is cached.
  EXPECT_EQ(o.attacker_recipe().random.input_shape, (std::vector<int64_t>{1, 8, 8}));
  EXPECT_NE(o.attacker_recipe().cache_file(), o.recipe.cache_file());
  EXPECT_TRUE(file_exists(train::cached_file_path(o.attacker_recipe().cache_file())));
  train::set_cache_dir("");
}

TEST_F(Bench, BadOptionsAreClearErrors) {
  ObfuscateBenchOptions o = tiny("");
  o.seq_ga.budget = 0.0;
  EXPECT_NE(error_of([&] { o.validate(); }).find("budget must be > 0"), std::string::npos);
  o = tiny("");
  o.models = {"vit"};
  EXPECT_NE(error_of([&] { o.validate(); }).find("resnet18 and vgg11_bn"), std::string::npos);
  o = tiny("");
  o.recipe.trace_repeats = 0;
  EXPECT_NE(error_of([&] { o.validate(); }).find("trace repeats"), std::string::npos);
  o = tiny("");
  o.retime_reps = 0;
  EXPECT_NE(error_of([&] { o.validate(); }).find("latency reps"), std::string::npos);
}

TEST_F(Bench, ModelsWithoutA64To128ConvSkipTheDimensionGa) {
  testing::TempDir dir;
  train::set_cache_dir(dir.file("cache"));
  ObfuscateBenchOptions o = tiny("");
  o.models = {"vgg11_bn"};
  o.width_mult = 0.125;  // convs of 8..64 channels: no 64 -> 128 conv
  const ObfuscateBenchResult r = run_obfuscate_bench(o);
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].mode, "sequence");
  EXPECT_TRUE(r.rows[0].model_file.empty());
  EXPECT_TRUE(reference_models().empty());
  train::set_cache_dir("");
}

}  // namespace
}  // namespace tessera::obfuscate
