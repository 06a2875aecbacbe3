// The small Vision Transformer (see vit.h).
#include "tessera/models/vit.h"

#include <fmt/format.h>

#include <cmath>

#include "tessera/core/error.h"

namespace tessera::models {

using workload::Layer;
using workload::OpKind;

VitOptions VitOptions::from_config(const ModelConfig& config) {
  const ExtraOptions extra(config, {"patch_size", "dim", "depth", "heads", "mlp_ratio"});
  VitOptions options;
  options.patch_size = extra.get_int("patch_size", options.patch_size);
  options.dim = extra.get_int("dim", options.dim);
  options.depth = extra.get_int("depth", options.depth);
  options.heads = extra.get_int("heads", options.heads);
  options.mlp_ratio = extra.get_double("mlp_ratio", options.mlp_ratio);
  TESSERA_CHECK(options.patch_size > 0, "vit patch_size must be positive, got {}",
                options.patch_size);
  TESSERA_CHECK(config.image_size % options.patch_size == 0,
                "vit patch_size {} does not divide image_size {}", options.patch_size,
                config.image_size);
  TESSERA_CHECK(options.dim > 0 && options.dim <= 4096, "vit dim must be in [1, 4096], got {}",
                options.dim);
  TESSERA_CHECK(options.depth > 0 && options.depth <= 256, "vit depth must be in [1, 256], got {}",
                options.depth);
  TESSERA_CHECK(options.heads > 0, "vit heads must be positive, got {}", options.heads);
  TESSERA_CHECK(options.dim % options.heads == 0, "vit heads {} do not divide dim {}",
                options.heads, options.dim);
  TESSERA_CHECK(
      std::isfinite(options.mlp_ratio) && options.mlp_ratio > 0 && options.mlp_ratio <= 16,
      "vit mlp_ratio must be in (0, 16], got {}", options.mlp_ratio);
  TESSERA_CHECK(options.mlp_hidden() >= 1, "vit mlp_ratio {} gives an empty MLP for dim {}",
                options.mlp_ratio, options.dim);
  TESSERA_CHECK(config.width_mult == 1.0,
                "vit does not use width_mult (got {}); set extra \"dim\" instead",
                config.width_mult);
  return options;
}

int64_t VitOptions::mlp_hidden() const {
  return std::llround(static_cast<double>(dim) * mlp_ratio);
}

PatchEmbedImpl::PatchEmbedImpl(int64_t in_channels, int64_t image_size, int64_t patch_size,
                               int64_t dim)
    : dim_(dim) {
  TESSERA_CHECK(patch_size > 0 && image_size % patch_size == 0,
                "patch size {} does not divide image size {}", patch_size, image_size);
  const int64_t side = image_size / patch_size;
  n_patches_ = side * side;
  proj = register_module(
      "proj",
      torch::nn::Conv2d(torch::nn::Conv2dOptions(in_channels, dim, patch_size).stride(patch_size)));
  cls_token = register_parameter("cls_token", torch::randn({1, 1, dim}) * 0.02);
  pos_embed = register_parameter("pos_embed", torch::randn({1, n_patches_ + 1, dim}) * 0.02);
}

torch::Tensor PatchEmbedImpl::forward(torch::Tensor x) {
  x = proj(x).flatten(2).transpose(1, 2);  // [B, D, h, w] -> [B, N, D]
  torch::Tensor cls = cls_token.expand({x.size(0), -1, -1});
  return torch::cat({cls, x}, 1) + pos_embed;
}

SampleShape PatchEmbedImpl::describe(const std::string& prefix, const SampleShape& input,
                                     std::vector<Layer>& layers) {
  const SampleShape map = describe_module(join_name(prefix, "proj"), *proj, input, layers);
  TESSERA_CHECK(map[1] * map[2] == n_patches_,
                "patch embedding '{}' built for {} patches got input {}", prefix, n_patches_,
                shape_string(input));
  const SampleShape tokens = {n_patches_ + 1, dim_};
  layers.push_back(elementwise_layer(join_name(prefix, "pos_add"), OpKind::Add, tokens));
  return tokens;
}

AttentionImpl::AttentionImpl(int64_t dim, int64_t heads) : dim_(dim), heads_(heads) {
  TESSERA_CHECK(dim > 0 && heads > 0 && dim % heads == 0, "attention heads {} must divide dim {}",
                heads, dim);
  qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
  proj = register_module("proj", torch::nn::Linear(dim, dim));
}

torch::Tensor AttentionImpl::forward(torch::Tensor x) { return forward_with_probs(x).first; }

std::pair<torch::Tensor, torch::Tensor> AttentionImpl::forward_with_probs(
    torch::Tensor x, const torch::Tensor& head_mask) {
  TESSERA_CHECK(x.dim() == 3 && x.size(2) == dim_, "attention expects [B, T, {}], got {}", dim_,
                shape_string(x.sizes().vec()));
  const int64_t batch = x.size(0), tokens = x.size(1);
  // [B, T, 3D] -> [3, B, H, T, D/H]
  torch::Tensor qkv_heads =
      qkv(x).reshape({batch, tokens, 3, heads_, head_dim()}).permute({2, 0, 3, 1, 4});
  torch::Tensor q = qkv_heads[0], k = qkv_heads[1], v = qkv_heads[2];
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim()));
  torch::Tensor probs = torch::softmax(torch::matmul(q, k.transpose(-2, -1)) * scale, -1);
  torch::Tensor context = torch::matmul(probs, v);  // [B, H, T, D/H]
  if (head_mask.defined()) {
    TESSERA_CHECK(
        (head_mask.dim() == 1 && head_mask.size(0) == heads_) ||
            (head_mask.dim() == 2 && head_mask.size(0) == batch && head_mask.size(1) == heads_),
        "head_mask must be [{}] or [{}, {}], got {}", heads_, batch, heads_,
        shape_string(head_mask.sizes().vec()));
    context = context * head_mask.to(context.dtype()).reshape({-1, heads_, 1, 1});
  }
  context = context.transpose(1, 2).reshape({batch, tokens, dim_});
  return {proj(context), probs};
}

