// The baseline defense: one CRC32 per quantized layer. It detects a change anywhere in a layer
// but cannot say where, so its only recoveries are zeroing or reloading the whole layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/quant.h"

namespace tessera::bitflip {

/// CRC32 (zlib) of a layer's integers, each stored as its n-bit two's-complement code in
/// ceil(n / 8) little-endian bytes (the layer's bytes in memory).
uint32_t layer_crc32(const quant::QuantizedTensor& weights);

struct CrcSignatures {
  std::vector<std::string> names;
  std::vector<uint32_t> crcs;
  /// 32 bits per layer.
  int64_t storage_bits() const { return 32 * static_cast<int64_t>(crcs.size()); }
};

CrcSignatures crc_sign(const std::vector<quant::QuantizedTensor>& weights);
/// Indices of layers whose CRC differs. Throws tessera::Error if the layer names differ.
std::vector<size_t> crc_check(const std::vector<quant::QuantizedTensor>& weights,
                              const CrcSignatures& golden);
/// Zeroes every weight of the given layers; returns the number of weights zeroed.
int64_t crc_recover_zero(std::vector<quant::QuantizedTensor>& weights,
                         const std::vector<size_t>& layers);
/// Copies the given layers back from a clean copy (which costs a full second copy of the
/// weights in storage); returns the number of weights restored.
int64_t crc_recover_reload(std::vector<quant::QuantizedTensor>& weights,
                           const std::vector<quant::QuantizedTensor>& clean,
                           const std::vector<size_t>& layers);

}  // namespace tessera::bitflip
