// SME's bit-sparsity-oriented quantization (research/hw_security.md 2.2, RECONSTRUCTED): each
// weight magnitude keeps at most `max_terms` non-zero power-of-two terms, drawn from a few bit
// positions chosen per layer or per crossbar row, so that most bit-planes become empty or sparse.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/quant.h"

namespace tessera::reram {

/// Where the allowed bit positions are chosen.
enum class PositionScope {
  Layer,  ///< one set of positions for the whole weight tensor
  Row,    ///< one set per crossbar row (per input index: c_in, kh, kw), shared by all outputs
};

/// "layer" or "row".
std::string position_scope_name(PositionScope scope);
/// Throws tessera::Error listing the valid names unless `name` is "layer" or "row".
PositionScope parse_position_scope(const std::string& name);

struct BitSparseOptions {
  int max_terms = 2;    ///< t: non-zero magnitude bits kept per weight, >= 1
  int n_positions = 3;  ///< K: allowed bit positions per scope (0 = all magnitude bits)
  PositionScope scope = PositionScope::Row;

  /// Throws tessera::Error for t < 1 or K < 0.
  void validate(int magnitude_bits) const;
  std::string describe() const;
};

/// Values with at most `max_terms` set bits, all inside `allowed_mask`, below 2^magnitude_bits.
/// Returns for every level v in [0, 2^magnitude_bits) the nearest such value (ties go to the
/// smaller one): the projection table used by the quantizer.
std::vector<int32_t> projection_table(int magnitude_bits, uint32_t allowed_mask, int max_terms);

/// Projects the magnitudes of an already uniformly quantized tensor (core/quant, sign-magnitude
/// view, |value| <= 2^(bits-1)-1) onto bit-sparse values. The step is unchanged, so dequantize()
/// gives the bit-sparse float weights. A bit-sparse tensor is a fixed point: quantizing it again
/// returns it unchanged. Layout: dim 0 is the output channel, dims 1.. flattened are the rows
/// (c_in/groups * kh * kw). For Row scope a crossbar row is (group, row): the outputs of one
/// group share it, so `groups` (the convolution's groups; C_out must divide by it) matters.
quant::QuantizedTensor bit_sparse_quantize(const quant::QuantizedTensor& uniform,
                                           const BitSparseOptions& options, int64_t groups = 1);

/// Float weight -> uniform n-bit (core/quant) -> bit-sparse projection.
quant::QuantizedTensor bit_sparse_quantize(const std::string& name, const torch::Tensor& weight,
                                           int bits, const BitSparseOptions& options,
                                           int64_t groups = 1);

/// Fraction of zero bits among the magnitude bits of all weights (sign-magnitude view): the
/// bit sparsity SME raises.
double magnitude_bit_sparsity(const quant::QuantizedTensor& tensor);

}  // namespace tessera::reram
