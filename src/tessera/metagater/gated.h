// The conditional channel gated Conv-4 of MetaGater (research/efficient.md 3.2): per conv layer a
// gate (global average pool -> FC -> ReLU -> FC -> per-channel logits), a hard decision with a
// straight-through estimator in training and a threshold at inference, and a forward that
// physically skips the channels a gate switches off. The network is functional (parameters are
// passed in) so that the inner adaptation steps of meta-learning can differentiate through them.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::metagater {

struct GatedNetOptions {
  int64_t in_channels = 1;
  int64_t image_size = 28;      ///< input H = W; each block halves it (max pool 2, floor)
  int64_t width = 32;           ///< C of every conv layer
  int64_t layers = 4;           ///< conv blocks (conv 3x3 - BN - ReLU - max pool 2)
  int64_t ways = 5;             ///< classes of the linear head
  bool gated = true;            ///< false: the plain Conv-4 (every channel always on)
  int64_t gate_hidden = 16;     ///< hidden units of each gate MLP (Abati et al.)
  double gate_bias_init = 0.5;  ///< initial bias of the gate logits: channels start on

  void validate() const;
  nlohmann::json to_json() const;
};

/// Parameters of the network: the backbone theta and the gates phi, in a fixed order.
/// backbone per layer l: conv weight [C, C_in, 3, 3], BN gamma [C], BN beta [C]; then head
/// weight [ways, C], head bias [ways]. gates per layer: fc1 weight [hidden, C_in], fc1 bias
/// [hidden], fc2 weight [C, hidden], fc2 bias [C] (empty when ungated).
struct Params {
  std::vector<torch::Tensor> backbone;
  std::vector<torch::Tensor> gates;
  /// Detached copies (leaf tensors without grad).
  Params clone() const;
  /// Detached copies that require grad (a fresh leaf for differentiation).
  Params leaves() const;
  std::vector<torch::Tensor> all() const;
};

/// How the gates decide.
enum class GateMode {
  train,  ///< hard decision 1[z > 0] forward, sigmoid gradient backward (straight-through)
  infer,  ///< hard decision 1[z > threshold], no gradient
};

/// The straight-through gate: forward 1[z > 0], backward d/dz sigmoid(z).
torch::Tensor ste_gate(const torch::Tensor& logits);

/// Per-layer BN statistics (mean, biased variance per channel) from a support set.
struct BnStats {
  std::vector<torch::Tensor> mean;
  std::vector<torch::Tensor> var;
};

struct ForwardOut {
  torch::Tensor logits;              ///< [B, ways]
  std::vector<torch::Tensor> gates;  ///< per layer [B, C] in {0, 1} (all ones when ungated)
};

/// Its parameters as a module (registered, so that an optimizer and train::fit_epochs can step
/// them) plus the functional forward.
class GatedNetImpl : public torch::nn::Module {
 public:
  explicit GatedNetImpl(GatedNetOptions options);
  const GatedNetOptions& options() const { return options_; }
  /// The registered parameters (shared storage, not copies).
  Params params() const;
  /// Copies `values` into the registered parameters (no grad).
  void load(const Params& values);

  /// Masked forward: every channel computed, then multiplied by its gate. BN normalizes with
  /// `stats` when given, else with the statistics of rows [0, n_stats) of x (the support set),
  /// which are written to `stats_out` when non-null. x: [B, C_in, H, W].
  ForwardOut forward(const Params& p, const torch::Tensor& x, int64_t n_stats, GateMode mode,
                     double threshold = 0.0, const BnStats* stats = nullptr,
                     BnStats* stats_out = nullptr) const;

  /// Inference of one image with the switched-off channels physically skipped: each conv uses
  /// only the rows (output channels) its gate keeps and the columns (input channels) the previous
  /// gate kept (index_select), BN folded into a per-channel affine. Equals forward(.., infer) on
  /// the same stats. x: [1, C_in, H, W]; returns logits [1, ways].
  torch::Tensor forward_skip(const Params& p, const torch::Tensor& x, const BnStats& stats,
                             double threshold = 0.0) const;

  /// Multiply-accumulates of one image given the active channels of each layer (a_l per layer:
  /// conv a_{l-1} x a_l x 9 x H_l x W_l, gate MLPs, head). Ungated: every channel active.
  double macs(const std::vector<double>& active) const;
  /// MACs of the ungated network of the same shape.
  double dense_macs() const;
  /// Spatial size at the input of each conv layer.
  std::vector<int64_t> spatial() const;

 private:
  GatedNetOptions options_;
  std::vector<torch::Tensor> backbone_;
  std::vector<torch::Tensor> gates_;
};
TORCH_MODULE(GatedNet);

/// The sparsity regularizer: mean over layers of (mean gate - target)^2 (research 3.2).
torch::Tensor sparsity_penalty(const std::vector<torch::Tensor>& gates, double target_rate);

}  // namespace tessera::metagater
