// The foundation's commands: train, eval, info, models (and models train-reference); the tour's
// first row. The work is in tessera/train/bench.h; this file binds flags and prints.
#include <iostream>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/report.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/table.h"
#include "tessera/core/timer.h"
#include "tessera/data/image_folder.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/models/torchvision.h"
#include "tessera/train/bench.h"

namespace {

using tessera::Table;
namespace cli = tessera::cli;
namespace data = tessera::data;
namespace models = tessera::models;
namespace train = tessera::train;

void add_arch_flags(CLI::App* cmd, models::ModelConfig& m) {
  cmd->add_option("--arch", m.name, "architecture (see `tessera models`)")->capture_default_str();
  cmd->add_option("--width-mult", m.width_mult, "channel width multiplier")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--image-size", m.image_size, "input side; Fashion-MNIST is zero-padded to it")
      ->capture_default_str()
      ->check(CLI::Range(28, 1024));
}

void add_train_flags(CLI::App* cmd, train::TrainOptions& o) {
  cmd->add_option("--epochs", o.epochs, "training epochs")->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "mini-batch size")->capture_default_str();
  cmd->add_option("--optimizer", o.optimizer, "sgd or adam")->capture_default_str();
  cmd->add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  cmd->add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "L2 weight decay")->capture_default_str();
  cmd->add_option("--schedule", o.schedule, "constant, step, multistep or cosine")
      ->capture_default_str();
  cmd->add_option("--step-size", o.step_size, "step schedule: epochs per decay")
      ->capture_default_str();
  cmd->add_option("--milestones", o.milestones, "multistep schedule: epochs where lr *= gamma")
      ->delimiter(',');
  cmd->add_option("--gamma", o.gamma, "decay factor of step and multistep")->capture_default_str();
  cmd->add_option("--warmup-epochs", o.warmup_epochs, "linear warm-up epochs")
      ->capture_default_str();
  cmd->add_option("--augment-pad", o.augment_pad, "random-crop padding (0 = no crop)")
      ->capture_default_str();
  cmd->add_option("--augment-flip", o.augment_flip, "random horizontal flips (true/false)")
      ->capture_default_str();
  cmd->add_option("--label-smoothing", o.label_smoothing, "cross-entropy label smoothing")
      ->capture_default_str();
  cli::add_seed_option(cmd, o.seed);
}

struct TrainCommand {
  train::TrainRunOptions run;
  std::string out = cli::default_output("model.safetensors");
  std::string json, svg;
  bool checkpoint_every_epoch = false;
};

void run_train(TrainCommand& cmd) {
  cli::check_writable({cmd.out, cmd.json, cmd.svg});
  if (cmd.checkpoint_every_epoch) cmd.run.checkpoint_path = cmd.out;
  tessera::Report report("train", cmd.run.to_json(), cmd.run.train.seed);
  train::TrainRunResult result = train::run_training(cmd.run);
  models::save(cmd.out, result.model);
  std::cout << result.table().to_string();
  std::cout << fmt::format("test accuracy {:.2f}% ({} images), wall time {:.1f} s, saved {}\n",
                           100 * result.test.accuracy, result.test.n, result.seconds, cmd.out);
  if (!cmd.svg.empty()) tessera::write_file_atomic(cmd.svg, result.svg());
  report.results() = result.to_json();
  report.results()["out"] = cmd.out;
  report.write(cmd.json);
}

void register_train_command(CLI::App& app) {
  auto cmd = std::make_shared<TrainCommand>();
  auto* sub = app.add_subcommand("train", "train a vision model on Fashion-MNIST");
  add_arch_flags(sub, cmd->run.arch);
  add_train_flags(sub, cmd->run.train);
  sub->add_option("--train-subset", cmd->run.train_subset,
                  "use only the first N training images (0 = all)")
      ->capture_default_str();
  sub->add_option("-o,--out", cmd->out, "model file to write (.safetensors)")
      ->capture_default_str();
  sub->add_flag("--checkpoint-every-epoch", cmd->checkpoint_every_epoch,
                "rewrite --out (atomically) after every epoch");
  cli::add_data_option(sub, cmd->run.data_dir);
  cli::add_json_option(sub, cmd->json);
  cli::add_svg_option(sub, cmd->svg);
  sub->callback([cmd] { run_train(*cmd); });
}

