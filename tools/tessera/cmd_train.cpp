// The foundation's commands: train, eval, info, models; and the tour's first row (a small CNN
// trained on Fashion-MNIST).
#include <filesystem>
#include <iostream>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/report.h"
#include "tessera/core/seed.h"
#include "tessera/core/table.h"
#include "tessera/core/timer.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"

namespace {

using tessera::Table;
namespace data = tessera::data;
namespace models = tessera::models;
namespace train = tessera::train;

struct TrainCommand {
  models::ModelConfig model;
  train::TrainOptions options;
  std::string data_dir;
  std::string out = "model.safetensors";
  std::string json;
  int64_t train_subset = 0;
  bool checkpoint_every_epoch = false;
};

nlohmann::json to_json(const train::TrainOptions& o) {
  return {{"epochs", o.epochs},
          {"batch_size", o.batch_size},
          {"optimizer", o.optimizer},
          {"lr", o.lr},
          {"momentum", o.momentum},
          {"weight_decay", o.weight_decay},
          {"schedule", o.schedule},
          {"step_size", o.step_size},
          {"milestones", o.milestones},
          {"gamma", o.gamma},
          {"warmup_epochs", o.warmup_epochs},
          {"augment_pad", o.augment_pad},
          {"augment_flip", o.augment_flip},
          {"label_smoothing", o.label_smoothing}};
}

void run_train(const TrainCommand& cmd) {
  cmd.options.validate();
  TESSERA_CHECK(cmd.train_subset >= 0, "--train-subset must be >= 0, got {}", cmd.train_subset);
  tessera::seed_everything(cmd.options.seed);
  auto model = models::create(cmd.model);
  auto train_set = data::load_fashion_mnist("train", cmd.data_dir, cmd.model.image_size);
  auto test_set = data::load_fashion_mnist("test", cmd.data_dir, cmd.model.image_size);
  if (cmd.train_subset > 0 && cmd.train_subset < train_set.size())
    train_set = train_set.head(cmd.train_subset);
  TESSERA_CHECK(train_set.channels() == cmd.model.in_channels,
                "the data has {} channel(s) but --in-channels is {}", train_set.channels(),
                cmd.model.in_channels);
  tessera::log::info("training {} ({} parameters) on {} images, {} epochs", cmd.model.name,
                     models::count_parameters(*model), train_set.size(), cmd.options.epochs);
  tessera::Report report("train",
                         {{"model", cmd.model.to_json()},
                          {"train", to_json(cmd.options)},
                          {"data", cmd.data_dir},
                          {"train_images", train_set.size()},
                          {"out", cmd.out}},
                         cmd.options.seed);
  Table table({"epoch", "lr", "train loss", "train acc %", "test acc %", "s", "img/s"});
  nlohmann::json epochs = nlohmann::json::array();
  tessera::Timer timer;
  train::fit(model, train_set, &test_set, cmd.options, [&](const train::EpochStats& s) {
    table.add_row({std::to_string(s.epoch), fmt::format("{:.4f}", s.lr),
                   fmt::format("{:.4f}", s.train_loss),
                   fmt::format("{:.2f}", 100 * s.train_accuracy),
                   fmt::format("{:.2f}", 100 * s.test_accuracy), fmt::format("{:.1f}", s.seconds),
                   fmt::format("{:.0f}", s.images_per_second)});
    epochs.push_back({{"epoch", s.epoch},
                      {"lr", s.lr},
                      {"train_loss", s.train_loss},
                      {"train_accuracy", s.train_accuracy},
                      {"test_accuracy", s.test_accuracy},
                      {"test_loss", s.test_loss},
                      {"seconds", s.seconds},
                      {"images_per_second", s.images_per_second}});
    tessera::log::info("epoch {}: test accuracy {:.2f}%", s.epoch, 100 * s.test_accuracy);
    if (cmd.checkpoint_every_epoch) models::save(cmd.out, model);
    return true;
  });
  models::save(cmd.out, model);
  const auto final_eval = train::evaluate(model, test_set);
  std::cout << table.to_string();
  std::cout << fmt::format("test accuracy {:.2f}% ({} images), wall time {:.1f} s, saved {}\n",
                           100 * final_eval.accuracy, final_eval.n, timer.elapsed_s(), cmd.out);
  report.results()["epochs"] = epochs;
  report.results()["test_accuracy"] = final_eval.accuracy;
  report.results()["test_loss"] = final_eval.loss;
  report.results()["train_seconds"] = timer.elapsed_s();
  report.write(cmd.json);
}

void add_model_options(CLI::App* cmd, models::ModelConfig& m) {
  cmd->add_option("--model", m.name, "architecture (see `tessera models`)")->capture_default_str();
  cmd->add_option("--width-mult", m.width_mult, "channel width multiplier")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--image-size", m.image_size, "input side; Fashion-MNIST is zero-padded to it")
      ->capture_default_str()
      ->check(CLI::Range(28, 1024));
}

void register_train_command(CLI::App& app) {
  auto cmd = std::make_shared<TrainCommand>();
  cmd->model.name = "resnet20";
  cmd->model.in_channels = 1;
  cmd->model.image_size = 32;
  cmd->model.num_classes = 10;
  cmd->options.epochs = 15;
  auto* sub = app.add_subcommand("train", "train a vision model on Fashion-MNIST");
  add_model_options(sub, cmd->model);
  auto& o = cmd->options;
  sub->add_option("--epochs", o.epochs, "training epochs")->capture_default_str();
  sub->add_option("--batch-size", o.batch_size, "mini-batch size")->capture_default_str();
  sub->add_option("--optimizer", o.optimizer, "sgd or adam")->capture_default_str();
  sub->add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  sub->add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  sub->add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str();
  sub->add_option("--schedule", o.schedule, "constant, step, multistep or cosine")
      ->capture_default_str();
  sub->add_option("--step-size", o.step_size, "step schedule: epochs per decay")
      ->capture_default_str();
  sub->add_option("--milestones", o.milestones, "multistep schedule: epochs where lr *= gamma");
  sub->add_option("--gamma", o.gamma, "decay factor of step and multistep")->capture_default_str();
  sub->add_option("--warmup-epochs", o.warmup_epochs, "linear warm-up epochs")
      ->capture_default_str();
  sub->add_option("--augment-pad", o.augment_pad, "random-crop padding (0 = no crop)")
      ->capture_default_str();
  sub->add_option("--augment-flip", o.augment_flip, "random horizontal flips")
      ->capture_default_str();
  sub->add_option("--label-smoothing", o.label_smoothing, "cross-entropy label smoothing")
      ->capture_default_str();
  sub->add_option("--train-subset", cmd->train_subset,
                  "use only the first N training images (0 = all)")
      ->capture_default_str();
  sub->add_option("-o,--out", cmd->out, "model file to write (.safetensors)")
      ->capture_default_str();
  sub->add_flag("--checkpoint-every-epoch", cmd->checkpoint_every_epoch,
                "rewrite --out (atomically) after every epoch");
  tessera::cli::add_data_option(sub, cmd->data_dir);
  tessera::cli::add_seed_option(sub, o.seed);
  tessera::cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_train(*cmd); });
}

