// CP-ViT cascade pruning (see cascade.h): patch and head scores, the layer-aware schedule, the
// gathered pruner and its masked reference.
#include "tessera/vit_prune/cascade.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "tessera/core/error.h"

namespace tessera::vit_prune {
namespace {

constexpr int64_t kCalibrationChunk = 256;
constexpr double kMinRangeWeight = 0.25, kMaxRangeWeight = 4.0;

/// Euclidean distance between the grid cells of patches i and j: [N, N] for N = side^2 patches.
torch::Tensor grid_distances(int64_t patches) {
  const auto side = static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(patches))));
  TESSERA_CHECK(side * side == patches, "vit_prune: {} patches are not a square grid", patches);
  const auto pos = torch::arange(patches, torch::kFloat);
  const auto row = torch::floor(pos / static_cast<double>(side)), col = pos - row * side;
  const auto dr = row.unsqueeze(1) - row.unsqueeze(0), dc = col.unsqueeze(1) - col.unsqueeze(0);
  return torch::sqrt(dr * dr + dc * dc);
}

/// Per block, what the calibration sums over the images (the unpruned model, no reduction).
class CalibrationRecorder : public TokenReducer {
 public:
  CalibrationRecorder(int64_t depth, int64_t heads, int64_t patches, const CascadeOptions& options)
      : options_(options),
        distances_(grid_distances(patches)),
        range_sum_(depth, 0.0),
        head_sum_(depth, std::vector<double>(heads, 0.0)) {}

  void start(TokenState& state) override {
    state.score = torch::zeros({state.x.size(0), state.tokens()});
  }
  void reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) override {
    const torch::Tensor& probs = attention.probs;  // [B, H, T, T]
    accumulate_patch_score(state.score, probs, options_.patch_score);
    // Attention range: expected grid distance from a patch query to the patch keys it attends.
    const auto patch_probs = probs.slice(2, 1).slice(3, 1);  // [B, H, N, N]
    const auto mass = patch_probs.sum(-1).clamp_min(1e-12);
    range_sum_[layer] += ((patch_probs * distances_).sum(-1) / mass).mean().item<double>() *
                         static_cast<double>(probs.size(0));
    torch::Tensor per_head;  // [H]: summed over the batch
    if (options_.head_score == HeadScore::peak) {
      per_head = probs.amax(-1).mean(-1).sum(0);
    } else {
      auto weights = state.score.slice(1, 1);  // patches only: CLS carries no patch information
      weights = weights / weights.sum(1, true).clamp_min(1e-12);
      per_head = (probs.slice(3, 1) * weights.reshape({weights.size(0), 1, 1, -1}))
                     .sum(-1)
                     .mean(-1)
                     .sum(0);
    }
    const auto values = per_head.to(torch::kDouble).contiguous();
    for (int64_t h = 0; h < values.size(0); ++h) head_sum_[layer][h] += values[h].item<double>();
    images_ += layer == 0 ? probs.size(0) : 0;
  }

  CascadeOptions options_;
  torch::Tensor distances_;
  std::vector<double> range_sum_;
  std::vector<std::vector<double>> head_sum_;
  int64_t images_ = 0;
};

std::vector<int64_t> top_heads(const std::vector<double>& scores, int64_t n_keep) {
  std::vector<int64_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return scores[a] > scores[b]; });
  order.resize(n_keep);
  std::sort(order.begin(), order.end());
  return order;
}

}  // namespace

PatchScore parse_patch_score(const std::string& name) {
  if (name == "column-max") return PatchScore::column_max;
  if (name == "cls-row") return PatchScore::cls_row;
  if (name == "column-mean") return PatchScore::column_mean;
  throw Error(fmt::format("unknown patch score '{}' (column-max, cls-row, column-mean)", name));
}

std::string patch_score_name(PatchScore score) {
  switch (score) {
    case PatchScore::column_max:
      return "column-max";
    case PatchScore::cls_row:
      return "cls-row";
    case PatchScore::column_mean:
      return "column-mean";
  }
  return "?";
}

HeadScore parse_head_score(const std::string& name) {
  if (name == "score-weighted") return HeadScore::score_weighted;
  if (name == "peak") return HeadScore::peak;
  throw Error(fmt::format("unknown head score '{}' (score-weighted, peak)", name));
}

std::string head_score_name(HeadScore score) {
  return score == HeadScore::peak ? "peak" : "score-weighted";
}

void CascadeOptions::validate() const {
  TESSERA_CHECK(std::isfinite(keep_ratio) && keep_ratio > 0 && keep_ratio <= 1,
                "cascade keep_ratio must be in (0, 1], got {}", keep_ratio);
  TESSERA_CHECK(std::isfinite(head_keep_ratio) && head_keep_ratio > 0 && head_keep_ratio <= 1,
                "cascade head_keep_ratio must be in (0, 1], got {}", head_keep_ratio);
  TESSERA_CHECK(std::isfinite(ramp_fraction) && ramp_fraction > 0 && ramp_fraction <= 1,
                "cascade ramp_fraction must be in (0, 1], got {}", ramp_fraction);
}

