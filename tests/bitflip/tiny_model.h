// A tiny two-layer MLP built as a Tessera model (units fc1, relu, fc2) for fast bit-flip tests.
#pragma once

#include <torch/torch.h>

#include "tessera/models/model.h"

namespace tessera::bitflip::testing {

/// x: [B, 1, 4, 4] float32 -> logits [B, 4]. 16*8 + 8*4 = 160 quantizable weights.
class TinyNetImpl : public models::ModelImpl {
 public:
  TinyNetImpl() : models::ModelImpl(make_config()) {
    add_unit("flatten", "flatten", torch::nn::Flatten());
    add_unit("fc1", "fc", torch::nn::Linear(16, 8));
    add_unit("relu", "fc", torch::nn::ReLU());
    add_unit("fc2", "fc", torch::nn::Linear(8, 4));
  }

 private:
  static models::ModelConfig make_config() {
    models::ModelConfig c;
    c.name = "tiny";
    c.in_channels = 1;
    c.image_size = 4;
    c.num_classes = 4;
    return c;
  }
};

/// Two bias-free linear layers on the two halves of the input, summed: x [B, 1, 4, 4] -> [B, 2].
/// With two classes and one sample the loss is a strictly increasing function of one scalar
/// (the logit margin), which every single weight shifts linearly: the first-order ranking of PBFA
/// is then exact, so PBFA must agree with an exhaustive search.
class LinearPairImpl : public torch::nn::Module {
 public:
  LinearPairImpl() {
    left = register_module("left", torch::nn::Linear(torch::nn::LinearOptions(8, 2).bias(false)));
    right = register_module("right", torch::nn::Linear(torch::nn::LinearOptions(8, 2).bias(false)));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = x.flatten(1);
    return left(x.slice(1, 0, 8)) + right(x.slice(1, 8, 16));
  }
  torch::nn::Linear left{nullptr}, right{nullptr};
};
TORCH_MODULE(LinearPair);

class LinearPairNetImpl : public models::ModelImpl {
 public:
  LinearPairNetImpl() : models::ModelImpl(make_config()) { add_unit("pair", "fc", LinearPair()); }

 private:
  static models::ModelConfig make_config() {
    models::ModelConfig c;
    c.name = "linear_pair";
    c.in_channels = 1;
    c.image_size = 4;
    c.num_classes = 2;
    return c;
  }
};

inline models::Model make_linear_pair_net() {
  return models::Model(std::shared_ptr<models::ModelImpl>(std::make_shared<LinearPairNetImpl>()));
}

inline models::Model make_tiny_net() {
  return models::Model(std::shared_ptr<models::ModelImpl>(std::make_shared<TinyNetImpl>()));
}

}  // namespace tessera::bitflip::testing
