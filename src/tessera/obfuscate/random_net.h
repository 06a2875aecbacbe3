// The seeded random-CNN generator whose traces train the attackers (research/hw_security.md
// 4.3, after trace_gen/func_gen_cifar.py, adapted to a CPU budget and to our op set).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "tessera/obfuscate/net.h"

namespace tessera::obfuscate {

struct RandomNetOptions {
  std::vector<int64_t> input_shape = {1, 28, 28};  ///< Fashion-MNIST size
  int64_t num_classes = 10;
  int64_t min_conv_units = 4, max_conv_units = 11;  ///< section 4.3: 4-11
  /// Conv channels 2^U[min, max]; section 4.3 uses [4, 9]; 8 keeps a trace under ~50 ms here.
  int64_t min_log2_channels = 4, max_log2_channels = 8;
  double p_stride2 = 0.2;      ///< a plain conv downsamples (at most max_downsample times)
  int64_t max_downsample = 3;  ///< 28 -> 14 -> 7 -> 4 (convs and pools together)
  double p_pool = 0.5;         ///< a max-pool after a plain conv
  /// Middle units: residual block and branched (split-OC, concatenated) conv with these
  /// probabilities (section 4.3: residual 1/6, depthwise 1/6; we have no depthwise op), else
  /// plain.
  double p_residual = 1.0 / 6.0, p_branch = 1.0 / 6.0;
  double p_kernel1 = 0.1;          ///< a plain conv is 1x1 instead of 3x3
  double p_bn = 0.8;               ///< a conv has BN
  double p_unfused = 0.25;         ///< a conv runs unfused (conv, BN, ReLU as separate kernels)
  double p_gap = 0.5;              ///< global average pool before the classifier, else flatten
  int64_t min_fc = 1, max_fc = 3;  ///< FC layers (the last -> num_classes)
  int64_t min_log2_features = 4, max_log2_features = 8;  ///< hidden FC widths 2^U[4, 8]

  void validate() const;
  nlohmann::json to_json() const;
};

/// A random network (structure and weights from `seed`).
Net random_net(const RandomNetOptions& options, uint64_t seed);

}  // namespace tessera::obfuscate
