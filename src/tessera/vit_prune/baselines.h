// The token-reduction baselines in the same engine, on the same weights, training-free:
// EViT (Liang et al. 2022: keep the patches the class token attends most, optionally fuse the
// rest into one token) and ToMe (Bolya et al. 2023: bipartite soft matching merges r tokens per
// block, with proportional attention). research/efficient.md 1.6 (CODE-verified algorithms).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "tessera/vit_prune/engine.h"

namespace tessera::vit_prune {

struct EvitOptions {
  /// Fraction of the non-CLS tokens kept at each location, in (0, 1].
  double keep_rate = 0.7;
  /// Blocks that reduce (0-based); empty: depth/4, depth/2, 3 depth/4 (3, 6, 9 of 12 as in
  /// EViT's drop_loc).
  std::vector<int64_t> locations;
  bool fuse = true;  ///< fuse the dropped tokens into one (sum of cls_attn_j x_j, as evit.py)

  void validate() const;
  nlohmann::json to_json() const;
};
/// The reduction blocks of EViT for a ViT of `depth` blocks (options.locations or the default).
std::vector<int64_t> evit_locations(const EvitOptions& options, int64_t depth);

/// EViT's token reorganisation between attention and MLP of each location block.
class EvitPruner : public TokenReducer {
 public:
  EvitPruner(EvitOptions options, int64_t depth);
  void reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) override;

 private:
  EvitOptions options_;
  std::vector<bool> at_;
};

struct TomeOptions {
  int64_t r = 4;  ///< tokens merged per block (capped at half the non-CLS tokens)
  bool proportional_attention = true;  ///< add log(size) to the attention logits

  void validate() const;
  nlohmann::json to_json() const;
};

/// ToMe's bipartite soft matching (tome/merge.py) between attention and MLP of every block.
class TomeMerger : public TokenReducer {
 public:
  explicit TomeMerger(TomeOptions options);
  void start(TokenState& state) override;
  void reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) override;
  bool proportional_attention() const override { return options_.proportional_attention; }
  bool needs_keys() const override { return true; }

 private:
  TomeOptions options_;
};

/// Tokens merged by ToMe in a block that holds `tokens` tokens (CLS included).
int64_t tome_merged(int64_t tokens, int64_t r);

}  // namespace tessera::vit_prune
