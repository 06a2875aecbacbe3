// Dataset row selection, mini-batching, augmentation and the synthetic data generator.
#include "tessera/data/dataset.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"

namespace tessera::data {

namespace {

torch::Tensor index_tensor(const std::vector<int64_t>& indices) {
  torch::Tensor tensor = torch::empty({static_cast<int64_t>(indices.size())}, torch::kInt64);
  std::copy(indices.begin(), indices.end(), tensor.data_ptr<int64_t>());
  return tensor;
}

void check_well_formed(const Dataset& dataset) {
  TESSERA_CHECK(dataset.images.defined() && dataset.labels.defined(),
                "data set '{}' has no images or labels", dataset.name);
  TESSERA_CHECK(dataset.images.dim() >= 1 && dataset.labels.dim() == 1 &&
                    dataset.images.size(0) == dataset.labels.size(0),
                "data set '{}': images {} and labels {} do not have one row per sample",
                dataset.name, c10::str(dataset.images.sizes()), c10::str(dataset.labels.sizes()));
}

constexpr double kPi = 3.14159265358979323846;

}  // namespace

Dataset Dataset::subset(const std::vector<int64_t>& indices) const {
  check_well_formed(*this);
  const int64_t n = size();
  for (size_t i = 0; i < indices.size(); ++i) {
    TESSERA_CHECK(indices[i] >= 0 && indices[i] < n,
                  "subset of '{}': index {} (position {}) is outside [0, {})", name, indices[i], i,
                  n);
  }
  const torch::Tensor rows = index_tensor(indices);
  Dataset result;
  result.name = name;
  result.num_classes = num_classes;
  // index_select copies, so the subset shares no storage with this data set.
  result.images = images.index_select(0, rows);
  result.labels = labels.index_select(0, rows);
  return result;
}

Dataset Dataset::head(int64_t n) const {
  check_well_formed(*this);
  TESSERA_CHECK(n >= 0 && n <= size(), "head of '{}': n = {} is outside [0, {}]", name, n, size());
  Dataset result;
  result.name = name;
  result.num_classes = num_classes;
  result.images = images.narrow(0, 0, n).clone();
  result.labels = labels.narrow(0, 0, n).clone();
  return result;
}

Dataset Dataset::filter_classes(const std::vector<int64_t>& classes) const {
  check_well_formed(*this);
  TESSERA_CHECK(!classes.empty(), "filter_classes of '{}': the class list is empty", name);
  std::vector<int64_t> new_label(static_cast<size_t>(num_classes), -1);
  for (size_t i = 0; i < classes.size(); ++i) {
    const int64_t c = classes[i];
    TESSERA_CHECK(c >= 0 && c < num_classes, "filter_classes of '{}': class {} is outside [0, {})",
                  name, c, num_classes);
    TESSERA_CHECK(new_label[static_cast<size_t>(c)] < 0,
                  "filter_classes of '{}': class {} is listed twice", name, c);
    new_label[static_cast<size_t>(c)] = static_cast<int64_t>(i);
  }
  const torch::Tensor old_labels = labels.to(torch::kInt64).contiguous();
  const int64_t* label_data = old_labels.data_ptr<int64_t>();
  std::vector<int64_t> keep;
  std::vector<int64_t> kept_labels;
  for (int64_t i = 0; i < size(); ++i) {
    const int64_t label = label_data[i];
    TESSERA_CHECK(label >= 0 && label < num_classes,
                  "filter_classes of '{}': sample {} has label {} outside [0, {})", name, i, label,
                  num_classes);
    if (new_label[static_cast<size_t>(label)] >= 0) {
      keep.push_back(i);
      kept_labels.push_back(new_label[static_cast<size_t>(label)]);
    }
  }
  Dataset result;
  result.name = name;
  result.num_classes = static_cast<int64_t>(classes.size());
  result.images = images.index_select(0, index_tensor(keep));
  result.labels = index_tensor(kept_labels);
  return result;
}

torch::Tensor augment(const torch::Tensor& images, int64_t pad, bool flip, std::mt19937_64& rng) {
  TESSERA_CHECK(images.defined() && images.dim() == 4,
                "augment expects images [B, C, H, W], got {} dims",
                images.defined() ? images.dim() : 0);
  TESSERA_CHECK(pad >= 0, "augment: crop padding {} is negative", pad);
  const int64_t batch = images.size(0);
  const int64_t height = images.size(2);
  const int64_t width = images.size(3);
  const torch::Tensor padded =
      pad > 0 ? torch::constant_pad_nd(images, {pad, pad, pad, pad}, 0.0) : images;
  torch::Tensor out = torch::empty_like(images);
  const uint64_t n_offsets = static_cast<uint64_t>(2 * pad + 1);
  for (int64_t b = 0; b < batch; ++b) {
    // Draw order is fixed (row offset, column offset, flip) so that a seed means one thing.
    const int64_t dy = static_cast<int64_t>(random::uniform_below(rng, n_offsets));
    const int64_t dx = static_cast<int64_t>(random::uniform_below(rng, n_offsets));
    const bool mirror = flip && random::uniform_below(rng, 2) == 1;
    torch::Tensor crop = padded[b].narrow(1, dy, height).narrow(2, dx, width);
    if (mirror) crop = crop.flip({2});
    out[b].copy_(crop);
  }
  return out;
}

Dataset make_synthetic(int64_t n, int64_t channels, int64_t image_size, int64_t num_classes,
                       uint64_t seed) {
  TESSERA_CHECK(n >= 0, "make_synthetic: n = {} is negative", n);
  TESSERA_CHECK(channels >= 1, "make_synthetic: channels = {} must be >= 1", channels);
  TESSERA_CHECK(image_size >= 4, "make_synthetic: image_size = {} must be >= 4", image_size);
  TESSERA_CHECK(num_classes >= 2, "make_synthetic: num_classes = {} must be >= 2", num_classes);
  const double side = static_cast<double>(image_size);
  constexpr int64_t kBlobs = 2;

  // Class prototypes. Blob 0 sits on a ring at angle 2*pi*k/K, so every class has a distinct
  // position even when the random parts collide; blob 1 and all colours are random per class.
  // A fixed pattern seed keeps the classes the same across sample seeds (train vs test sets).
  constexpr uint64_t kPatternSeed = 0x5EEDC1A55ULL;
  std::mt19937_64 class_rng = make_rng(kPatternSeed, 0);
  torch::Tensor centre_x = torch::empty({num_classes, kBlobs}, torch::kFloat32);
  torch::Tensor centre_y = torch::empty({num_classes, kBlobs}, torch::kFloat32);
  torch::Tensor sigma = torch::empty({num_classes, kBlobs}, torch::kFloat32);
  torch::Tensor amplitude = torch::empty({num_classes, kBlobs, channels}, torch::kFloat32);
  auto cx = centre_x.accessor<float, 2>();
  auto cy = centre_y.accessor<float, 2>();
  auto sg = sigma.accessor<float, 2>();
  auto amp = amplitude.accessor<float, 3>();
  for (int64_t k = 0; k < num_classes; ++k) {
    const double angle = 2.0 * kPi * static_cast<double>(k) / static_cast<double>(num_classes);
    cx[k][0] = static_cast<float>(side * (0.5 + 0.28 * std::cos(angle)));
    cy[k][0] = static_cast<float>(side * (0.5 + 0.28 * std::sin(angle)));
    cx[k][1] = static_cast<float>(side * (0.2 + 0.6 * random::uniform01(class_rng)));
    cy[k][1] = static_cast<float>(side * (0.2 + 0.6 * random::uniform01(class_rng)));
    for (int64_t b = 0; b < kBlobs; ++b) {
      sg[k][b] = static_cast<float>(side * (0.07 + 0.06 * random::uniform01(class_rng)));
      for (int64_t c = 0; c < channels; ++c) {
        amp[k][b][c] = static_cast<float>(0.3 + 0.7 * random::uniform01(class_rng));
      }
    }
  }

  // Balanced labels (i mod K) in a seeded random order.
  std::vector<int64_t> label_list(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) label_list[static_cast<size_t>(i)] = i % num_classes;
  std::mt19937_64 label_rng = make_rng(seed, 0);
  random::shuffle(label_list, label_rng);
  const torch::Tensor labels = index_tensor(label_list);

  // Per-sample variation from a private generator, so the global LibTorch seed is untouched.
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  const torch::Tensor shift = torch::randn({n, 2}, generator) * (side / 32.0);
  const torch::Tensor scale = 0.8 + 0.4 * torch::rand({n}, generator);
  const torch::Tensor background = 0.1 * torch::rand({n}, generator);
  torch::Tensor images = torch::empty({n, channels, image_size, image_size}, torch::kFloat32);
  const torch::Tensor coords = torch::arange(image_size, torch::kFloat32) + 0.5;
  // Rendering allocates [chunk, blobs, S, S]; chunks keep that small for large n.
  constexpr int64_t kChunk = 2048;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t count = std::min(kChunk, n - start);
    const torch::Tensor y = labels.narrow(0, start, count);
    const torch::Tensor x_centre =
        centre_x.index_select(0, y) +
        shift.narrow(0, start, count).select(1, 0).unsqueeze(1);  // [B, blobs]
    const torch::Tensor y_centre =
        centre_y.index_select(0, y) + shift.narrow(0, start, count).select(1, 1).unsqueeze(1);
    const torch::Tensor two_var = 2.0 * sigma.index_select(0, y).pow(2).unsqueeze(2);
    const torch::Tensor gx = torch::exp(-(coords - x_centre.unsqueeze(2)).pow(2) / two_var);
    const torch::Tensor gy = torch::exp(-(coords - y_centre.unsqueeze(2)).pow(2) / two_var);
    const torch::Tensor blobs = gy.unsqueeze(3) * gx.unsqueeze(2);  // [B, blobs, S(y), S(x)]
    const torch::Tensor colours =
        amplitude.index_select(0, y) * scale.narrow(0, start, count).view({count, 1, 1});
    torch::Tensor rendered =
        torch::einsum("bkc,bkhw->bchw", {colours, blobs}) +
        background.narrow(0, start, count).view({count, 1, 1, 1}) +
        0.05 * torch::randn({count, channels, image_size, image_size}, generator);
    images.narrow(0, start, count).copy_(rendered.clamp_(0.0, 1.0));
  }

