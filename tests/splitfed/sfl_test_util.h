// Shared fixtures of the splitfed tests: a tiny VGG-11-BN and a small learnable data set.
#pragma once

#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/splitfed/protocol.h"

namespace tessera::splitfed::testing_util {

/// VGG-11-BN on 1x8x8 inputs, 3 classes, 1/16 width (channels 4..32), no dropout: fast and
/// deterministic in training mode.
inline models::ModelConfig tiny_vgg() {
  models::ModelConfig config;
  config.name = "vgg11_bn";
  config.in_channels = 1;
  config.image_size = 8;
  config.num_classes = 3;
  config.width_mult = 0.0625;
  config.extra = {{"dropout", 0.0}};
  return config;
}

inline SflOptions tiny_options(int64_t n_train, int64_t n_clients, Ordering ordering) {
  SflOptions o;
  o.model = tiny_vgg();
  o.split.cut = 4;
  o.n_clients = n_clients;
  o.ordering = ordering;
  o.epochs = 2;
  o.batch_size = 8;
  o.lr = 0.05;
  o.schedule = "constant";
  o.augment_pad = 0;
  o.augment_flip = false;
  o.n_train = n_train;
  o.seed = 7;
  return o;
}

}  // namespace tessera::splitfed::testing_util
