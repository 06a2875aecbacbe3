// EViT and ToMe as token reducers (see baselines.h).
#include "tessera/vit_prune/baselines.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tessera/core/error.h"

namespace tessera::vit_prune {

void EvitOptions::validate() const {
  TESSERA_CHECK(std::isfinite(keep_rate) && keep_rate > 0 && keep_rate <= 1,
                "evit keep_rate must be in (0, 1], got {}", keep_rate);
  for (const int64_t l : locations) TESSERA_CHECK(l >= 0, "evit location must be >= 0, got {}", l);
}

nlohmann::json EvitOptions::to_json() const {
  return {{"keep_rate", keep_rate}, {"locations", locations}, {"fuse", fuse}};
}

std::vector<int64_t> evit_locations(const EvitOptions& options, int64_t depth) {
  std::vector<int64_t> at = options.locations;
  if (at.empty()) at = {depth / 4, depth / 2, (3 * depth) / 4};
  std::sort(at.begin(), at.end());
  at.erase(std::unique(at.begin(), at.end()), at.end());
  for (const int64_t l : at)
    TESSERA_CHECK(l >= 0 && l < depth, "evit location {} is not a block of depth {}", l, depth);
  return at;
}

EvitPruner::EvitPruner(EvitOptions options, int64_t depth)
    : options_(std::move(options)), at_(depth, false) {
  options_.validate();
  for (const int64_t l : evit_locations(options_, depth)) at_[l] = true;
}

void EvitPruner::reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) {
  if (layer >= static_cast<int64_t>(at_.size()) || !at_[layer]) return;
  const int64_t others = state.tokens() - 1;
  const auto left = static_cast<int64_t>(std::ceil(options_.keep_rate * others - 1e-9));
  if (left >= others) return;
  // Class-token attention to each other token, averaged over heads: [B, T - 1].
  const auto cls_attn = attention.probs.select(2, 0).slice(2, 1).mean(1);
  const auto order = std::get<1>(cls_attn.sort(1, true));
  const auto top = std::get<0>(order.slice(1, 0, left).sort(1));
  torch::Tensor fused;
  if (options_.fuse) {
    const auto rest = order.slice(1, left);  // [B, others - left]
    const auto rows = rest.unsqueeze(-1).expand({-1, -1, state.x.size(2)});
    const auto x_rest = state.x.slice(1, 1).gather(1, rows);
    fused = (x_rest * cls_attn.gather(1, rest).unsqueeze(-1)).sum(1, true);  // [B, 1, D]
  }
  gather_tokens(state, torch::cat({torch::zeros({top.size(0), 1}, torch::kLong), top + 1}, 1));
  if (options_.fuse) {
    state.x = torch::cat({state.x, fused}, 1);
    state.index = torch::cat({state.index, torch::full({state.x.size(0), 1}, -1, torch::kLong)}, 1);
  }
}

void TomeOptions::validate() const { TESSERA_CHECK(r >= 0, "tome r must be >= 0, got {}", r); }

nlohmann::json TomeOptions::to_json() const {
  return {{"r", r}, {"proportional_attention", proportional_attention}};
}

int64_t tome_merged(int64_t tokens, int64_t r) {
  return std::max<int64_t>(0, std::min(r, (tokens - 1) / 2));
}

TomeMerger::TomeMerger(TomeOptions options) : options_(options) { options_.validate(); }

void TomeMerger::start(TokenState& state) {
  state.size = torch::ones({state.x.size(0), state.tokens()}, state.x.options());
}

void TomeMerger::reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) {
  const int64_t tokens = state.tokens(), r = tome_merged(tokens, options_.r);
  if (r == 0) return;
  const int64_t batch = state.x.size(0), dim = state.x.size(2);
  // Similarity of keys averaged over heads; set A = even positions (CLS is A[0]), B = odd.
  auto metric = attention.keys.detach().mean(1);
  metric = metric / metric.norm(2, -1, true);
  const auto a = metric.slice(1, 0, tokens, 2), b = metric.slice(1, 1, tokens, 2);
  auto scores = torch::matmul(a, b.transpose(-1, -2));
  scores.select(1, 0).fill_(-std::numeric_limits<float>::infinity());  // CLS is never merged
  const auto [node_max, node_idx] = scores.max(-1);
  const auto edges = std::get<1>(node_max.sort(-1, true));
  const auto unmerged = std::get<0>(edges.slice(1, r).sort(1));  // keeps CLS first
  const auto src = edges.slice(1, 0, r);
  const auto dst = node_idx.gather(1, src);
  // Size-weighted average of merged tokens (merge_wavg): sum x * s and s, divide.
  const auto weighted = state.x * state.size.unsqueeze(-1);
  auto merge = [&](const torch::Tensor& t, int64_t channels) {
    const auto ta = t.slice(1, 0, tokens, 2), tb = t.slice(1, 1, tokens, 2);
    auto expand = [&](const torch::Tensor& idx) {
      return idx.unsqueeze(-1).expand({batch, idx.size(1), channels});
    };
    const auto kept_a = ta.gather(1, expand(unmerged));
    const auto merged_b = tb.scatter_add(1, expand(dst), ta.gather(1, expand(src)));
    return torch::cat({kept_a, merged_b}, 1);
  };
  const auto size = merge(state.size.unsqueeze(-1), 1);
  state.x = merge(weighted, dim) / size;
  state.size = size.squeeze(-1);
  const auto index_a = state.index.slice(1, 0, tokens, 2).gather(1, unmerged);
  state.index = torch::cat({index_a, state.index.slice(1, 1, tokens, 2)}, 1);
  if (state.score.defined()) state.score = torch::Tensor();
}

}  // namespace tessera::vit_prune