  Dataset dataset;
  dataset.name = "synthetic";
  dataset.num_classes = num_classes;
  dataset.images = images;
  dataset.labels = labels;
  return dataset;
}

BatchIterator::BatchIterator(const Dataset& dataset, int64_t batch_size, bool shuffle,
                             uint64_t seed)
    : dataset_(dataset), batch_size_(batch_size), shuffle_(shuffle), rng_(make_rng(seed, 0)) {
  TESSERA_CHECK(batch_size > 0, "batch size {} must be positive", batch_size);
  check_well_formed(dataset);
  reset();
}

int64_t BatchIterator::n_batches() const {
  return (dataset_.size() + batch_size_ - 1) / batch_size_;
}

void BatchIterator::reset() {
  order_.resize(static_cast<size_t>(dataset_.size()));
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = static_cast<int64_t>(i);
  if (shuffle_) random::shuffle(order_, rng_);
  position_ = 0;
}

bool BatchIterator::next(torch::Tensor& images, torch::Tensor& labels) {
  // The data set is borrowed; if it shrank since reset(), the stored order is stale.
  TESSERA_CHECK(static_cast<int64_t>(order_.size()) == dataset_.size(),
                "data set '{}' changed size during iteration ({} -> {})", dataset_.name,
                order_.size(), dataset_.size());
  const int64_t total = static_cast<int64_t>(order_.size());
  if (position_ >= total) return false;
  const int64_t count = std::min(batch_size_, total - position_);
  const std::vector<int64_t> rows(order_.begin() + position_, order_.begin() + position_ + count);
  const torch::Tensor index = index_tensor(rows);
  // Copies, so a caller that edits a batch in place cannot corrupt the data set.
  images = dataset_.images.index_select(0, index);
  labels = dataset_.labels.index_select(0, index);
  position_ += count;
  return true;
}

}  // namespace tessera::data