void CascadeOptions::validate_for(int64_t heads) const {
  validate();
  const int64_t kept = std::llround(head_keep_ratio * static_cast<double>(heads));
  TESSERA_CHECK(kept >= 1,
                "cascade head_keep_ratio {} keeps {} of {} heads: every head would be removed",
                head_keep_ratio, kept, heads);
}

nlohmann::json CascadeOptions::to_json() const {
  return {{"keep_ratio", keep_ratio},
          {"ramp_fraction", ramp_fraction},
          {"layer_aware", layer_aware},
          {"head_keep_ratio", head_keep_ratio},
          {"patch_score", patch_score_name(patch_score)},
          {"head_score", head_score_name(head_score)}};
}

nlohmann::json CascadeSchedule::to_json() const {
  return {{"kept_patches", kept_patches},
          {"kept_heads", kept_heads},
          {"attention_range", attention_range},
          {"range_weight", range_weight},
          {"head_scores", head_scores}};
}

std::vector<int64_t> cascade_kept_patches(int64_t patches, int64_t depth,
                                          const CascadeOptions& options,
                                          const std::vector<double>& weights) {
  options.validate();
  TESSERA_CHECK(patches >= 1 && depth >= 1, "cascade: {} patches, depth {}", patches, depth);
  TESSERA_CHECK(weights.empty() || static_cast<int64_t>(weights.size()) == depth,
                "cascade: {} range weights for depth {}", weights.size(), depth);
  const int64_t ramp = std::clamp<int64_t>(
      static_cast<int64_t>(std::ceil(options.ramp_fraction * static_cast<double>(depth) - 1e-9)), 1,
      depth);
  auto weight = [&](int64_t l) { return weights.empty() ? 1.0 : weights[l]; };
  double total = 0.0;
  for (int64_t l = 0; l < ramp; ++l) total += weight(l);
  const double pruned = (1.0 - options.keep_ratio) * static_cast<double>(patches);
  std::vector<int64_t> kept;
  double cumulative = 0.0;
  for (int64_t l = 0; l < depth; ++l) {
    if (l < ramp) cumulative += weight(l) / total;
    const double share = l < ramp - 1 ? cumulative : 1.0;
    kept.push_back(
        std::max<int64_t>(1, std::llround(static_cast<double>(patches) - share * pruned)));
  }
  return kept;
}

void accumulate_patch_score(torch::Tensor& score, const torch::Tensor& probs, PatchScore kind) {
  switch (kind) {
    case PatchScore::column_max:
      score = score + probs.amax(2).sum(1);
      return;
    case PatchScore::cls_row:
      score = score + probs.select(2, 0).sum(1);
      return;
    case PatchScore::column_mean:
      score = score + probs.mean(2).sum(1);
      return;
  }
}

CascadeSchedule calibrate_cascade(models::Model& model, const torch::Tensor& images,
                                  const CascadeOptions& options) {
  models::VitImpl& vit = as_vit(model);
  const auto& vo = vit.options();
  options.validate_for(vo.heads);
  TESSERA_CHECK(images.dim() == 4 && images.size(0) >= 1,
                "calibrate_cascade: images must be [N, C, S, S] with N >= 1");
  const int64_t patches = vit.patch_embed()->n_tokens() - 1;
  CalibrationRecorder recorder(vo.depth, vo.heads, patches, options);
  ReducedVit engine(model);
  {
    torch::NoGradGuard no_grad;
    const bool was_training = model->is_training();
    model->eval();
    for (int64_t begin = 0; begin < images.size(0); begin += kCalibrationChunk)
      engine.forward(images.slice(0, begin, begin + kCalibrationChunk), &recorder);
    model->train(was_training);
  }
  CascadeSchedule schedule;
  const double uniform_range = grid_distances(patches).mean().item<double>();
  const int64_t n_heads = std::llround(options.head_keep_ratio * static_cast<double>(vo.heads));
  for (int64_t l = 0; l < vo.depth; ++l) {
    const double range = recorder.range_sum_[l] / static_cast<double>(recorder.images_);
    schedule.attention_range.push_back(range);
    schedule.range_weight.push_back(
        options.layer_aware && uniform_range > 0
            ? std::clamp(range / uniform_range, kMinRangeWeight, kMaxRangeWeight)
            : 1.0);
    schedule.head_scores.push_back(recorder.head_sum_[l]);
    schedule.kept_heads.push_back(top_heads(recorder.head_sum_[l], n_heads));
  }
  schedule.kept_patches = cascade_kept_patches(patches, vo.depth, options, schedule.range_weight);
  return schedule;
}

