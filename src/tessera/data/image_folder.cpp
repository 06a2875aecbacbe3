// A data directory read by what it holds (Fashion-MNIST IDX files or CIFAR-10/100 binaries), and
// the per-channel normalization an imported model expects (see dataset.h).
#include <fmt/format.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/data/image_folder.h"

namespace tessera::data {

ImageSource detect_images(const std::string& dir) {
  if (file_exists(dir + "/test_batch.bin") || file_exists(dir + "/data_batch_1.bin"))
    return ImageSource::cifar10;
  if (file_exists(dir + "/test.bin") || file_exists(dir + "/train.bin"))
    return ImageSource::cifar100;
  return ImageSource::fashion_mnist;
}

Dataset load_images(const std::string& split, const std::string& dir, int64_t image_size) {
  const std::string from = dir.empty() ? kFashionMnistDir : dir;
  const ImageSource source = detect_images(from);
  if (source == ImageSource::fashion_mnist) return load_fashion_mnist(split, from, image_size);
  TESSERA_CHECK(image_size == 32, "CIFAR images in '{}' are 32x32; the model takes {}x{}", from,
                image_size, image_size);
  return load_cifar(source == ImageSource::cifar10 ? 10 : 100, split, from);
}

void normalize(Dataset& dataset, const std::vector<double>& mean, const std::vector<double>& std) {
  if (mean.empty() && std.empty()) return;
  const int64_t c = dataset.channels();
  auto per_channel = [&](const std::vector<double>& v, double fallback, const char* what) {
    std::vector<double> out = v.empty() ? std::vector<double>{fallback} : v;
    TESSERA_CHECK(out.size() == 1 || static_cast<int64_t>(out.size()) == c,
                  "--{} has {} values; {} has {} channel(s): give 1 or {}", what, out.size(),
                  dataset.name, c, c);
    if (out.size() == 1) out.assign(c, out[0]);
    for (const double x : out)
      TESSERA_CHECK(std::isfinite(x), "--{} value {} is not finite", what, x);
    return torch::tensor(out, torch::kFloat32).reshape({1, c, 1, 1});
  };
  const torch::Tensor m = per_channel(mean, 0.0, "mean");
  const torch::Tensor s = per_channel(std, 1.0, "std");
  TESSERA_CHECK((s > 0).all().item<bool>(), "--std values must be positive");
  dataset.images = (dataset.images - m) / s;
}

Dataset load_images(const ImageData& source, const std::string& split, int64_t image_size) {
  Dataset dataset = load_images(split, source.dir, image_size);
  normalize(dataset, source.mean, source.std);
  return dataset;
}

}  // namespace tessera::data
