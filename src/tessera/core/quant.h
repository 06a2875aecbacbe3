// Per-layer symmetric n-bit fixed-point quantization with two's-complement bit access.
// Used by the bit-flip attack and RADAR (bitflip/), ReRAM bit slicing (reram/) and FPGA mixed
// precision (fpga/). Follows the BFA reference (research/hw_security.md 3.1):
//   step = max|W| / (2^(n-1) - 1);  q = round(clamp(W / step, -(2^(n-1)-1), 2^(n-1)-1)).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::quant {

/// One quantized weight tensor. `values` is a contiguous int32 tensor holding the n-bit signed
/// integers (range [-(2^(n-1)), 2^(n-1)-1] after bit flips; quantization itself never produces
/// -2^(n-1)). The dequantized weight is values * step.
struct QuantizedTensor {
  std::string name;      ///< parameter name in the model ("features.0.conv.weight")
  torch::Tensor values;  ///< int32, same shape as the float weight
  double step = 1.0;     ///< scale: float weight = value * step
  int bits = 8;          ///< n, 2..16

  int64_t numel() const { return values.numel(); }
  /// Bit `bit` (0 = LSB, n-1 = sign bit) of element `index` (flat) in n-bit two's complement.
  int get_bit(int64_t index, int bit) const;
  /// Flips one bit of one element in place (the in-memory fault model of PBFA).
  void flip_bit(int64_t index, int bit);
  /// values * step as float32, in the original shape.
  torch::Tensor dequantize() const;
};

/// Throws tessera::Error unless 2 <= bits <= 16.
QuantizedTensor quantize(const std::string& name, const torch::Tensor& weight, int bits = 8);

/// n-bit two's-complement code (0 .. 2^n - 1) of a signed value, and back.
uint32_t to_twos_complement(int32_t value, int bits);
int32_t from_twos_complement(uint32_t code, int bits);

/// All conv and linear weights of a model (every parameter named "*weight" with dim >= 2),
/// quantized per layer, in named_parameters() order. Biases and BatchNorm stay float.
std::vector<QuantizedTensor> quantize_module(torch::nn::Module& module, int bits = 8);

/// Copies the dequantized values back into the module's matching parameters (no grad).
/// Throws tessera::Error if a name or shape does not match the module.
void load_into_module(const std::vector<QuantizedTensor>& weights, torch::nn::Module& module);

}  // namespace tessera::quant
