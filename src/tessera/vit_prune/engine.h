// The token-reducing ViT forward shared by CP-ViT and its baselines: one pass over a trained
// models::Vit whose blocks may drop, gather or merge tokens between attention and MLP and whose
// attention may run on a subset of heads (weights sliced once, so every matmul stays dense).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tessera/models/model.h"
#include "tessera/models/vit.h"

namespace tessera::vit_prune {

/// The ViT inside `model`; throws tessera::Error naming the architecture when it is not "vit".
models::VitImpl& as_vit(models::Model& model);

/// The tokens between blocks. Token 0 is always the class token.
struct TokenState {
  torch::Tensor x;      ///< [B, T, D] float32
  torch::Tensor index;  ///< [B, T] int64: original position (0 = CLS, 1.. patches, -1 fused)
  torch::Tensor size;   ///< [B, T] float32: patches merged into each token (ToMe); may be undefined
  torch::Tensor score;  ///< [B, T] float32: cumulative patch score (CP-ViT); may be undefined
  int64_t tokens() const { return x.size(1); }
};

/// What one attention layer hands the reducer.
struct AttentionPieces {
  torch::Tensor probs;  ///< [B, H', T, T]: softmax probabilities of the kept heads H'
  torch::Tensor keys;   ///< [B, H', T, D/H]: keys (only when the reducer asks for them)
};

/// Gathers `keep` ([B, K] int64 token positions) of every tensor in the state.
void gather_tokens(TokenState& state, const torch::Tensor& keep);

/// A token-reduction method (CP-ViT, EViT, ToMe): called between attention and MLP of every
/// block. A reducer holds per-forward state (scores), so one instance serves one forward at a time.
class TokenReducer {
 public:
  virtual ~TokenReducer() = default;
  /// Before block 0 (initialise scores or sizes in `state`).
  virtual void start(TokenState& state) {}
  /// After the attention of block `layer`, before its MLP: may gather or merge `state`.
  virtual void reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) = 0;
  /// Whether attention adds log(size) to its logits (ToMe's proportional attention).
  virtual bool proportional_attention() const { return false; }
  /// Whether reduce() reads AttentionPieces::keys.
  virtual bool needs_keys() const { return false; }
};

/// Tokens and heads one forward pass ran with (per block).
struct ForwardTrace {
  std::vector<int64_t> attention_tokens;  ///< tokens (incl. CLS) entering each block's attention
  std::vector<int64_t> mlp_tokens;        ///< tokens entering each block's MLP
  std::vector<int64_t> heads;             ///< heads each block's attention ran
};

struct ReducedOutput {
  torch::Tensor logits;  ///< [B, num_classes]
  TokenState tokens;     ///< the tokens after the last block
  ForwardTrace trace;
};

/// A trained ViT run with per-block head subsets and a token reducer. With all heads and a
/// reducer that never reduces, forward() performs exactly the model's own operations, so its
/// logits equal model->forward(images) bit for bit.
class ReducedVit {
 public:
  /// `kept_heads[l]`: the heads block l runs (ascending; empty or missing = all heads). Throws
  /// tessera::Error for a model that is not a ViT, an empty-but-present head list is not
  /// possible (empty = all), a head index out of range, or a repeated head.
  explicit ReducedVit(models::Model model, std::vector<std::vector<int64_t>> kept_heads = {});

  /// images: [B, C, S, S] -> logits. `reducer` may be null (no token reduction). In training
  /// mode the head slices are taken from the parameters in every call (so gradients reach them);
  /// in eval mode the copies made at construction are used.
  ReducedOutput forward(const torch::Tensor& images, TokenReducer* reducer);
  models::VitImpl& vit() { return *vit_; }
  models::Model& model() { return model_; }
  /// Heads block l runs.
  int64_t heads(int64_t layer) const;

 private:
  struct HeadSlice {
    bool all = true;
    int64_t n_heads = 0;
    torch::Tensor qkv_weight, qkv_bias, proj_weight;  ///< sliced copies when !all
    torch::Tensor rows, columns;  ///< the qkv rows and proj columns of the kept heads
  };
  torch::Tensor attention(int64_t layer, const torch::Tensor& x, const torch::Tensor& log_size,
                          bool want_keys, AttentionPieces& pieces);

  models::Model model_;
  models::VitImpl* vit_ = nullptr;
  std::vector<HeadSlice> slices_;
};

}  // namespace tessera::vit_prune
