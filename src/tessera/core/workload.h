// A workload: the plain list of layer shapes and op kinds of a network. Simulators (reram/,
// fpga/) and the obfuscator's attacker read networks only through this (plus core/quant), so
// they never depend on LibTorch module classes. Workloads come from any Tessera model
// (models::Model::workload) or from a JSON file, for networks we cannot train here.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::workload {

enum class OpKind { Conv2d, Linear, MatMul, Pool, Add, Norm, Activation };

std::string to_string(OpKind kind);
/// Throws tessera::Error naming the string if it is not a known op kind.
OpKind op_kind_from_string(const std::string& name);

/// One layer. Conventions (every field is a count, not bytes):
///  - Conv2d: in_channels -> out_channels, kernel_h x kernel_w, stride, padding, groups;
///    input in_h x in_w, output out_h x out_w.
///  - Linear: in_channels = in features, out_channels = out features, kernel 1x1, groups 1;
///    out_h x out_w = number of rows it is applied to (tokens; 1x1 for a plain classifier).
///  - MatMul (activation x activation, e.g. attention QK^T): [out_h*out_w, in_channels] x
///    [in_channels, out_channels], repeated `groups` times (heads); no weights.
///  - Pool, Add, Norm, Activation: channels and sizes only; no MACs, no weights.
struct Layer {
  std::string name;
  OpKind kind = OpKind::Conv2d;
  int64_t in_channels = 0, out_channels = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride = 1, padding = 0, groups = 1;
  int64_t in_h = 1, in_w = 1, out_h = 1, out_w = 1;

  /// Multiply-accumulates of one forward pass for one input sample.
  int64_t macs() const;
  /// Number of weight parameters (0 for ops without weights). Excludes biases.
  int64_t weight_count() const;
  /// Rows of the weight matrix when unrolled for a crossbar or GEMM: in_channels/groups * kh * kw.
  int64_t weight_rows() const;
  /// Columns of the unrolled weight matrix: out_channels.
  int64_t weight_cols() const { return out_channels; }
  /// Throws tessera::Error naming the layer if a size is non-positive or inconsistent
  /// (channels not divisible by groups, output size that does not follow from the input).
  void validate() const;
};

struct Workload {
  std::string model;                 ///< e.g. "resnet50-imagenet"
  std::vector<int64_t> input_shape;  ///< [C, H, W] of one sample
  std::vector<Layer> layers;

  int64_t total_macs() const;
  int64_t total_weights() const;
  /// Layers with weights (Conv2d and Linear), in order: what a crossbar or GEMM engine maps.
  std::vector<Layer> weighted_layers() const;
  void validate() const;

  nlohmann::json to_json() const;
  /// Validates every field; unknown keys are an error (so typos are caught).
  static Workload from_json(const nlohmann::json& json);
};

/// Appends a square "same"-padded convolution (padding k/2) with input side `side` and returns
/// its output side: the building block of workloads written by hand (ImageNet ResNets, MobileNet).
int64_t append_conv(Workload& workload, const std::string& name, int64_t in_channels,
                    int64_t out_channels, int64_t kernel, int64_t stride, int64_t side,
                    int64_t groups = 1);

/// Reads and validates a workload JSON file.
Workload load(const std::string& path);
void save(const std::string& path, const Workload& workload);

}  // namespace tessera::workload
