// A data directory read by what it holds, and the normalization a model trained elsewhere
// expects: what commands use to feed imported models (docs/import.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::data {

/// What a data directory holds: CIFAR-10 (data_batch_1.bin or test_batch.bin), CIFAR-100
/// (train.bin or test.bin), else Fashion-MNIST.
enum class ImageSource { fashion_mnist, cifar10, cifar100 };
ImageSource detect_images(const std::string& dir);

/// The `split` of the data set in `dir` (empty: kFashionMnistDir), recognised by
/// detect_images. Fashion-MNIST is zero-padded to `image_size`; CIFAR requires 32.
Dataset load_images(const std::string& split, const std::string& dir, int64_t image_size);

/// images = (images - mean[c]) / std[c], in place: the preprocessing a model trained elsewhere
/// expects. Each list is empty (mean 0, std 1), one value, or one per channel; std > 0.
void normalize(Dataset& dataset, const std::vector<double>& mean, const std::vector<double>& std);

/// Where a command's images come from and how they are preprocessed: `--data`, `--mean`, `--std`.
struct ImageData {
  std::string dir = kFashionMnistDir;
  std::vector<double> mean, std;
};
/// load_images(split, source.dir, image_size), normalized with source.mean and source.std.
Dataset load_images(const ImageData& source, const std::string& split, int64_t image_size);

}  // namespace tessera::data
