// A small Vision Transformer for 28/32-pixel images (Dosovitskiy et al. 2021): patch embedding
// with a class token and learned position embedding, pre-norm encoder blocks, and a head on the
// class token. Attention exposes its per-head probabilities for CP-ViT's head/patch pruning.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/models/describe.h"
#include "tessera/models/model.h"

namespace tessera::models {

/// The ViT options, read from ModelConfig::extra (keys as below, defaults shown).
struct VitOptions {
  int64_t patch_size = 4;  ///< "patch_size": must divide image_size
  int64_t dim = 64;        ///< "dim" (D), at most 4096: must be divisible by heads
  int64_t depth = 6;       ///< "depth": number of encoder blocks, at most 256
  int64_t heads = 4;       ///< "heads"
  double mlp_ratio = 2.0;  ///< "mlp_ratio", at most 16: MLP hidden = round(dim * mlp_ratio)

  /// Reads and checks the options of `config` (unknown keys, non-positive values, a patch size
  /// that does not divide image_size, heads that do not divide dim: tessera::Error).
  static VitOptions from_config(const ModelConfig& config);
  int64_t mlp_hidden() const;
};

/// Splits [B, C, S, S] into (S/P)^2 patches, projects each to D (a P x P conv with stride P),
/// prepends the class token and adds the position embedding: -> [B, T, D], T = (S/P)^2 + 1.
/// Parameters: "proj.weight" [D, C, P, P], "proj.bias", "cls_token" [1, 1, D],
/// "pos_embed" [1, T, D].
class PatchEmbedImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  PatchEmbedImpl(int64_t in_channels, int64_t image_size, int64_t patch_size, int64_t dim);
  torch::Tensor forward(torch::Tensor x);
  /// Layers: <prefix>.proj (Conv2d), <prefix>.pos_add (Add over [T, D]).
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;
  int64_t n_tokens() const { return n_patches_ + 1; }

  torch::nn::Conv2d proj{nullptr};
  torch::Tensor cls_token, pos_embed;

 private:
  int64_t n_patches_ = 0;
  int64_t dim_ = 0;
};
TORCH_MODULE(PatchEmbed);

/// Multi-head self-attention: softmax(Q K^T / sqrt(D/H)) V per head, then a projection.
/// Parameters: "qkv.weight" [3D, D] (rows: all heads' Q, then K, then V), "qkv.bias",
/// "proj.weight" [D, D], "proj.bias".
class AttentionImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  AttentionImpl(int64_t dim, int64_t heads);
  /// x: [B, T, D] -> [B, T, D].
  torch::Tensor forward(torch::Tensor x);
  /// Same output plus the attention probabilities [B, H, T, T] (rows sum to 1), so pruning code
  /// can score heads and patches. `head_mask` (optional, [H] or [B, H], 0/1 or weights) scales
  /// each head's context before the projection: a 0 removes the head.
  std::pair<torch::Tensor, torch::Tensor> forward_with_probs(torch::Tensor x,
                                                             const torch::Tensor& head_mask = {});
  /// Layers: <prefix>.qkv (Linear), <prefix>.scores (MatMul Q K^T, groups = H),
  /// <prefix>.softmax (Activation), <prefix>.context (MatMul probs V), <prefix>.proj (Linear).
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;
  int64_t heads() const { return heads_; }
  int64_t head_dim() const { return dim_ / heads_; }

  torch::nn::Linear qkv{nullptr}, proj{nullptr};

 private:
  int64_t dim_ = 0;
  int64_t heads_ = 0;
};
TORCH_MODULE(Attention);

/// Pre-norm transformer block: x + attn(norm1(x)), then + fc2(gelu(fc1(norm2(x)))).
/// x: [B, T, D] -> [B, T, D]. Parameters: "norm1.*", "attn.*", "norm2.*", "fc1.*" [hidden, D],
/// "fc2.*" [D, hidden].
class EncoderBlockImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  EncoderBlockImpl(int64_t dim, int64_t heads, int64_t mlp_hidden);
  torch::Tensor forward(torch::Tensor x);
  /// forward() plus this block's attention probabilities [B, H, T, T]; see AttentionImpl.
  std::pair<torch::Tensor, torch::Tensor> forward_with_probs(torch::Tensor x,
                                                             const torch::Tensor& head_mask = {});
  /// Layers: norm1, attn.*, add1, norm2, fc1, gelu, fc2, add2 (all under <prefix>).
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;

  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attention attn{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(EncoderBlock);

/// The classifier on the class token: fc(norm(x[:, 0])). x: [B, T, D] -> [B, num_classes].
/// (The norm is applied to the class token only; the other tokens' norms are never used.)
/// Parameters: "norm.*", "fc.weight" [num_classes, D], "fc.bias".
class VitHeadImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  VitHeadImpl(int64_t dim, int64_t num_classes);
  torch::Tensor forward(torch::Tensor x);
  /// Layers: <prefix>.norm (Norm over the class token), <prefix>.fc (Linear).
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(VitHead);

/// "vit". Units: "patch_embed" (kind "patch_embed"), "encoder1".."encoder<depth>" ("encoder"),
/// "head" ("head"). width_mult must be 1 (set "dim" instead). A cut after unit k > 0 sends
/// [B, T, D] tokens. To reach the blocks, cast: std::dynamic_pointer_cast<VitImpl>(model.ptr()).
class VitImpl : public ModelImpl {
 public:
  explicit VitImpl(ModelConfig config);
  const VitOptions& options() const { return options_; }
  PatchEmbed& patch_embed() { return patch_embed_; }
  std::vector<EncoderBlock>& blocks() { return blocks_; }
  VitHead& head() { return head_; }

 private:
  VitOptions options_;
  PatchEmbed patch_embed_{nullptr};
  std::vector<EncoderBlock> blocks_;
  VitHead head_{nullptr};
};

}  // namespace tessera::models
