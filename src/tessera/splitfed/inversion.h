// Model-inversion (MI) attacks on split federated learning (ResSFL, arXiv 2205.04007;
// research/sfl.md 3.1). The curious server, colluding with one client, knows the client-side
// model f_c. Training-based MI: it trains a decoder g: z -> x on (f_c(x_aux), x_aux) pairs of
// auxiliary data and applies it to a target client's smashed data. Optimisation-based MI: it
// searches the input x^ whose f_c(x^) matches the observed z, by gradient descent.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tessera/splitfed/split.h"

namespace tessera::splitfed {

/// What the server sees of a client's smashed data: z -> z' (a defense's noise, dropout or
/// pruning; research/sfl.md 3.5). An empty function is the identity.
using SmashedTransform = std::function<torch::Tensor(const torch::Tensor& z)>;

/// The decoder families of research/sfl.md 3.1: conv_norm (Conv3x3 + BN + ReLU blocks) and
/// res_norm (pre-activation residual blocks).
enum class DecoderKind { conv, residual };

/// One decoder: "conv_normN{N}C{c}" or "res_normN{N}C{c}".
struct DecoderSpec {
  DecoderKind kind = DecoderKind::residual;
  int64_t depth = 4;      ///< N: extra blocks at the smashed resolution, <= 16
  int64_t channels = 64;  ///< c, in [1, 1024]
  /// Throws tessera::Error for N > 16 or c outside [1, 1024].
  void validate() const;
  bool operator==(const DecoderSpec& other) const;
  bool operator!=(const DecoderSpec& other) const { return !(*this == other); }
};
/// Parses "conv_normN{N}C{c}" / "res_normN{N}C{c}"; throws tessera::Error for any other name.
DecoderSpec parse_decoder(const std::string& name);
std::string decoder_name(const DecoderSpec& spec);
/// The attack suite's decoder capacities, weakest first: conv_normN0C16, res_normN0C16,
/// res_normN2C32, res_normN4C64 (research/sfl.md 3.1).
const std::vector<DecoderSpec>& decoder_suite();

/// Pre-activation residual block BN-ReLU-Conv3x3-BN-ReLU-Conv3x3 + shortcut (1x1 conv + BN when
/// the channel count changes), ResSFL `ResBlock`.
class PreActBlockImpl : public torch::nn::Module {
 public:
  PreActBlockImpl(int64_t in, int64_t out);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  torch::nn::Sequential body_{nullptr};
  torch::nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(PreActBlock);

/// g_phi: smashed data -> image. u = log2(S / H_z) up-sampling stages (ConvTranspose3x3
/// stride 2 + BN + ReLU); at least two stages, the ones not needed for up-sampling are
/// Conv3x3 + BN + ReLU; the output ends with a Sigmoid (images in (0, 1)).
class DecoderImpl : public torch::nn::Module {
 public:
  /// smashed_shape: per-sample {C_z, H_z, W_z}; image_shape: {C, S, S}. Throws tessera::Error for
  /// a bad spec, smashed data that is not [C, H, W], or S / H_z that is not a power of two.
  DecoderImpl(const DecoderSpec& spec, const std::vector<int64_t>& smashed_shape,
              const std::vector<int64_t>& image_shape);
  /// z: [B, C_z, H_z, W_z] -> x^: [B, C, S, S] in (0, 1).
  torch::Tensor forward(const torch::Tensor& z);
  const DecoderSpec& spec() const { return spec_; }

 private:
  DecoderSpec spec_;
  torch::nn::Sequential net_{nullptr};
};
TORCH_MODULE(Decoder);

struct InversionOptions {
  DecoderSpec decoder;        ///< default res_normN4C64
  int64_t epochs = 50;        ///< paper 50
  int64_t batch_size = 32;    ///< paper 32
  double lr = 1e-3;           ///< Adam, paper 1e-3
  double val_fraction = 0.1;  ///< held out of the auxiliary data; best epoch kept
  /// > 0: stop when the validation MSE has not improved for this many epochs (an attacker
  /// trained until more training no longer helps; `epochs` is then the cap). 0 = all epochs.
  int64_t patience = 0;
  uint64_t seed = 0;
  void validate() const;
};

struct InversionMetrics {
  double mse = 0.0;   ///< mean over pixels of the fixed target images
  double ssim = 0.0;  ///< 11x11 Gaussian window, sigma 1.5
  double psnr = 0.0;  ///< 10 log10(1 / mse)
  nlohmann::json to_json() const;
};

struct InversionResult {
  std::string attack;  ///< decoder name, or "optimization"
  InversionMetrics metrics;
  torch::Tensor reconstructions;  ///< [N, C, S, S] in [0, 1]
  double seconds = 0.0;
  /// Training-based attacks: the decoder's validation MSE after each epoch (its training curve).
  std::vector<double> val_curve;
  nlohmann::json to_json() const;  ///< no tensors
};

/// f_c(x) for all images, in eval mode and batches of 256, then `transform` (if any).
torch::Tensor smashed_of(ClientSide& client, const torch::Tensor& images,
                         const SmashedTransform& transform = {});
/// MSE, SSIM and PSNR of reconstructions against originals ([N, C, S, S] in [0, 1]).
InversionMetrics measure_inversion(const torch::Tensor& reconstructions,
                                   const torch::Tensor& originals);

/// Trains a decoder on (f_c(aux), aux) with MSE (research/sfl.md 3.1): the attacker's decoder
/// is trained on clean smashed data; the best validation epoch is kept. `val_curve`, when given,
/// receives the validation MSE after each epoch.
Decoder train_decoder(ClientSide& client, const torch::Tensor& aux_images,
                      const InversionOptions& options, std::vector<double>* val_curve = nullptr);
/// Training-based MI: train_decoder on `aux_images`, then reconstruct `targets` from what the
/// server sees, transform(f_c(targets)).
InversionResult attack_training(ClientSide& client, const torch::Tensor& aux_images,
                                const torch::Tensor& targets, const InversionOptions& options,
                                const SmashedTransform& transform = {});

struct OptimizationInversionOptions {
  int64_t steps = 3000;  ///< paper 50 x 60 = 3000
  double lr = 0.8;       ///< Adam (amsgrad, eps 1e-3) as in ResSFL's MIA_mf
  int64_t batch_size = 32;
  void validate() const;
};
/// Optimisation-based MI: per image, x^ (init 0.5 grey; RECONSTRUCTED, the paper starts at 0)
/// minimises MSE(f_c(x^), z) by Adam, clamped to [0, 1] after each step.
InversionResult attack_optimization(ClientSide& client, const torch::Tensor& targets,
                                    const OptimizationInversionOptions& options,
                                    const SmashedTransform& transform = {});

}  // namespace tessera::splitfed