struct EvalCommand {
  std::string model_path, json, logits;
  data::ImageData data;
  int64_t batch_size = 512;
};

void run_eval(const EvalCommand& o) {
  cli::check_writable({o.json, o.logits});
  auto model = models::load(o.model_path);
  const auto& config = model->config();
  auto test_set = data::load_images(o.data, "test", config.image_size);
  TESSERA_CHECK(test_set.channels() == config.in_channels,
                "model '{}' expects {} input channel(s); {} has {}", o.model_path,
                config.in_channels, test_set.name, test_set.channels());
  TESSERA_CHECK(test_set.num_classes <= config.num_classes,
                "model '{}' has {} outputs; {} has {} classes", o.model_path, config.num_classes,
                test_set.name, test_set.num_classes);
  tessera::Timer timer;
  std::vector<torch::Tensor> logits;
  model->eval();
  torch::NoGradGuard no_grad;
  const auto result = train::evaluate(
      [&](const torch::Tensor& x) {
        torch::Tensor y = model->forward(x);
        if (!o.logits.empty()) logits.push_back(y);
        return y;
      },
      test_set, o.batch_size);
  std::cout << fmt::format(
      "{}: {} on {} {} test images: accuracy {:.2f}%, loss {:.4f} ({:.1f} s)\n", o.model_path,
      config.name, result.n, test_set.name, 100 * result.accuracy, result.loss, timer.elapsed_s());
  if (!o.logits.empty()) {
    tessera::safetensors::File file;
    file.tensors.emplace_back("logits", torch::cat(logits).contiguous());
    file.tensors.emplace_back("labels", test_set.labels);
    tessera::safetensors::save(o.logits, file);
    std::cout << "wrote " << o.logits << "\n";
  }
  tessera::Report report("eval",
                         {{"model", o.model_path},
                          {"arch", config.to_json()},
                          {"data", test_set.name},
                          {"mean", o.data.mean},
                          {"std", o.data.std}},
                         0);
  report.results() = {{"accuracy", result.accuracy}, {"loss", result.loss}, {"n", result.n}};
  report.write(o.json);
}

void register_eval_command(CLI::App& app) {
  auto opt = std::make_shared<EvalCommand>();
  auto* sub =
      app.add_subcommand("eval", "evaluate a model file (Tessera or TorchScript) on a test set");
  sub->add_option("--model", opt->model_path,
                  "model file: a Tessera .safetensors or a TorchScript .pt (docs/import.md)")
      ->required();
  sub->add_option("--batch-size", opt->batch_size, "evaluation batch size")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cli::add_image_data_options(sub, opt->data);
  sub->add_option("--logits", opt->logits,
                  "also write the test set's logits [N, K] and labels [N] (safetensors)");
  cli::add_json_option(sub, opt->json);
  sub->callback([opt] { run_eval(*opt); });
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
  cli::add_json_option(sub, opt->json);
  sub->callback([opt] {
    cli::check_writable({opt->json});
    models::Model model{nullptr};
    if (tessera::file_exists(opt->model)) {
      model = models::load(opt->model);
    } else {
      opt->config.name = opt->model;
      model = models::create(opt->config);
    }
    const train::ModelInfo info = train::describe_model(model);
    std::cout << "architecture: " << model->config().to_json().dump() << "\n\n"
              << info.units.to_string() << "\n"
              << info.layers.to_string() << "\n"
              << info.summary() << "\n";
    tessera::Report report("info", {{"model", opt->model}}, 0);
    report.results() = info.report;
    report.write(opt->json);
  });
}

void check_torchvision_format(const std::string& format) {
  TESSERA_CHECK(format == "torchvision", "unknown format '{}' (known: torchvision)", format);
}

