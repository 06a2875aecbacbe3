// A data directory read by content (CIFAR-10/100 binaries made here, else Fashion-MNIST) and the
// per-channel normalization.
#include <gtest/gtest.h>

#include "tessera/data/image_folder.h"
#include "test_support.h"

namespace tessera::data {
namespace {

using testing::error_of;

// n CIFAR records: label bytes then 3 planes of 32x32 pixels, pixel value = (record + channel).
std::string cifar_records(int64_t n, int label_bytes) {
  std::string bytes;
  for (int64_t r = 0; r < n; ++r) {
    for (int b = 0; b < label_bytes; ++b) bytes.push_back(static_cast<char>(r % 10));
    for (int c = 0; c < 3; ++c) bytes.append(1024, static_cast<char>(10 * r + c));
  }
  return bytes;
}

TEST(ImageFolder, DetectsCifarByItsFiles) {
  testing::TempDir ten, hundred;
  testing::write_bytes(ten.file("test_batch.bin"), cifar_records(4, 1));
  testing::write_bytes(hundred.file("test.bin"), cifar_records(3, 2));
  EXPECT_EQ(detect_images(ten.path()), ImageSource::cifar10);
  EXPECT_EQ(detect_images(hundred.path()), ImageSource::cifar100);
  testing::TempDir empty;
  EXPECT_EQ(detect_images(empty.path()), ImageSource::fashion_mnist);

  const Dataset d = load_images("test", ten.path(), 32);
  ASSERT_EQ(d.size(), 4);
  EXPECT_EQ(d.channels(), 3);
  EXPECT_FLOAT_EQ(d.images[2][1][5][7].item<float>(), 21.0f / 255.0f);
  EXPECT_EQ(load_images("test", hundred.path(), 32).size(), 3);
  EXPECT_NE(error_of([&] { load_images("test", ten.path(), 28); }).find("are 32x32"),
            std::string::npos);
}

TEST(ImageFolder, NormalizesPerChannel) {
  Dataset d;
  d.name = "tiny";
  d.images = torch::ones({2, 3, 4, 4});
  d.labels = torch::zeros({2}, torch::kInt64);
  normalize(d, {0.5, 0.25, 0.0}, {0.5, 0.25, 2.0});
  EXPECT_FLOAT_EQ(d.images[1][0][0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(d.images[1][1][3][3].item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(d.images[0][2][2][1].item<float>(), 0.5f);
  normalize(d, {1.0}, {});  // one value for every channel; std defaults to 1
  EXPECT_FLOAT_EQ(d.images[0][2][2][1].item<float>(), -0.5f);
  EXPECT_NE(error_of([&] { normalize(d, {0.1, 0.2}, {}); }).find("give 1 or 3"), std::string::npos);
  EXPECT_NE(error_of([&] { normalize(d, {}, {0.0}); }).find("must be positive"), std::string::npos);
}

}  // namespace
}  // namespace tessera::data
