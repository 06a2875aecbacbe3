// Per-layer CRC32 baseline (zlib's crc32).
#include "tessera/bitflip/crc_guard.h"

#include <zlib.h>

#include "tessera/core/error.h"

namespace tessera::bitflip {

uint32_t layer_crc32(const quant::QuantizedTensor& weights) {
  TESSERA_CHECK(weights.values.defined() && weights.values.scalar_type() == torch::kInt32 &&
                    weights.values.is_contiguous(),
                "layer '{}' must hold contiguous int32 values", weights.name);
  const int n_bytes = (weights.bits + 7) / 8;
  const uint32_t mask = (uint32_t{1} << weights.bits) - 1;
  const int32_t* values = weights.values.data_ptr<int32_t>();
  std::vector<unsigned char> bytes(static_cast<size_t>(weights.numel() * n_bytes));
  for (int64_t i = 0; i < weights.numel(); ++i) {
    const uint32_t code = static_cast<uint32_t>(values[i]) & mask;
    for (int b = 0; b < n_bytes; ++b)
      bytes[static_cast<size_t>(i * n_bytes + b)] =
          static_cast<unsigned char>((code >> (8 * b)) & 0xff);
  }
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed large layers in chunks.
  size_t offset = 0;
  while (offset < bytes.size()) {
    const size_t chunk = std::min<size_t>(bytes.size() - offset, size_t{1} << 30);
    crc = crc32(crc, bytes.data() + offset, static_cast<uInt>(chunk));
    offset += chunk;
  }
  return static_cast<uint32_t>(crc);
}

CrcSignatures crc_sign(const std::vector<quant::QuantizedTensor>& weights) {
  CrcSignatures s;
  for (const auto& w : weights) {
    s.names.push_back(w.name);
    s.crcs.push_back(layer_crc32(w));
  }
  return s;
}

std::vector<size_t> crc_check(const std::vector<quant::QuantizedTensor>& weights,
                              const CrcSignatures& golden) {
  TESSERA_CHECK(weights.size() == golden.crcs.size() && golden.names.size() == golden.crcs.size(),
                "CRC signatures cover {} layers but the model has {}", golden.crcs.size(),
                weights.size());
  std::vector<size_t> bad;
  for (size_t l = 0; l < weights.size(); ++l) {
    TESSERA_CHECK(weights[l].name == golden.names[l], "CRC layer {} is '{}' but the model has '{}'",
                  l, golden.names[l], weights[l].name);
    if (layer_crc32(weights[l]) != golden.crcs[l]) bad.push_back(l);
  }
  return bad;
}

int64_t crc_recover_zero(std::vector<quant::QuantizedTensor>& weights,
                         const std::vector<size_t>& layers) {
  int64_t n = 0;
  for (size_t l : layers) {
    TESSERA_CHECK(l < weights.size(), "layer {} out of range ({} layers)", l, weights.size());
    weights[l].values.zero_();
    n += weights[l].numel();
  }
  return n;
}

int64_t crc_recover_reload(std::vector<quant::QuantizedTensor>& weights,
                           const std::vector<quant::QuantizedTensor>& clean,
                           const std::vector<size_t>& layers) {
  TESSERA_CHECK(clean.size() == weights.size(), "clean copy has {} layers, the model {}",
                clean.size(), weights.size());
  int64_t n = 0;
  for (size_t l : layers) {
    TESSERA_CHECK(l < weights.size(), "layer {} out of range ({} layers)", l, weights.size());
    TESSERA_CHECK(
        clean[l].name == weights[l].name && clean[l].values.sizes() == weights[l].values.sizes(),
        "clean copy layer {} is '{}', the model's is '{}'", l, clean[l].name, weights[l].name);
    weights[l].values.copy_(clean[l].values);
    n += weights[l].numel();
  }
  return n;
}

}  // namespace tessera::bitflip