void register_import_command(CLI::App* group) {
  struct Options {
    std::string in, out, format = "torchvision";
    models::ModelConfig config;
  };
  auto opt = std::make_shared<Options>();
  opt->config.name = "resnet18";
  auto* sub = group->add_subcommand(
      "import", "convert a torchvision-named safetensors state dict into a Tessera model file");
  sub->add_option("state_dict", opt->in, "safetensors file with torchvision names")->required();
  sub->add_option("-o,--out", opt->out, "Tessera model file to write")->required();
  sub->add_option("--format", opt->format, "parameter names of the input")->capture_default_str();
  sub->add_option("--arch", opt->config.name, "architecture (see `tessera models`)")
      ->capture_default_str();
  sub->add_option("--num-classes", opt->config.num_classes, "outputs")->capture_default_str();
  sub->add_option("--in-channels", opt->config.in_channels, "input channels")
      ->capture_default_str();
  sub->add_option("--image-size", opt->config.image_size, "input side")->capture_default_str();
  sub->add_option("--width-mult", opt->config.width_mult, "channel width multiplier")
      ->capture_default_str();
  sub->callback([opt] {
    check_torchvision_format(opt->format);
    cli::check_writable({opt->out});
    models::Model model = models::import_torchvision(opt->in, opt->config);
    models::save(opt->out, model);
    std::cout << fmt::format("wrote {} ({}, {} parameters)\n", opt->out, opt->config.name,
                             models::count_parameters(*model));
  });
}

void register_export_command(CLI::App* group) {
  struct Options {
    std::string model, out, format = "torchvision";
  };
  auto opt = std::make_shared<Options>();
  auto* sub = group->add_subcommand(
      "export", "write a Tessera model's state dict with torchvision names (safetensors)");
  sub->add_option("--model", opt->model, "Tessera model file")->required();
  sub->add_option("-o,--out", opt->out, "safetensors file to write")->required();
  sub->add_option("--format", opt->format, "parameter names to write")->capture_default_str();
  sub->callback([opt] {
    check_torchvision_format(opt->format);
    cli::check_writable({opt->out});
    models::Model model = models::load(opt->model);
    models::export_torchvision(opt->out, model);
    std::cout << fmt::format("wrote {} ({} tensors with torchvision names)\n", opt->out,
                             models::torchvision_names(model).size());
  });
}

void register_models_command(CLI::App& app, cli::Tour& tour) {
  auto* sub = app.add_subcommand("models", "list the model architectures and reference models");
  register_import_command(sub);
  register_export_command(sub);
  auto names = std::make_shared<std::vector<std::string>>();
  auto data_dir = std::make_shared<std::string>();
  auto* build = sub->add_subcommand(
      "train-reference", "train the cached reference models that benchmarks and the tour use");
  build->add_option("names", *names, "reference models to build (default: all missing)");
  cli::add_data_option(build, *data_dir);
  build->callback([&tour, names, data_dir] {
    for (const auto& name : *names) {
      bool known = false;
      for (const auto& r : tour.references()) known = known || r.name == name;
      TESSERA_CHECK(known, "unknown reference model '{}' (see `tessera models`)", name);
    }
    for (const auto& r : tour.references()) {
      if (!names->empty() && std::find(names->begin(), names->end(), r.name) == names->end())
        continue;
      tessera::log::info("reference model {}: {}", r.name, r.description);
      r.build(*data_dir);
      std::cout << fmt::format("{}: {}\n", r.name, r.path());
    }
  });
  sub->callback([sub, &tour] {
    if (!sub->get_subcommands().empty()) return;
    Table table({"name", "description"});
    for (const auto& [name, description] : models::list_models())
      table.add_row({name, description});
    Table references({"reference model", "description", "cached"});
    for (const auto& r : tour.references()) {
      const std::string path = r.path();
      references.add_row({r.name, r.description, tessera::file_exists(path) ? path : "no"});
    }
    std::cout << table.to_string() << "\n" << references.to_string();
  });
}

}  // namespace

void register_train(CLI::App& app, tessera::cli::Tour& tour) {
  register_train_command(app);
  register_eval_command(app);
  register_info_command(app);
  register_models_command(app, tour);
  tour.add("foundation", &train::tour);
  tour.add_references(train::reference_models());
}
