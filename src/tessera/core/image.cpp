// Image metrics and the PNG writer (see image.h).
#include "tessera/core/image.h"

#include <fmt/ranges.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <limits>
#include <map>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"

namespace tessera::image {

torch::Tensor mse(const torch::Tensor& a, const torch::Tensor& b) {
  TESSERA_CHECK(a.sizes() == b.sizes(), "mse: shapes {} and {} differ", fmt::join(a.sizes(), "x"),
                fmt::join(b.sizes(), "x"));
  return (a - b).pow(2).mean();
}

torch::Tensor gaussian_window(int64_t window, double sigma) {
  TESSERA_CHECK(window > 0 && window % 2 == 1, "SSIM window {} must be odd and positive", window);
  TESSERA_CHECK(sigma > 0.0, "SSIM sigma {} must be positive", sigma);
  // Built in float64 so that float64 inputs get an exact window; callers cast to their dtype.
  torch::Tensor g = torch::empty({window}, torch::kFloat64);
  const double center = static_cast<double>(window / 2);
  double sum = 0.0;
  for (int64_t i = 0; i < window; ++i) {
    const double v = std::exp(-(i - center) * (i - center) / (2.0 * sigma * sigma));
    g[i] = v;
    sum += v;
  }
  g = g / sum;
  return torch::outer(g, g);
}

torch::Tensor ssim(const torch::Tensor& a, const torch::Tensor& b, const SsimOptions& options) {
  TESSERA_CHECK(a.dim() == 4 && a.sizes() == b.sizes(),
                "ssim: expects two [B, C, H, W] tensors of one shape, got {} and {}",
                fmt::join(a.sizes(), "x"), fmt::join(b.sizes(), "x"));
  const int64_t channels = a.size(1);
  const int64_t w = options.window;
  torch::Tensor window = gaussian_window(w, options.sigma).to(a.dtype());
  window = window.expand({channels, 1, w, w}).contiguous();
  const int64_t padding = options.zero_pad ? w / 2 : 0;
  TESSERA_CHECK(options.zero_pad || (a.size(2) >= w && a.size(3) >= w),
                "ssim: valid mode needs images of at least {}x{}, got {}x{}", w, w, a.size(2),
                a.size(3));
  // Depthwise Gaussian filtering gives local means, variances and covariance (eq. 13-15).
  const auto filter = [&](const torch::Tensor& t) {
    return torch::conv2d(t, window, {}, 1, padding, 1, channels);
  };
  const torch::Tensor mu1 = filter(a), mu2 = filter(b);
  const torch::Tensor mu1_sq = mu1 * mu1, mu2_sq = mu2 * mu2, mu12 = mu1 * mu2;
  const torch::Tensor s1 = filter(a * a) - mu1_sq;
  const torch::Tensor s2 = filter(b * b) - mu2_sq;
  const torch::Tensor s12 = filter(a * b) - mu12;
  const double c1 = options.c1, c2 = options.c2;
  const torch::Tensor map =
      ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2));
  return map.mean();
}

