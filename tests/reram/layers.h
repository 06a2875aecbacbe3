// Small workload layers the reram tests map by hand: a linear layer and a 3x3 depthwise conv.
#pragma once

#include <cstdint>

#include "tessera/core/workload.h"

namespace tessera::reram::testing_layers {

inline workload::Layer linear(int64_t in, int64_t out) {
  workload::Layer l;
  l.name = "fc";
  l.kind = workload::OpKind::Linear;
  l.in_channels = in;
  l.out_channels = out;
  return l;
}

/// 3x3, padding 1, on a `size` x `size` feature map.
inline workload::Layer depthwise(int64_t channels, int64_t size = 8) {
  workload::Layer l;
  l.name = "dw";
  l.kind = workload::OpKind::Conv2d;
  l.in_channels = l.out_channels = l.groups = channels;
  l.kernel_h = l.kernel_w = 3;
  l.padding = 1;
  l.in_h = l.in_w = l.out_h = l.out_w = size;
  return l;
}

}  // namespace tessera::reram::testing_layers
