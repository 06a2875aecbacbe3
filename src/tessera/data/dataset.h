// In-memory labelled image data sets and the readers that fill them: Fashion-MNIST (IDX, plain
// or .gz), CIFAR-10/100 (binary format), synthetic data; plus batching and augmentation.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace tessera::data {

/// Where Debian's dataset-fashion-mnist package puts the files.
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// images: [N, C, H, W] float32 in [0, 1]; labels: [N] int64 in [0, num_classes).
struct Dataset {
  std::string name;
  torch::Tensor images;
  torch::Tensor labels;
  int64_t num_classes = 0;

  int64_t size() const { return labels.defined() ? labels.size(0) : 0; }
  int64_t channels() const { return images.size(1); }
  int64_t image_size() const { return images.size(2); }
  /// Rows `indices` (any order), sharing nothing with this data set.
  Dataset subset(const std::vector<int64_t>& indices) const;
  /// The first n samples (n <= size()).
  Dataset head(int64_t n) const;
  /// Keeps samples whose label is in `classes` and relabels them 0..classes.size()-1 in the
  /// given order (used for the disjoint source/target class split of ResSFL).
  Dataset filter_classes(const std::vector<int64_t>& classes) const;
};

/// split: "train" (60k) or "test" (10k). Accepts `train-images-idx3-ubyte` with or without
/// `.gz` in `dir`. Every header field (magic, counts, sizes) and the file length are checked.
/// `pad_to` > 28 zero-pads symmetrically (32 gives the 1x32x32 CIFAR-style layout).
Dataset load_fashion_mnist(const std::string& split, const std::string& dir = kFashionMnistDir,
                           int64_t pad_to = 32);

/// Parses one IDX file's bytes (already decompressed). Returns a uint8 tensor of its dims.
/// Only unsigned-byte IDX (magic 0x000008NN, 1 <= NN <= 4 dims) is accepted; the payload length
/// must equal the product of the dims exactly. `expected_dims` > 0 also requires that many dims
/// (3 for image files, magic 0x00000803; 1 for label files, 0x00000801). `what` names the input
/// in error messages.
torch::Tensor parse_idx(const std::string& bytes, const std::string& what,
                        int64_t expected_dims = 0);
/// Reads a whole file, gunzipping it if it starts with the gzip magic (zlib).
std::string read_maybe_gzip(const std::string& path);
/// Decompresses gzip bytes (one or more concatenated members). Corrupt, truncated or trailing
/// non-gzip bytes, a failed CRC or more than 4 GiB of output throw tessera::Error naming `what`.
std::string gunzip(const std::string& bytes, const std::string& what);

/// CIFAR binary format. variant 10: data_batch_1..5.bin / test_batch.bin in `dir`
/// (cifar-10-batches-bin); variant 100: train.bin / test.bin (fine labels).
Dataset load_cifar(int variant, const std::string& split, const std::string& dir);

/// Class-conditional Gaussian blobs rendered as images: learnable, seeded, any shape.
/// Each class is two blobs (one on a ring at angle 2*pi*k/K, one random) with its own colours;
/// samples jitter position, brightness and background and add N(0, 0.05) pixel noise. The class
/// patterns depend only on (channels, image_size, num_classes), so sets drawn with different
/// seeds (train and test) share them; `seed` drives the labels' order and the per-sample noise.
/// Labels are balanced (i mod K, shuffled). Returns images [n, channels, S, S] in [0, 1].
Dataset make_synthetic(int64_t n, int64_t channels, int64_t image_size, int64_t num_classes,
                       uint64_t seed);

/// IID: a seeded shuffle cut into n_clients near-equal shards of indices.
std::vector<std::vector<int64_t>> partition_iid(int64_t n, int64_t n_clients, uint64_t seed);
/// Non-IID label shards (McMahan et al.): sort by label, cut into n_clients * shards_per_client
/// shards, give each client shards_per_client random shards.
std::vector<std::vector<int64_t>> partition_label_shards(const torch::Tensor& labels,
                                                         int64_t n_clients,
                                                         int64_t shards_per_client, uint64_t seed);

/// Random crop with zero padding `pad` then horizontal flip with probability 0.5, per sample.
/// images: [B, C, H, W]; returns a new tensor of the same shape.
torch::Tensor augment(const torch::Tensor& images, int64_t pad, bool flip, std::mt19937_64& rng);

/// Shuffled (or ordered) mini-batches over a data set; the last partial batch is kept.
class BatchIterator {
 public:
  BatchIterator(const Dataset& dataset, int64_t batch_size, bool shuffle, uint64_t seed);
  /// Fills images/labels with the next batch; false when the epoch is over.
  bool next(torch::Tensor& images, torch::Tensor& labels);
  int64_t n_batches() const;
  /// Starts a new epoch (reshuffles when shuffle is on).
  void reset();

 private:
  const Dataset& dataset_;
  int64_t batch_size_;
  bool shuffle_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;
  int64_t position_ = 0;
};

}  // namespace tessera::data