CascadePruner::CascadePruner(CascadeSchedule schedule, PatchScore score)
    : schedule_(std::move(schedule)), score_(score) {
  const auto& kept = schedule_.kept_patches;
  for (size_t l = 1; l < kept.size(); ++l) {
    TESSERA_CHECK(kept[l] <= kept[l - 1],
                  "cascade schedule must not grow: block {} keeps {} after {}", l, kept[l],
                  kept[l - 1]);
    if (kept[l] < kept[l - 1]) last_reduction_ = static_cast<int64_t>(l);
  }
}

void CascadePruner::start(TokenState& state) {
  state.score = torch::zeros({state.x.size(0), state.tokens()}, state.x.options());
}

void CascadePruner::reduce(int64_t layer, TokenState& state, const AttentionPieces& attention) {
  TESSERA_CHECK(layer < static_cast<int64_t>(schedule_.kept_patches.size()),
                "cascade schedule has no block {}", layer);
  if (layer > last_reduction_) return;
  accumulate_patch_score(state.score, attention.probs.detach(), score_);
  const int64_t keep = schedule_.kept_patches[layer];
  if (keep >= state.tokens() - 1) return;
  // CLS (position 0) always stays; the top-k patches keep their original order.
  const auto top = std::get<1>(state.score.slice(1, 1).topk(keep, 1)) + 1;
  const auto kept = std::get<0>(top.sort(1));
  gather_tokens(state, torch::cat({torch::zeros({kept.size(0), 1}, torch::kLong), kept}, 1));
}

CascadeVit::CascadeVit(models::Model model, CascadeSchedule schedule, PatchScore score)
    : engine_(std::move(model), schedule.kept_heads), pruner_(std::move(schedule), score) {}

MaskedOutput cascade_forward_masked(models::Model& model, const torch::Tensor& images,
                                    const CascadeSchedule& schedule, PatchScore score_kind) {
  models::VitImpl& vit = as_vit(model);
  const auto& vo = vit.options();
  TESSERA_CHECK(static_cast<int64_t>(schedule.kept_patches.size()) == vo.depth &&
                    static_cast<int64_t>(schedule.kept_heads.size()) == vo.depth,
                "masked cascade: the schedule is for another depth");
  torch::Tensor x = vit.patch_embed()->forward(images);
  const int64_t batch = x.size(0), tokens = x.size(1), head_dim = vo.dim / vo.heads;
  torch::Tensor keep = torch::ones({batch, tokens}, torch::kBool);
  torch::Tensor score = torch::zeros({batch, tokens});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  for (int64_t l = 0; l < vo.depth; ++l) {
    auto& block = vit.blocks()[l];
    const auto heads = torch::tensor(schedule.kept_heads[l], torch::kLong);
    const auto head_mask = torch::zeros({vo.heads}).index_fill(0, heads, 1.0);
    const auto qkv = block->attn->qkv(block->norm1(x))
                         .reshape({batch, tokens, 3, vo.heads, head_dim})
                         .permute({2, 0, 3, 1, 4});
    auto logits = torch::matmul(qkv[0], qkv[1].transpose(-2, -1)) * scale;
    logits = logits.masked_fill(keep.logical_not().reshape({batch, 1, 1, tokens}),
                                -std::numeric_limits<float>::infinity());
    const auto probs = torch::softmax(logits, -1);
    const auto context = (torch::matmul(probs, qkv[2]) * head_mask.reshape({1, -1, 1, 1}))
                             .transpose(1, 2)
                             .reshape({batch, tokens, vo.dim});
    const auto rows = keep.unsqueeze(-1);
    x = torch::where(rows, x + block->attn->proj(context), x);
    // The score over the kept heads and the kept queries only.
    const auto query_mask = keep.to(torch::kFloat).reshape({batch, 1, tokens, 1});
    const auto kept_probs = (probs * query_mask).index_select(1, heads);
    if (score_kind == PatchScore::column_max) {
      score = score + kept_probs.amax(2).sum(1);
    } else if (score_kind == PatchScore::cls_row) {
      score = score + kept_probs.select(2, 0).sum(1);
    } else {
      const auto n_kept = keep.sum(1, true).to(torch::kFloat);  // [B, 1]
      score = score + kept_probs.sum(2).sum(1) / n_kept;
    }
    const int64_t kept_now = keep.slice(1, 1).sum(1).max().item<int64_t>();
    if (schedule.kept_patches[l] < kept_now) {
      const auto patch_score = score.slice(1, 1).masked_fill(
          keep.slice(1, 1).logical_not(), -std::numeric_limits<float>::infinity());
      const auto top = std::get<1>(patch_score.topk(schedule.kept_patches[l], 1)) + 1;
      keep = torch::zeros({batch, tokens}, torch::kBool).scatter(1, top, true);
      keep.select(1, 0).fill_(true);
    }
    x = torch::where(keep.unsqueeze(-1), x + block->fc2(torch::gelu(block->fc1(block->norm2(x)))),
                     x);
  }
  return {vit.head()->forward(x), x, keep};
}

}  // namespace tessera::vit_prune
