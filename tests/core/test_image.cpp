// Image metrics against known values (identical images, constant shifts, a hand-computed case
// and a naive loop implementation of SSIM) and the PNG writer (decoded back with zlib).
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/image.h"
#include "test_support.h"

namespace tessera::image {
namespace {

class ImageTest : public testing::SeededTest {};

TEST_F(ImageTest, IdenticalImagesHaveSsimOneMseZeroPsnrInfinite) {
  const torch::Tensor a = torch::rand({2, 3, 16, 16});
  EXPECT_NEAR(ssim(a, a).item<double>(), 1.0, 1e-5);
  EXPECT_EQ(mse(a, a).item<double>(), 0.0);
  EXPECT_TRUE(std::isinf(psnr(0.0)));
}

TEST_F(ImageTest, ConstantShiftGivesKnownMseAndPsnr) {
  const torch::Tensor a = torch::rand({1, 1, 12, 12}) * 0.8;
  const torch::Tensor b = a + 0.1;
  EXPECT_NEAR(mse(a, b).item<double>(), 0.01, 1e-6);
  EXPECT_NEAR(psnr(0.01), 20.0, 1e-9);
  EXPECT_NEAR(psnr(0.001), 30.0, 1e-9);
  EXPECT_THROW(psnr(-1.0), Error);
}

TEST_F(ImageTest, ConstantImagesMatchTheLuminanceTermExactly) {
  // Valid mode on constant images: all variances vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
  const double a = 0.3, b = 0.5, c1 = 1e-4;
  SsimOptions valid;
  valid.zero_pad = false;
  const torch::Tensor x = torch::full({1, 1, 11, 11}, a, torch::kFloat64);
  const torch::Tensor y = torch::full({1, 1, 11, 11}, b, torch::kFloat64);
  EXPECT_NEAR(ssim(x, y, valid).item<double>(), (2 * a * b + c1) / (a * a + b * b + c1), 1e-9);
}

TEST_F(ImageTest, OnePixelWindowIsThePerPixelFormula) {
  // Window 1: mu = pixel value, sigma^2 = 0, sigma12 = 0: SSIM_p = (2xy + C1) / (x^2 + y^2 + C1),
  // averaged by hand over a 2x2 image.
  SsimOptions one;
  one.window = 1;
  const torch::Tensor x = torch::tensor({0.0, 0.5, 1.0, 0.2}, torch::kFloat64).view({1, 1, 2, 2});
  const torch::Tensor y = torch::tensor({0.0, 0.25, 0.5, 0.2}, torch::kFloat64).view({1, 1, 2, 2});
  const double c1 = 1e-4;
  const double expected = (1.0 + (0.25 + c1) / (0.3125 + c1) + (1.0 + c1) / (1.25 + c1) + 1.0) / 4;
  EXPECT_NEAR(ssim(x, y, one).item<double>(), expected, 1e-9);
}

// Independent reference: explicit loops over positions, zero padding, Gaussian 11x11 sigma 1.5.
double naive_ssim(const torch::Tensor& x, const torch::Tensor& y) {
  const int64_t h = x.size(2), w = x.size(3), r = 5;
  std::vector<double> g(11);
  double sum = 0;
  for (int i = 0; i < 11; ++i) sum += g[i] = std::exp(-(i - 5.0) * (i - 5.0) / (2 * 1.5 * 1.5));
  auto at = [](const torch::Tensor& t, int64_t i, int64_t j) {
    if (i < 0 || j < 0 || i >= t.size(2) || j >= t.size(3)) return 0.0;
    return t[0][0][i][j].item<double>();
  };
  double total = 0;
  for (int64_t i = 0; i < h; ++i) {
    for (int64_t j = 0; j < w; ++j) {
      double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
      for (int64_t di = -r; di <= r; ++di) {
        for (int64_t dj = -r; dj <= r; ++dj) {
          const double k = g[di + r] * g[dj + r] / (sum * sum);
          const double a = at(x, i + di, j + dj), b = at(y, i + di, j + dj);
          mx += k * a;
          my += k * b;
          sxx += k * a * a;
          syy += k * b * b;
          sxy += k * a * b;
        }
      }
      const double c1 = 1e-4, c2 = 9e-4;
      total += ((2 * mx * my + c1) * (2 * (sxy - mx * my) + c2)) /
               ((mx * mx + my * my + c1) * (sxx - mx * mx + syy - my * my + c2));
    }
  }
  return total / static_cast<double>(h * w);
}

TEST_F(ImageTest, GaussianSsimMatchesANaiveLoopImplementation) {
  const torch::Tensor x = torch::rand({1, 1, 13, 14}, torch::kFloat64);
  const torch::Tensor y = (x + 0.2 * torch::randn({1, 1, 13, 14}, torch::kFloat64)).clamp(0, 1);
  const double expected = naive_ssim(x, y);
  EXPECT_LT(expected, 0.95);  // a real difference, not the trivial 1
  EXPECT_NEAR(ssim(x, y).item<double>(), expected, 1e-9);
}

TEST_F(ImageTest, BadSsimInputIsAnError) {
  const torch::Tensor a = torch::rand({1, 1, 8, 8});
  EXPECT_THROW(ssim(a, torch::rand({1, 1, 8, 7})), Error);
  SsimOptions even;
  even.window = 4;
  EXPECT_THROW(ssim(a, a, even), Error);
  SsimOptions valid;
  valid.zero_pad = false;
  EXPECT_THROW(ssim(a, a, valid), Error);  // 8x8 is smaller than the 11x11 window
}

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) |
         (uint32_t(uint8_t(s[at + 2])) << 8) | uint32_t(uint8_t(s[at + 3]));
}

