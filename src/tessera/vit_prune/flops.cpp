// Analytic ViT MACs under a token plan (see flops.h).
#include "tessera/vit_prune/flops.h"

#include <cmath>

#include "tessera/core/error.h"

namespace tessera::vit_prune {

int64_t VitShape::patches() const {
  TESSERA_CHECK(patch_size > 0 && image_size % patch_size == 0,
                "vit shape: patch size {} does not divide image size {}", patch_size, image_size);
  const int64_t side = image_size / patch_size;
  return side * side;
}

VitShape VitShape::of(models::VitImpl& vit) {
  const auto& o = vit.options();
  const auto& c = vit.config();
  return {c.image_size, o.patch_size, c.in_channels,  o.dim,
          o.depth,      o.heads,      o.mlp_hidden(), c.num_classes};
}

VitShape VitShape::deit_small() { return VitShape{}; }

nlohmann::json VitShape::to_json() const {
  return {{"image_size", image_size},
          {"patch_size", patch_size},
          {"in_channels", in_channels},
          {"dim", dim},
          {"depth", depth},
          {"heads", heads},
          {"mlp_hidden", mlp_hidden},
          {"num_classes", num_classes}};
}

MacCount vit_macs(const VitShape& s, const TokenPlan& plan) {
  const auto depth = static_cast<size_t>(s.depth);
  TESSERA_CHECK(plan.attention_tokens.size() == depth && plan.mlp_tokens.size() == depth &&
                    plan.heads.size() == depth,
                "token plan must have {} blocks, got {}/{}/{}", depth, plan.attention_tokens.size(),
                plan.mlp_tokens.size(), plan.heads.size());
  TESSERA_CHECK(s.dim % s.heads == 0, "vit shape: {} heads do not divide dim {}", s.heads, s.dim);
  const int64_t head_dim = s.dim / s.heads, max_tokens = s.patches() + 1;
  MacCount m;
  m.patch_embed = s.patches() * s.in_channels * s.patch_size * s.patch_size * s.dim;
  m.head = s.dim * s.num_classes;
  for (size_t l = 0; l < depth; ++l) {
    const int64_t na = plan.attention_tokens[l], nm = plan.mlp_tokens[l], h = plan.heads[l];
    TESSERA_CHECK(na >= 1 && na <= max_tokens + 1 && nm >= 1 && nm <= na + 1,
                  "token plan block {}: {} attention and {} MLP tokens", l, na, nm);
    TESSERA_CHECK(h >= 1 && h <= s.heads, "token plan block {}: {} heads of {}", l, h, s.heads);
    const int64_t inner = h * head_dim;
    m.attention_linear += na * s.dim * 3 * inner + na * inner * s.dim;
    m.attention_matmul += 2 * h * na * na * head_dim;
    m.mlp += 2 * nm * s.dim * s.mlp_hidden;
  }
  m.extra = plan.extra_macs;
  m.total = m.patch_embed + m.attention_linear + m.attention_matmul + m.mlp + m.head + m.extra;
  return m;
}

TokenPlan full_plan(const VitShape& s) {
  return cascade_plan(s, std::vector<int64_t>(s.depth, s.patches()));
}

TokenPlan cascade_plan(const VitShape& s, const std::vector<int64_t>& kept_patches,
                       const std::vector<int64_t>& heads) {
  TESSERA_CHECK(static_cast<int64_t>(kept_patches.size()) == s.depth,
                "cascade plan: {} kept counts for depth {}", kept_patches.size(), s.depth);
  TESSERA_CHECK(heads.empty() || static_cast<int64_t>(heads.size()) == s.depth,
                "cascade plan: {} head counts for depth {}", heads.size(), s.depth);
  TokenPlan plan;
  int64_t tokens = s.patches() + 1;
  for (int64_t l = 0; l < s.depth; ++l) {
    plan.attention_tokens.push_back(tokens);
    tokens = std::min(tokens, kept_patches[l] + 1);
    plan.mlp_tokens.push_back(tokens);
    plan.heads.push_back(heads.empty() ? s.heads : heads[l]);
  }
  return plan;
}

TokenPlan evit_plan(const VitShape& s, const EvitOptions& options) {
  options.validate();
  std::vector<bool> at(s.depth, false);
  for (const int64_t l : evit_locations(options, s.depth)) at[l] = true;
  TokenPlan plan;
  int64_t tokens = s.patches() + 1;
  for (int64_t l = 0; l < s.depth; ++l) {
    plan.attention_tokens.push_back(tokens);
    const int64_t others = tokens - 1;
    const auto left = static_cast<int64_t>(std::ceil(options.keep_rate * others - 1e-9));
    if (at[l] && left < others) tokens = 1 + left + (options.fuse ? 1 : 0);
    plan.mlp_tokens.push_back(tokens);
    plan.heads.push_back(s.heads);
  }
  return plan;
}

TokenPlan tome_plan(const VitShape& s, const TomeOptions& options) {
  options.validate();
  TokenPlan plan;
  int64_t tokens = s.patches() + 1;
  const int64_t head_dim = s.dim / s.heads;
  for (int64_t l = 0; l < s.depth; ++l) {
    plan.attention_tokens.push_back(tokens);
    const int64_t r = tome_merged(tokens, options.r);
    if (r > 0) plan.extra_macs += ((tokens + 1) / 2) * (tokens / 2) * head_dim;
    tokens -= r;
    plan.mlp_tokens.push_back(tokens);
    plan.heads.push_back(s.heads);
  }
  return plan;
}

}  // namespace tessera::vit_prune