double psnr(double mse_value) {
  TESSERA_CHECK(mse_value >= 0.0, "psnr: mse {} is negative", mse_value);
  if (mse_value == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(1.0 / mse_value);
}

torch::Tensor grid(const std::vector<torch::Tensor>& rows, int64_t pad) {
  TESSERA_CHECK(!rows.empty(), "grid: no rows");
  TESSERA_CHECK(pad >= 0, "grid: padding {} is negative", pad);
  const auto shape = rows[0].sizes();
  TESSERA_CHECK(rows[0].dim() == 4 && shape[0] > 0, "grid: rows must be [N, C, H, W], got {}",
                fmt::join(shape, "x"));
  for (const auto& r : rows) {
    TESSERA_CHECK(r.sizes() == shape, "grid: row shape {} differs from {}",
                  fmt::join(r.sizes(), "x"), fmt::join(shape, "x"));
  }
  const int64_t n = shape[0], c = shape[1], h = shape[2], w = shape[3];
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  torch::Tensor out = torch::ones({c, n_rows * h + (n_rows + 1) * pad, n * w + (n + 1) * pad});
  for (int64_t r = 0; r < n_rows; ++r) {
    const torch::Tensor row = rows[r].detach().to(torch::kFloat32).cpu().clamp(0.0, 1.0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y0 = pad + r * (h + pad), x0 = pad + i * (w + pad);
      out.slice(1, y0, y0 + h).slice(2, x0, x0 + w).copy_(row[i]);
    }
  }
  return out;
}

namespace {

/// 5x7 glyphs, one byte per row from the top, bit 4 the leftmost column.
const std::map<char, std::array<uint8_t, 7>>& font() {
  static const std::map<char, std::array<uint8_t, 7>> glyphs = {
      {'0', {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e}},
      {'1', {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e}},
      {'2', {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f}},
      {'3', {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e}},
      {'4', {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02}},
      {'5', {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e}},
      {'6', {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e}},
      {'7', {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
      {'8', {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e}},
      {'9', {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c}},
      {'A', {0x0e, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}},
      {'B', {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e}},
      {'C', {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e}},
      {'D', {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c}},
      {'E', {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f}},
      {'F', {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10}},
      {'G', {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f}},
      {'H', {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11}},
      {'I', {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e}},
      {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c}},
      {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}},
      {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f}},
      {'M', {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11}},
      {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
      {'O', {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}},
      {'P', {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10}},
      {'Q', {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d}},
      {'R', {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11}},
      {'S', {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e}},
      {'T', {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
      {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e}},
      {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04}},
      {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a}},
      {'X', {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11}},
      {'Y', {0x11, 0x11, 0x11, 0x0a, 0x04, 0x04, 0x04}},
      {'Z', {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f}},
      {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
      {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f}},
      {'-', {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00}},
      {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c}},
      {':', {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00}},
      {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
      {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
      {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
      {'=', {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00}},
      {'/', {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00}},
      {',', {0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}},
      {'+', {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00}},
      {'?', {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}},
  };
  return glyphs;
}

}  // namespace

torch::Tensor render_text(const std::string& text) {
  const int64_t n = static_cast<int64_t>(text.size());
  torch::Tensor out = torch::zeros({7, std::max<int64_t>(6 * n - 1, 0)});
  auto ink = out.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const char c = static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
    const auto it = font().find(c);
    const auto& glyph = it != font().end() ? it->second : font().at('?');
    for (int64_t y = 0; y < 7; ++y) {
      for (int64_t x = 0; x < 5; ++x) {
        if ((glyph[y] >> (4 - x)) & 1) ink[y][6 * i + x] = 1.0f;
      }
    }
  }
  return out;
}

torch::Tensor labelled_grid(const std::vector<torch::Tensor>& rows,
                            const std::vector<std::string>& labels, int64_t pad) {
  TESSERA_CHECK(labels.size() == rows.size(), "labelled grid: {} labels for {} rows", labels.size(),
                rows.size());
  const torch::Tensor pictures = grid(rows, pad);
  const int64_t h = rows[0].size(2);
  std::vector<torch::Tensor> texts;
  int64_t width = 0;
  for (const auto& label : labels) {
    texts.push_back(render_text(label));
    width = std::max(width, texts.back().size(1));
  }
  torch::Tensor column = torch::ones({pictures.size(0), pictures.size(1), width + pad});
  for (size_t r = 0; r < texts.size(); ++r) {
    // Centred on the row; a row lower than the font shows the glyphs' top rows.
    const int64_t rows_shown = std::min<int64_t>(7, h);
    const int64_t y0 = pad + static_cast<int64_t>(r) * (h + pad) + (h - rows_shown) / 2;
    const torch::Tensor text = texts[r].slice(0, 0, rows_shown);
    column.slice(1, y0, y0 + rows_shown).slice(2, pad, pad + text.size(1)).sub_(text);
  }
  return torch::cat({column, pictures}, 2);
}

namespace {

void put_u32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

void put_chunk(std::string& png, const char* type, const std::string& data) {
  put_u32(png, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  png += body;
  put_u32(png, static_cast<uint32_t>(
                   crc32(0L, reinterpret_cast<const Bytef*>(body.data()), body.size())));
}

}  // namespace

std::string encode_png(const torch::Tensor& image) {
  TESSERA_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3),
                "encode_png: expects [1 or 3, H, W], got {}", fmt::join(image.sizes(), "x"));
  TESSERA_CHECK(image.size(1) > 0 && image.size(2) > 0, "encode_png: empty image {}",
                fmt::join(image.sizes(), "x"));
  const int64_t c = image.size(0), h = image.size(1), w = image.size(2);
  // [H, W, C] uint8, rounded.
  const torch::Tensor pixels = (image.detach().to(torch::kFloat32).cpu().clamp(0.0, 1.0) * 255.0)
                                   .round()
                                   .to(torch::kUInt8)
                                   .permute({1, 2, 0})
                                   .contiguous();
  std::string raw;
  raw.reserve(static_cast<size_t>(h * (w * c + 1)));
  const uint8_t* p = pixels.data_ptr<uint8_t>();
  for (int64_t y = 0; y < h; ++y) {
    raw.push_back('\0');  // filter type 0 (none)
    raw.append(reinterpret_cast<const char*>(p + y * w * c), static_cast<size_t>(w * c));
  }
  uLongf size = compressBound(raw.size());
  std::string deflated(size, '\0');
  const int rc = compress2(reinterpret_cast<Bytef*>(deflated.data()), &size,
                           reinterpret_cast<const Bytef*>(raw.data()), raw.size(), 9);
  TESSERA_CHECK(rc == Z_OK, "encode_png: zlib error {}", rc);
  deflated.resize(size);

  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string ihdr;
  put_u32(ihdr, static_cast<uint32_t>(w));
  put_u32(ihdr, static_cast<uint32_t>(h));
  ihdr.push_back(8);                                  // bit depth
  ihdr.push_back(static_cast<char>(c == 1 ? 0 : 2));  // grey or RGB
  ihdr.append(3, '\0');                               // deflate, filter method 0, no interlace
  put_chunk(png, "IHDR", ihdr);
  put_chunk(png, "IDAT", deflated);
  put_chunk(png, "IEND", "");
  return png;
}

void write_png(const std::string& path, const torch::Tensor& image) {
  write_file_atomic(path, encode_png(image));
}

}  // namespace tessera::image
