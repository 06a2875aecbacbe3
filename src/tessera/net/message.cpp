// Tensor encoding and validation for the federated transport.
#include "tessera/net/message.h"

#include <fmt/ranges.h>

#include <cstring>

#include "tessera/core/error.h"

namespace tessera::net {

void Message::add(const std::string& name, const torch::Tensor& tensor) {
  TESSERA_CHECK(tensor.defined(), "message '{}': tensor '{}' is undefined", method, name);
  tensors.emplace_back(name, tensor.detach().to(torch::kCPU).contiguous());
}

bool Message::contains(const std::string& name) const {
  for (const auto& entry : tensors) {
    if (entry.first == name) return true;
  }
  return false;
}

const torch::Tensor& Message::tensor(const std::string& name) const {
  for (const auto& entry : tensors) {
    if (entry.first == name) return entry.second;
  }
  TESSERA_CHECK(false, "message '{}' has no tensor '{}'", method, name);
  static const torch::Tensor kNone;  // unreachable; keeps the compiler happy
  return kNone;
}

int64_t Message::payload_bytes() const {
  int64_t total = 0;
  for (const auto& entry : tensors) total += entry.second.numel() * entry.second.element_size();
  return total;
}

std::string dtype_name(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return "F32";
    case torch::kFloat64:
      return "F64";
    case torch::kInt64:
      return "I64";
    case torch::kInt32:
      return "I32";
    case torch::kUInt8:
      return "U8";
    default:
      TESSERA_CHECK(false, "dtype {} cannot be sent (supported: F32, F64, I64, I32, U8)",
                    c10::toString(dtype));
  }
  return "";
}

torch::Dtype dtype_from_name(const std::string& name, const std::string& what) {
  if (name == "F32") return torch::kFloat32;
  if (name == "F64") return torch::kFloat64;
  if (name == "I64") return torch::kInt64;
  if (name == "I32") return torch::kInt32;
  if (name == "U8") return torch::kUInt8;
  TESSERA_CHECK(false, "{}: unknown dtype '{}' (expected F32, F64, I64, I32 or U8)", what, name);
  return torch::kFloat32;
}

void check_finite(const torch::Tensor& tensor, const std::string& what) {
  if (!tensor.is_floating_point() || tensor.numel() == 0) return;
  TESSERA_CHECK(torch::isfinite(tensor).all().item<bool>(), "{}: holds NaN or Inf values", what);
}

void check_tensor(const torch::Tensor& tensor, const TensorSpec& spec, const std::string& what) {
  TESSERA_CHECK(tensor.defined(), "{}: tensor missing", what);
  TESSERA_CHECK(tensor.scalar_type() == spec.dtype, "{}: dtype {} but expected {}", what,
                c10::toString(tensor.scalar_type()), c10::toString(spec.dtype));
  TESSERA_CHECK(tensor.numel() <= spec.max_elements, "{}: {} elements exceed the limit of {}", what,
                tensor.numel(), spec.max_elements);
  bool shape_ok = tensor.dim() == static_cast<int64_t>(spec.shape.size());
  for (int64_t d = 0; shape_ok && d < tensor.dim(); ++d) {
    if (spec.shape[d] >= 0 && spec.shape[d] != tensor.size(d)) shape_ok = false;
  }
  TESSERA_CHECK(shape_ok, "{}: shape {} but expected {} (-1 = any)", what,
                fmt::join(tensor.sizes(), "x"), fmt::join(spec.shape, "x"));
  check_finite(tensor, what);
}

std::string tensor_bytes(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  const auto n_bytes = static_cast<size_t>(t.numel() * t.element_size());
  return std::string(static_cast<const char*>(t.data_ptr()), n_bytes);
}

torch::Tensor tensor_from_bytes(const std::string& dtype, const std::vector<int64_t>& shape,
                                const std::string& data, const std::string& what) {
  const torch::Dtype type = dtype_from_name(dtype, what);
  TESSERA_CHECK(shape.size() <= 8, "{}: rank {} exceeds 8", what, shape.size());
  int64_t numel = 1;
  for (const int64_t dim : shape) {
    TESSERA_CHECK(dim >= 0, "{}: negative dimension {}", what, dim);
    // Checked before multiplying so that hostile dims cannot overflow the count.
    TESSERA_CHECK(dim == 0 || numel <= kMaxTensorElements / dim,
                  "{}: shape {} has more than {} elements", what, fmt::join(shape, "x"),
                  kMaxTensorElements);
    numel *= dim;
  }
  const int64_t element_size = static_cast<int64_t>(c10::elementSize(type));
  TESSERA_CHECK(static_cast<int64_t>(data.size()) == numel * element_size,
                "{}: {} data bytes but shape {} of {} needs {}", what, data.size(),
                fmt::join(shape, "x"), dtype, numel * element_size);
  torch::Tensor tensor = torch::empty(shape, torch::TensorOptions().dtype(type));
  if (numel > 0) std::memcpy(tensor.data_ptr(), data.data(), data.size());
  check_finite(tensor, what);
  return tensor;
}

bool secrets_equal(const std::string& a, const std::string& b) {
  // Length is not secret; the content comparison touches every byte.
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i]) ^ static_cast<unsigned char>(b[i]);
  }
  return diff == 0;
}

}  // namespace tessera::net
