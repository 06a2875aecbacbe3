// safetensors reading and writing (our own code; format: 8-byte little-endian header length N,
// N bytes of JSON header, then the tensor bytes). Every offset, size, dtype and shape is checked
// on load, so a truncated or hostile file fails with a clear tessera::Error, never a crash.
#pragma once

#include <torch/torch.h>

#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera::safetensors {

/// Largest JSON header accepted (the format's reference implementation uses 100 MB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

/// Tensors in file order plus the free-form string metadata (`__metadata__`).
struct File {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::map<std::string, std::string> metadata;

  /// The tensor named `name`; throws tessera::Error naming it if absent.
  const torch::Tensor& at(const std::string& name) const;
  bool contains(const std::string& name) const;
};

/// Supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL.
/// Tensors are written contiguous, little-endian, in the given order, with 8-byte-aligned header.
std::string serialize(const File& file);
/// Parses bytes; the returned tensors own their memory (copied out of `bytes`).
File parse(std::string_view bytes);

/// Atomic write (core/fs): an existing file is replaced only when the new one is complete.
void save(const std::string& path, const File& file);
File load(const std::string& path);

}  // namespace tessera::safetensors