TEST_F(ImageTest, PngRoundTripsThroughZlib) {
  const torch::Tensor row1 = torch::rand({3, 1, 4, 5});
  const torch::Tensor row2 = torch::rand({3, 1, 4, 5});
  const torch::Tensor g = grid({row1, row2}, 1);
  ASSERT_EQ(g.size(1), 2 * 4 + 3);
  ASSERT_EQ(g.size(2), 3 * 5 + 4);
  EXPECT_TRUE(torch::equal(g[0].slice(0, 1, 5).slice(1, 1, 6), row1[0][0]));
  EXPECT_TRUE(torch::equal(g[0].slice(0, 6, 10).slice(1, 7, 12), row2[1][0]));
  const std::string png = encode_png(g);
  ASSERT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(be32(png, 16), 19u);  // width
  EXPECT_EQ(be32(png, 20), 11u);  // height
  // The IHDR CRC covers type and data.
  EXPECT_EQ(be32(png, 29), crc32(0, reinterpret_cast<const Bytef*>(png.data() + 12), 17));
  const size_t idat = 33;
  ASSERT_EQ(png.substr(idat + 4, 4), "IDAT");
  const uint32_t length = be32(png, idat);
  std::string raw(11 * (19 + 1), '\0');
  uLongf raw_size = raw.size();
  ASSERT_EQ(uncompress(reinterpret_cast<Bytef*>(raw.data()), &raw_size,
                       reinterpret_cast<const Bytef*>(png.data() + idat + 8), length),
            Z_OK);
  ASSERT_EQ(raw_size, raw.size());
  for (int64_t y = 0; y < 11; ++y) {
    EXPECT_EQ(raw[y * 20], '\0');
    for (int64_t x = 0; x < 19; ++x) {
      const int expected = static_cast<int>(std::lround(g[0][y][x].item<float>() * 255.0f));
      EXPECT_EQ(static_cast<uint8_t>(raw[y * 20 + 1 + x]), expected) << y << "," << x;
    }
  }
  EXPECT_EQ(png.substr(png.size() - 8, 4), "IEND");
  EXPECT_THROW(encode_png(torch::rand({2, 4, 4})), Error);
}

}  // namespace
}  // namespace tessera::image