SampleShape AttentionImpl::describe(const std::string& prefix, const SampleShape& input,
                                    std::vector<Layer>& layers) {
  TESSERA_CHECK(input.size() == 2 && input[1] == dim_, "attention '{}' expects [T, {}], got {}",
                prefix, dim_, shape_string(input));
  const int64_t tokens = input[0];
  describe_module(join_name(prefix, "qkv"), *qkv, input, layers);
  Layer scores;  // per head: [T, D/H] x [D/H, T]
  scores.name = join_name(prefix, "scores");
  scores.kind = OpKind::MatMul;
  scores.in_channels = head_dim();
  scores.out_channels = tokens;
  scores.groups = heads_;
  scores.in_h = scores.out_h = tokens;
  layers.push_back(scores);
  layers.push_back(elementwise_layer(join_name(prefix, "softmax"), OpKind::Activation,
                                     {heads_ * tokens, tokens}));
  Layer context = scores;  // per head: [T, T] x [T, D/H]
  context.name = join_name(prefix, "context");
  context.in_channels = tokens;
  context.out_channels = head_dim();
  layers.push_back(context);
  return describe_module(join_name(prefix, "proj"), *proj, input, layers);
}

EncoderBlockImpl::EncoderBlockImpl(int64_t dim, int64_t heads, int64_t mlp_hidden) {
  norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  attn = register_module("attn", Attention(dim, heads));
  norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  fc1 = register_module("fc1", torch::nn::Linear(dim, mlp_hidden));
  fc2 = register_module("fc2", torch::nn::Linear(mlp_hidden, dim));
}

torch::Tensor EncoderBlockImpl::forward(torch::Tensor x) { return forward_with_probs(x).first; }

std::pair<torch::Tensor, torch::Tensor> EncoderBlockImpl::forward_with_probs(
    torch::Tensor x, const torch::Tensor& head_mask) {
  auto [attended, probs] = attn->forward_with_probs(norm1(x), head_mask);
  x = x + attended;
  x = x + fc2(torch::gelu(fc1(norm2(x))));
  return {x, probs};
}

SampleShape EncoderBlockImpl::describe(const std::string& prefix, const SampleShape& input,
                                       std::vector<Layer>& layers) {
  SampleShape shape = describe_module(join_name(prefix, "norm1"), *norm1, input, layers);
  shape = describe_module(join_name(prefix, "attn"), *attn, shape, layers);
  layers.push_back(elementwise_layer(join_name(prefix, "add1"), OpKind::Add, shape));
  shape = describe_module(join_name(prefix, "norm2"), *norm2, shape, layers);
  shape = describe_module(join_name(prefix, "fc1"), *fc1, shape, layers);
  layers.push_back(elementwise_layer(join_name(prefix, "gelu"), OpKind::Activation, shape));
  shape = describe_module(join_name(prefix, "fc2"), *fc2, shape, layers);
  layers.push_back(elementwise_layer(join_name(prefix, "add2"), OpKind::Add, shape));
  return shape;
}

VitHeadImpl::VitHeadImpl(int64_t dim, int64_t num_classes) {
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  fc = register_module("fc", torch::nn::Linear(dim, num_classes));
}

torch::Tensor VitHeadImpl::forward(torch::Tensor x) {
  return fc(norm(x.select(1, 0)));  // class token [B, D]
}

SampleShape VitHeadImpl::describe(const std::string& prefix, const SampleShape& input,
                                  std::vector<Layer>& layers) {
  TESSERA_CHECK(input.size() == 2, "ViT head '{}' expects [T, D] tokens, got {}", prefix,
                shape_string(input));
  SampleShape shape = describe_module(join_name(prefix, "norm"), *norm, {input[1]}, layers);
  return describe_module(join_name(prefix, "fc"), *fc, shape, layers);
}

VitImpl::VitImpl(ModelConfig config)
    : ModelImpl(std::move(config)), options_(VitOptions::from_config(this->config())) {
  const ModelConfig& cfg = this->config();
  patch_embed_ = PatchEmbed(cfg.in_channels, cfg.image_size, options_.patch_size, options_.dim);
  add_unit("patch_embed", "patch_embed", patch_embed_);
  for (int64_t i = 0; i < options_.depth; ++i) {
    blocks_.push_back(EncoderBlock(options_.dim, options_.heads, options_.mlp_hidden()));
    add_unit(fmt::format("encoder{}", i + 1), "encoder", blocks_.back());
  }
  head_ = VitHead(options_.dim, cfg.num_classes);
  add_unit("head", "head", head_);
}

}  // namespace tessera::models