void register_eval_command(CLI::App& app) {
  struct Options {
    std::string model_path, data_dir, json;
    int64_t batch_size = 512;
  };
  auto opt = std::make_shared<Options>();
  auto* sub =
      app.add_subcommand("eval", "evaluate a Tessera model file on the Fashion-MNIST test set");
  sub->add_option("--model", opt->model_path, "model file (.safetensors written by tessera)")
      ->required();
  sub->add_option("--batch-size", opt->batch_size, "evaluation batch size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  tessera::cli::add_data_option(sub, opt->data_dir);
  tessera::cli::add_json_option(sub, opt->json);
  sub->callback([opt] {
    auto model = models::load(opt->model_path);
    const auto& config = model->config();
    auto test_set = data::load_fashion_mnist("test", opt->data_dir, config.image_size);
    TESSERA_CHECK(test_set.channels() == config.in_channels,
                  "model '{}' expects {} input channel(s); Fashion-MNIST has {}", opt->model_path,
                  config.in_channels, test_set.channels());
    tessera::Timer timer;
    auto result = train::evaluate(model, test_set, opt->batch_size);
    std::cout << fmt::format("{}: {} on {} test images: accuracy {:.2f}%, loss {:.4f} ({:.1f} s)\n",
                             opt->model_path, config.name, result.n, 100 * result.accuracy,
                             result.loss, timer.elapsed_s());
    tessera::Report report("eval", {{"model", opt->model_path}, {"arch", config.to_json()}}, 0);
    report.results() = {{"accuracy", result.accuracy}, {"loss", result.loss}, {"n", result.n}};
    report.write(opt->json);
  });
}

std::string human(int64_t n) {
  if (n >= 1'000'000'000) return fmt::format("{:.2f}G", n / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f}k", n / 1e3);
  return std::to_string(n);
}

void register_info_command(CLI::App& app) {
  struct Options {
    std::string model;
    models::ModelConfig config;
    std::string json;
  };
  auto opt = std::make_shared<Options>();
  opt->config.in_channels = 1;
  auto* sub = app.add_subcommand(
      "info",
      "architecture, parameter count and MACs per layer of a model file or architecture name");
  sub->add_option("model", opt->model, "a .safetensors model file, or an architecture name")
      ->required();
  sub->add_option("--in-channels", opt->config.in_channels, "for an architecture name")
      ->capture_default_str();
  sub->add_option("--image-size", opt->config.image_size, "for an architecture name")
      ->capture_default_str();
  sub->add_option("--num-classes", opt->config.num_classes, "for an architecture name")
      ->capture_default_str();
  sub->add_option("--width-mult", opt->config.width_mult, "for an architecture name")
      ->capture_default_str();
  tessera::cli::add_json_option(sub, opt->json);
  sub->callback([opt] {
    models::Model model{nullptr};
    if (tessera::file_exists(opt->model)) {
      model = models::load(opt->model);
    } else {
      opt->config.name = opt->model;
      model = models::create(opt->config);
    }
    const auto workload = model->workload();
    Table units({"#", "unit", "kind", "output shape"});
    for (size_t k = 0; k < model->n_units(); ++k) {
      const auto shape = model->shape_after(k + 1);
      units.add_row({std::to_string(k + 1), model->units()[k].name, model->units()[k].kind,
                     fmt::format("{}", fmt::join(shape, "x"))});
    }
    Table layers(
        {"layer", "op", "in", "out", "kernel", "stride", "groups", "output", "weights", "MACs"});
    for (const auto& l : workload.layers) {
      if (l.macs() == 0) continue;
      layers.add_row({l.name, tessera::workload::to_string(l.kind), std::to_string(l.in_channels),
                      std::to_string(l.out_channels), fmt::format("{}x{}", l.kernel_h, l.kernel_w),
                      std::to_string(l.stride), std::to_string(l.groups),
                      fmt::format("{}x{}", l.out_h, l.out_w), human(l.weight_count()),
                      human(l.macs())});
    }
    std::cout << "architecture: " << model->config().to_json().dump() << "\n\n"
              << units.to_string() << "\n"
              << layers.to_string()
              << fmt::format("\nparameters: {} ({})   MACs per image: {} ({})\n",
                             models::count_parameters(*model),
                             human(models::count_parameters(*model)), workload.total_macs(),
                             human(workload.total_macs()));
    tessera::Report report("info", {{"model", opt->model}}, 0);
    report.results() = {{"arch", model->config().to_json()},
                        {"parameters", models::count_parameters(*model)},
                        {"macs", workload.total_macs()},
                        {"workload", workload.to_json()}};
    report.write(opt->json);
  });
}

void register_models_command(CLI::App& app) {
  auto* sub = app.add_subcommand("models", "list the model architectures");
  sub->callback([] {
    Table table({"name", "description"});
    for (const auto& [name, description] : models::list_models())
      table.add_row({name, description});
    std::cout << table.to_string();
  });
}

// Tour row: a small CNN (VGG-11 at a quarter width) trained briefly on Fashion-MNIST. It is saved
// to work_dir/tour_cnn.safetensors for the later steps that need a trained model.
std::vector<tessera::cli::TourRow> tour_train(const tessera::cli::TourContext& ctx) {
  TrainCommand cmd;
  cmd.model.name = "vgg11_bn";
  cmd.model.width_mult = 0.25;
  cmd.options.epochs = 2;
  cmd.options.lr = 0.05;
  cmd.options.seed = ctx.seed;
  cmd.options.progress_label = "tour cnn";
  tessera::seed_everything(ctx.seed);
  auto model = models::create(cmd.model);
  auto train_set = data::load_fashion_mnist("train", ctx.data_dir).head(20000);
  auto test_set = data::load_fashion_mnist("test", ctx.data_dir);
  train::fit(model, train_set, &test_set, cmd.options);
  const auto result = train::evaluate(model, test_set);
  models::save(ctx.work_dir + "/tour_cnn.safetensors", model);
  return {{"foundation: VGG-11-BN x0.25, 2 epochs on 20k Fashion-MNIST",
           fmt::format("test accuracy {:.2f}%", 100 * result.accuracy),
           "(ResNet-20 full run: >= 93% goal, see docs/training.md)"}};
}

}  // namespace

void register_train(CLI::App& app, tessera::cli::Tour& tour) {
  register_train_command(app);
  register_eval_command(app);
  register_info_command(app);
  register_models_command(app);
  tour.add("foundation", tour_train);
}
