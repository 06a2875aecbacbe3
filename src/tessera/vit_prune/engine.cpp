// The token-reducing ViT forward (see engine.h). The attention mirrors models::AttentionImpl's
// operation order exactly, so an unreduced pass equals the model's own forward.
#include "tessera/vit_prune/engine.h"

#include <fmt/format.h>

#include <cmath>
#include <set>

#include "tessera/core/error.h"

namespace tessera::vit_prune {

models::VitImpl& as_vit(models::Model& model) {
  TESSERA_CHECK(!model.is_empty(), "vit_prune: the model is empty");
  auto* vit = dynamic_cast<models::VitImpl*>(model.ptr().get());
  TESSERA_CHECK(vit != nullptr,
                "vit_prune needs a ViT (architecture \"vit\"), got a '{}' model: patch and head "
                "pruning works on attention blocks only",
                model->config().name);
  return *vit;
}

void gather_tokens(TokenState& state, const torch::Tensor& keep) {
  TESSERA_CHECK(keep.dim() == 2 && keep.size(0) == state.x.size(0),
                "gather_tokens: keep must be [B, K], got {} dims", keep.dim());
  const auto rows = keep.unsqueeze(-1).expand({-1, -1, state.x.size(2)});
  state.x = state.x.gather(1, rows);
  state.index = state.index.gather(1, keep);
  if (state.size.defined()) state.size = state.size.gather(1, keep);
  if (state.score.defined()) state.score = state.score.gather(1, keep);
}

ReducedVit::ReducedVit(models::Model model, std::vector<std::vector<int64_t>> kept_heads)
    : model_(std::move(model)), vit_(&as_vit(model_)) {
  const auto& options = vit_->options();
  TESSERA_CHECK(static_cast<int64_t>(kept_heads.size()) <= options.depth,
                "ReducedVit: {} head lists for a ViT of depth {}", kept_heads.size(),
                options.depth);
  const int64_t dim = options.dim, head_dim = options.dim / options.heads;
  for (int64_t l = 0; l < options.depth; ++l) {
    HeadSlice slice;
    slice.n_heads = options.heads;
    const std::vector<int64_t> heads =
        l < static_cast<int64_t>(kept_heads.size()) ? kept_heads[l] : std::vector<int64_t>{};
    const std::set<int64_t> unique(heads.begin(), heads.end());
    TESSERA_CHECK(unique.size() == heads.size(), "ReducedVit: block {} repeats a head", l);
    for (const int64_t h : heads)
      TESSERA_CHECK(h >= 0 && h < options.heads, "ReducedVit: block {} head {} not in [0, {})", l,
                    h, options.heads);
    if (!heads.empty() && static_cast<int64_t>(heads.size()) < options.heads) {
      // Rows of qkv.weight: all heads' Q, then K, then V; a head is head_dim rows of each.
      std::vector<int64_t> rows, columns;
      for (int64_t part = 0; part < 3; ++part)
        for (const int64_t h : unique)
          for (int64_t r = 0; r < head_dim; ++r) rows.push_back(part * dim + h * head_dim + r);
      for (const int64_t h : unique)
        for (int64_t r = 0; r < head_dim; ++r) columns.push_back(h * head_dim + r);
      const auto row_index = torch::tensor(rows, torch::kLong);
      const auto column_index = torch::tensor(columns, torch::kLong);
      auto& attn = vit_->blocks()[l]->attn;
      torch::NoGradGuard no_grad;
      slice.all = false;
      slice.n_heads = static_cast<int64_t>(heads.size());
      slice.rows = row_index;
      slice.columns = column_index;
      slice.qkv_weight = attn->qkv->weight.index_select(0, row_index).contiguous();
      slice.qkv_bias = attn->qkv->bias.index_select(0, row_index).contiguous();
      slice.proj_weight = attn->proj->weight.index_select(1, column_index).contiguous();
    }
    slices_.push_back(slice);
  }
}

int64_t ReducedVit::heads(int64_t layer) const {
  TESSERA_CHECK(layer >= 0 && layer < static_cast<int64_t>(slices_.size()),
                "ReducedVit: no block {}", layer);
  return slices_[layer].n_heads;
}

torch::Tensor ReducedVit::attention(int64_t layer, const torch::Tensor& x,
                                    const torch::Tensor& log_size, bool want_keys,
                                    AttentionPieces& pieces) {
  auto& attn = vit_->blocks()[layer]->attn;
  const HeadSlice& slice = slices_[layer];
  const int64_t batch = x.size(0), tokens = x.size(1), head_dim = attn->head_dim();
  const bool live = !slice.all && attn->is_training();  // fine-tuning: slice inside the graph
  torch::Tensor projected;
  if (slice.all) {
    projected = attn->qkv(x);
  } else if (live) {
    projected = torch::linear(x, attn->qkv->weight.index_select(0, slice.rows),
                              attn->qkv->bias.index_select(0, slice.rows));
  } else {
    projected = torch::linear(x, slice.qkv_weight, slice.qkv_bias);
  }
  // [B, T, 3 H' D/H] -> [3, B, H', T, D/H], as in AttentionImpl::forward_with_probs.
  const torch::Tensor qkv_heads =
      projected.reshape({batch, tokens, 3, slice.n_heads, head_dim}).permute({2, 0, 3, 1, 4});
  const torch::Tensor q = qkv_heads[0], k = qkv_heads[1], v = qkv_heads[2];
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  torch::Tensor logits = torch::matmul(q, k.transpose(-2, -1)) * scale;
  // ToMe's proportional attention (Bolya et al. 2023, eq. 1): softmax(QK^T/sqrt(d) + log s).
  if (log_size.defined()) logits = logits + log_size.reshape({batch, 1, 1, tokens});
  pieces.probs = torch::softmax(logits, -1);
  if (want_keys) pieces.keys = k;
  const torch::Tensor context = torch::matmul(pieces.probs, v)
                                    .transpose(1, 2)
                                    .reshape({batch, tokens, slice.n_heads * head_dim});
  if (slice.all) return attn->proj(context);
  const torch::Tensor proj_weight =
      live ? attn->proj->weight.index_select(1, slice.columns) : slice.proj_weight;
  return torch::linear(context, proj_weight, attn->proj->bias);
}

ReducedOutput ReducedVit::forward(const torch::Tensor& images, TokenReducer* reducer) {
  ReducedOutput out;
  TokenState& state = out.tokens;
  state.x = vit_->patch_embed()->forward(images);
  const int64_t batch = state.x.size(0);
  state.index = torch::arange(state.x.size(1), torch::kLong).unsqueeze(0).expand({batch, -1});
  if (reducer != nullptr) reducer->start(state);
  const bool proportional = reducer != nullptr && reducer->proportional_attention();
  const bool want_keys = reducer != nullptr && reducer->needs_keys();
  auto& blocks = vit_->blocks();
  for (int64_t l = 0; l < static_cast<int64_t>(blocks.size()); ++l) {
    auto& block = blocks[l];
    out.trace.attention_tokens.push_back(state.tokens());
    out.trace.heads.push_back(slices_[l].n_heads);
    AttentionPieces pieces;
    const torch::Tensor log_size =
        proportional && state.size.defined() ? state.size.log() : torch::Tensor();
    state.x = state.x + attention(l, block->norm1(state.x), log_size, want_keys, pieces);
    if (reducer != nullptr) reducer->reduce(l, state, pieces);
    out.trace.mlp_tokens.push_back(state.tokens());
    state.x = state.x + block->fc2(torch::gelu(block->fc1(block->norm2(state.x))));
  }
  out.logits = vit_->head()->forward(state.x);
  return out;
}

}  // namespace tessera::vit_prune
