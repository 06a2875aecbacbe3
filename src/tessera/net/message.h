// Messages of the federated transport and the checks applied to every tensor that crosses the
// wire: dtype, shape, size and finite values. Independent of gRPC so that in-process links and
// tests use the same validation.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera::net {

/// Largest tensor accepted on decode (elements), whatever the message limit says: 2^28 floats.
constexpr int64_t kMaxTensorElements = int64_t{1} << 28;

/// One request or reply: a method name, JSON metadata (an object) and named tensors.
struct Message {
  std::string method;
  nlohmann::json meta = nlohmann::json::object();
  std::vector<std::pair<std::string, torch::Tensor>> tensors;

  /// Appends a tensor (made contiguous and detached, on CPU).
  void add(const std::string& name, const torch::Tensor& tensor);
  bool contains(const std::string& name) const;
  /// The tensor named `name`; throws tessera::Error naming it (and the method) if absent.
  const torch::Tensor& tensor(const std::string& name) const;
  /// Total payload bytes of the tensors.
  int64_t payload_bytes() const;
};

/// What an incoming tensor must look like. shape entries of -1 match any size (batch dims).
struct TensorSpec {
  torch::Dtype dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  int64_t max_elements = kMaxTensorElements;
};

/// Throws tessera::Error naming `what` if `tensor` is undefined, has another dtype, another rank
/// or size than `spec`, more than spec.max_elements elements, or (floating dtypes) a NaN or Inf.
void check_tensor(const torch::Tensor& tensor, const TensorSpec& spec, const std::string& what);

/// Throws tessera::Error naming `what` if a floating-point tensor holds NaN or Inf.
void check_finite(const torch::Tensor& tensor, const std::string& what);

/// Wire names of the supported dtypes: F32, F64, I64, I32, U8. Others throw.
std::string dtype_name(torch::Dtype dtype);
torch::Dtype dtype_from_name(const std::string& name, const std::string& what);

/// Raw little-endian bytes of a CPU tensor (contiguous copy).
std::string tensor_bytes(const torch::Tensor& tensor);
/// Rebuilds a tensor from wire fields. Checks the dtype name, every dim (>= 0), the element
/// count (<= kMaxTensorElements, overflow-safe), that data.size() == numel * element size, and
/// that floating values are finite. Throws tessera::Error naming `what` otherwise.
torch::Tensor tensor_from_bytes(const std::string& dtype, const std::vector<int64_t>& shape,
                                const std::string& data, const std::string& what);

/// Constant-time string comparison for secrets (no early exit on the first differing byte).
bool secrets_equal(const std::string& a, const std::string& b);

}  // namespace tessera::net
