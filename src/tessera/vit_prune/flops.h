// Analytic multiply-accumulates of a ViT forward in which every block may run a different
// number of tokens and heads (research/efficient.md 1.5): per block with N_a tokens in
// attention, N_m in the MLP, h of H heads (inner width h D/H):
//   qkv 3 N_a D (hD/H) + scores and context 2 h N_a^2 D/H + proj N_a (hD/H) D + MLP 2 N_m D hidden,
// plus the patch embedding (N_p C P^2 D) and the classifier (D x classes). With every head
// kept and hidden = 4D this is 4 N_a D^2 + 2 N_a^2 D + 8 N_m D^2 per block. LayerNorm, softmax,
// GELU and the residual adds are not counted (as in the published GFLOPs of DeiT and ToMe).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/models/vit.h"
#include "tessera/vit_prune/baselines.h"

namespace tessera::vit_prune {

struct VitShape {
  int64_t image_size = 224;
  int64_t patch_size = 16;
  int64_t in_channels = 3;
  int64_t dim = 384;
  int64_t depth = 12;
  int64_t heads = 6;
  int64_t mlp_hidden = 1536;
  int64_t num_classes = 1000;

  int64_t patches() const;  ///< (image_size / patch_size)^2
  static VitShape of(models::VitImpl& vit);
  /// DeiT-S / ViT-S/16 at 224 px (ImageNet): D 384, 12 blocks, 6 heads, MLP 1536, 1000 classes.
  static VitShape deit_small();
  nlohmann::json to_json() const;
};

/// Tokens (CLS included) and heads of every block, plus work a method adds (ToMe's matching).
struct TokenPlan {
  std::vector<int64_t> attention_tokens, mlp_tokens, heads;
  int64_t extra_macs = 0;
};

struct MacCount {
  int64_t patch_embed = 0, attention_linear = 0, attention_matmul = 0, mlp = 0, head = 0;
  int64_t extra = 0;
  int64_t total = 0;
};

/// Per image. Throws tessera::Error when the plan's lists do not have `depth` entries or a
/// count is out of range.
MacCount vit_macs(const VitShape& shape, const TokenPlan& plan);

/// Every block runs every token and head.
TokenPlan full_plan(const VitShape& shape);
/// CP-ViT: block l runs the patches kept by block l - 1 in attention and kept_patches[l] in its
/// MLP; heads[l] heads (empty = all).
TokenPlan cascade_plan(const VitShape& shape, const std::vector<int64_t>& kept_patches,
                       const std::vector<int64_t>& heads = {});
/// EViT at options' locations (with the fused token when options.fuse).
TokenPlan evit_plan(const VitShape& shape, const EvitOptions& options);
/// ToMe with r per block; its bipartite matching (|A| x |B| x D/H per block) is extra_macs.
TokenPlan tome_plan(const VitShape& shape, const TomeOptions& options);

}  // namespace tessera::vit_prune
