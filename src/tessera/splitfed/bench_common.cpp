// Data sources, the command-level SFL run options and the history table (see bench_common.h).
#include "tessera/splitfed/bench_common.h"

#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/models/registry.h"

namespace tessera::splitfed {

DataSource parse_data_source(const std::string& name) {
  for (const DataSource source : {DataSource::fashion_mnist, DataSource::cifar10,
                                  DataSource::cifar100, DataSource::synthetic}) {
    if (data_source_name(source) == name) return source;
  }
  TESSERA_CHECK(false, "unknown data set '{}' (fmnist, cifar10, cifar100, synthetic)", name);
  return DataSource::fashion_mnist;
}

std::string data_source_name(DataSource source) {
  switch (source) {
    case DataSource::fashion_mnist:
      return "fmnist";
    case DataSource::cifar10:
      return "cifar10";
    case DataSource::cifar100:
      return "cifar100";
    case DataSource::synthetic:
      return "synthetic";
  }
  return "fmnist";
}

void DataOptions::validate() const {
  TESSERA_CHECK(train_samples >= 0 && test_samples >= 0,
                "--train-samples {} / --test-samples {} must be >= 0", train_samples, test_samples);
  TESSERA_CHECK(synthetic_train >= 1 && synthetic_test >= 1,
                "synthetic split sizes {} / {} must be >= 1", synthetic_train, synthetic_test);
  const bool cifar = source == DataSource::cifar10 || source == DataSource::cifar100;
  TESSERA_CHECK(!cifar || !cifar_dir.empty(), "{} needs --cifar-dir", data_source_name(source));
}

nlohmann::json DataOptions::to_json() const {
  nlohmann::json j = {{"source", data_source_name(source)},
                      {"train_samples", train_samples},
                      {"test_samples", test_samples}};
  if (source == DataSource::synthetic) {
    j["synthetic_train"] = synthetic_train;
    j["synthetic_test"] = synthetic_test;
  }
  return j;
}

data::Dataset load_split(const DataOptions& options, const std::string& split, int64_t image_size) {
  options.validate();
  switch (options.source) {
    case DataSource::fashion_mnist:
      return data::load_fashion_mnist(split, options.dir, image_size);
    case DataSource::synthetic: {
      const bool train = split == "train";
      return data::make_synthetic(train ? options.synthetic_train : options.synthetic_test, 1,
                                  image_size, 10, train ? 1 : 2);
    }
    case DataSource::cifar10:
    case DataSource::cifar100:
      TESSERA_CHECK(image_size == 32, "CIFAR images are 32x32, not {}", image_size);
      return data::load_cifar(options.source == DataSource::cifar10 ? 10 : 100, split,
                              options.cifar_dir);
  }
  return {};
}

SflData load_sfl_data(const DataOptions& options, int64_t image_size) {
  SflData d;
  d.train = load_split(options, "train", image_size);
  d.test = load_split(options, "test", image_size);
  if (options.train_samples > 0 && options.train_samples < d.train.size()) {
    d.train = d.train.head(options.train_samples);
  }
  if (options.test_samples > 0 && options.test_samples < d.test.size()) {
    d.test = d.test.head(options.test_samples);
  }
  return d;
}

SflRunOptions::SflRunOptions() {
  sfl.model.name = "vgg11_bn";
  sfl.model.width_mult = 0.25;
  sfl.split.cut = -1;
  sfl.epochs = 3;
}

SflOptions SflRunOptions::resolve(int64_t n_train) const {
  SflOptions o = sfl;
  if (o.split.cut < 0) {
    models::Model probe = models::create(o.model);
    o.split.cut = cut_for_server_layers(probe, server_layers, convention);
  }
  o.augment_flip = o.augment_pad > 0;
  o.n_train = n_train;
  o.validate();
  return o;
}

void SflRunOptions::validate() const {
  data.validate();
  TESSERA_CHECK(server_layers >= 1, "--server-layers {} must be >= 1", server_layers);
  resolve(sfl.n_clients);  // every SflOptions check that does not depend on the data's size
}

nlohmann::json SflRunOptions::to_json() const {
  return {{"sfl", sfl.to_json()},
          {"server_layers", server_layers},
          {"convention", layer_convention_name(convention)},
          {"data", data.to_json()}};
}

Table history_table(const std::vector<EpochRecord>& history) {
  Table table({"epoch", "lr", "train loss", "train acc %", "test acc %", "active", "dropped", "s"});
  for (const auto& r : history) {
    table.add_row({std::to_string(r.epoch + 1), fmt::format("{:.4f}", r.lr),
                   fmt::format("{:.4f}", r.train_loss), percent(r.train_accuracy),
                   percent(r.test_accuracy), std::to_string(r.n_active),
                   std::to_string(r.n_dropped), fmt::format("{:.1f}", r.seconds)});
  }
  return table;
}

}  // namespace tessera::splitfed
