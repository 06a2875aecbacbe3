// Image-similarity metrics (MSE, SSIM with a Gaussian window, PSNR) for images in [0, 1], and a
// small PNG writer for image grids (what a reconstruction attack leaked, shown to a person).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::image {

struct SsimOptions {
  int64_t window = 11;  ///< odd side of the Gaussian window
  double sigma = 1.5;   ///< its standard deviation
  double c1 = 0.01 * 0.01;
  double c2 = 0.03 * 0.03;
  /// true: zero padding of window/2, every pixel contributes (pytorch_ssim, as ResSFL uses).
  /// false: "valid" positions only (the window lies inside the image).
  bool zero_pad = true;
};

/// Mean squared error over every element. a, b: [B, C, H, W] (same shape). Differentiable.
torch::Tensor mse(const torch::Tensor& a, const torch::Tensor& b);
/// Mean SSIM over batch, channels and positions (Wang et al. 2004; ResSFL's pytorch_ssim:
/// per-channel Gaussian filtering, C1 = 0.01^2, C2 = 0.03^2). a, b: [B, C, H, W] float in
/// [0, 1]. Differentiable (attacker-aware training maximises / penalises it). Throws
/// tessera::Error on shape mismatch, an even or non-positive window, sigma <= 0, or (valid mode)
/// an image smaller than the window.
torch::Tensor ssim(const torch::Tensor& a, const torch::Tensor& b, const SsimOptions& options = {});
/// Peak signal-to-noise ratio for peak 1.0: 10 log10(1 / mse). +inf for mse = 0.
double psnr(double mse);
/// The normalised 2-D Gaussian window [window, window] float64 (outer product of the 1-D one).
torch::Tensor gaussian_window(int64_t window, double sigma);

/// Tiles rows of images into one picture: rows[r]: [N, C, H, W] in [0, 1] (values are clamped),
/// all of one shape; `pad` pixels of white between tiles. Returns [C, H', W'] float32.
torch::Tensor grid(const std::vector<torch::Tensor>& rows, int64_t pad = 2);
/// Text in a 5x7 bitmap font with one blank column between characters: [7, 6 * n - 1] float32,
/// 1 where there is ink. Letters are drawn as capitals; A-Z, 0-9 and " _-.:%()=/,+?" have
/// glyphs, any other character is drawn as '?'.
torch::Tensor render_text(const std::string& text);
/// grid() with a column on the left holding `labels[r]` (black on white, centred on row r), so
/// that a picture of reconstructions says which row is which. One label per row.
torch::Tensor labelled_grid(const std::vector<torch::Tensor>& rows,
                            const std::vector<std::string>& labels, int64_t pad = 2);
/// Encodes [C, H, W] (C = 1 grey or C = 3 RGB) float in [0, 1] as an 8-bit PNG (zlib deflate,
/// filter 0). Returns the file's bytes.
std::string encode_png(const torch::Tensor& image);
/// encode_png written atomically to `path`.
void write_png(const std::string& path, const torch::Tensor& image);

}  // namespace tessera::image
