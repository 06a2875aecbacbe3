// What every splitfed experiment shares: where its images come from, an SFL run as the commands
// describe it (SflOptions plus the server-layer count that picks the cut), and the history table.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/data/dataset.h"
#include "tessera/splitfed/protocol.h"
#include "tessera/splitfed/split.h"

namespace tessera::splitfed {

/// Where an experiment's images come from. synthetic: data::make_synthetic blobs (1 channel, 10
/// classes) for tests and demos without the data set files.
enum class DataSource { fashion_mnist, cifar10, cifar100, synthetic };
/// "fmnist", "cifar10", "cifar100" or "synthetic"; throws tessera::Error listing the valid names.
DataSource parse_data_source(const std::string& name);
std::string data_source_name(DataSource source);

struct DataOptions {
  DataSource source = DataSource::fashion_mnist;
  std::string dir = data::kFashionMnistDir;  ///< Fashion-MNIST IDX files (--data)
  std::string cifar_dir;                     ///< CIFAR binary files (cifar10, cifar100)
  int64_t train_samples = 12000;             ///< the first N training images (0 = all)
  int64_t test_samples = 10000;              ///< the first N test images (0 = all)
  int64_t synthetic_train = 600;             ///< synthetic: size of the whole training split
  int64_t synthetic_test = 300;              ///< synthetic: size of the whole test split

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  nlohmann::json to_json() const;
};

/// A whole split ("train" or "test") before any head is taken; images S x S (Fashion-MNIST is
/// zero-padded; CIFAR must be 32).
data::Dataset load_split(const DataOptions& options, const std::string& split, int64_t image_size);

struct SflData {
  data::Dataset train;  ///< the first train_samples training images
  data::Dataset test;   ///< the first test_samples test images
};
SflData load_sfl_data(const DataOptions& options, int64_t image_size);

/// An SFL run as the commands describe it. The defaults are the commands' (research/sfl.md 2.2
/// reduced for a CPU): VGG-11-BN at width 0.25 on Fashion-MNIST padded to 32, 5 server-side
/// layers (`weights` convention), 3 clients, V2, IID, 3 epochs, batch 64, SGD lr 0.05 cosine,
/// crop 2 + flip, 12000 training and 10000 test images.
struct SflRunOptions {
  /// Everything the parties agree on. split.cut < 0 lets server_layers choose the cut; n_train
  /// and augment_flip are filled by resolve().
  SflOptions sfl;
  int64_t server_layers = 5;
  LayerConvention convention = LayerConvention::weights;
  DataOptions data;

  SflRunOptions();
  /// The run's SflOptions on `n_train` images: the cut chosen when sfl.split.cut < 0, flips on
  /// exactly when crops are (augment_pad > 0), validated.
  SflOptions resolve(int64_t n_train) const;
  void validate() const;
  nlohmann::json to_json() const;
};

/// One row per epoch: epoch, lr, train loss, train acc %, test acc %, active, dropped, s.
Table history_table(const std::vector<EpochRecord>& history);

}  // namespace tessera::splitfed
