// Shared helpers of the vit_prune tests: a small ViT on 8x8 inputs (16 patches, 4 heads).
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "tessera/models/registry.h"

namespace tessera::vit_prune::testing {

/// ViT on 1 x 8 x 8 images: patch 2 (a 4 x 4 grid of 16 patches), D 16, `depth` blocks, 4 heads,
/// MLP ratio 2, 4 classes, freshly initialised (seeded by the fixture), in eval mode.
inline models::Model small_vit(int64_t depth = 3) {
  models::ModelConfig config;
  config.name = "vit";
  config.in_channels = 1;
  config.image_size = 8;
  config.num_classes = 4;
  config.extra = {
      {"patch_size", 2}, {"dim", 16}, {"depth", depth}, {"heads", 4}, {"mlp_ratio", 2.0}};
  models::Model model = models::create(config);
  model->eval();
  return model;
}

inline torch::Tensor small_images(int64_t n) { return torch::rand({n, 1, 8, 8}); }

}  // namespace tessera::vit_prune::testing
