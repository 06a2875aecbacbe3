// Symmetric per-layer n-bit weight quantization (BFA reference, research/hw_security.md 3.1) and
// two's-complement bit access. Rounding is torch::round (half to even), as in the reference.
#include "tessera/core/quant.h"

#include "tessera/core/error.h"

namespace tessera::quant {

namespace {

void check_bits(int bits) {
  TESSERA_CHECK(bits >= 2 && bits <= 16, "quantization bits must be in [2, 16], got {}", bits);
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The raw int32 storage of a QuantizedTensor, after checking that it is what quantize() makes.
const int32_t* checked_values(const QuantizedTensor& q, int64_t index, int bit) {
  check_bits(q.bits);
  TESSERA_CHECK(q.values.defined() && q.values.scalar_type() == torch::kInt32 &&
                    q.values.is_contiguous() && q.values.device().is_cpu(),
                "quantized tensor '{}' must hold contiguous int32 CPU values", q.name);
  TESSERA_CHECK(index >= 0 && index < q.values.numel(),
                "element index {} out of range for quantized tensor '{}' with {} elements", index,
                q.name, q.values.numel());
  TESSERA_CHECK(bit >= 0 && bit < q.bits, "bit {} out of range for {}-bit tensor '{}'", bit, q.bits,
                q.name);
  return q.values.data_ptr<int32_t>();
}

}  // namespace

uint32_t to_twos_complement(int32_t value, int bits) {
  check_bits(bits);
  const int32_t lowest = -(int32_t{1} << (bits - 1));
  const int32_t highest = (int32_t{1} << (bits - 1)) - 1;
  TESSERA_CHECK(value >= lowest && value <= highest,
                "value {} does not fit in {}-bit two's complement [{}, {}]", value, bits, lowest,
                highest);
  // Negative values map to value + 2^n (the reference's int->bits conversion).
  return value < 0 ? static_cast<uint32_t>(value + (int32_t{1} << bits))
                   : static_cast<uint32_t>(value);
}

int32_t from_twos_complement(uint32_t code, int bits) {
  check_bits(bits);
  TESSERA_CHECK(code < (uint32_t{1} << bits), "code {} has more than {} bits", code, bits);
  // -(b & sign) + (b & ~sign): the sign bit weighs -2^(n-1).
  const uint32_t sign = uint32_t{1} << (bits - 1);
  return static_cast<int32_t>(code & (sign - 1)) - static_cast<int32_t>(code & sign);
}

int QuantizedTensor::get_bit(int64_t index, int bit) const {
  const int32_t* values_ptr = checked_values(*this, index, bit);
  return static_cast<int>((to_twos_complement(values_ptr[index], bits) >> bit) & 1u);
}

void QuantizedTensor::flip_bit(int64_t index, int bit) {
  checked_values(*this, index, bit);
  int32_t* values_ptr = values.data_ptr<int32_t>();
  const uint32_t code = to_twos_complement(values_ptr[index], bits) ^ (uint32_t{1} << bit);
  values_ptr[index] = from_twos_complement(code, bits);
}

torch::Tensor QuantizedTensor::dequantize() const {
  TESSERA_CHECK(values.defined(), "quantized tensor '{}' has no values", name);
  // In double, so the only rounding is the final cast to float32.
  return (values.to(torch::kFloat64) * step).to(torch::kFloat32);
}

QuantizedTensor quantize(const std::string& name, const torch::Tensor& weight, int bits) {
  check_bits(bits);
  TESSERA_CHECK(weight.defined(), "cannot quantize '{}': weight is undefined", name);
  TESSERA_CHECK(weight.is_floating_point(), "cannot quantize '{}': dtype {} is not floating point",
                name, c10::toString(weight.scalar_type()));
  const torch::Tensor w = weight.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const double half_levels = static_cast<double>((int64_t{1} << (bits - 1)) - 1);
  double max_abs = 0.0;
  if (w.numel() > 0) {
    TESSERA_CHECK(torch::isfinite(w).all().item<bool>(),
                  "cannot quantize '{}': weight holds NaN or infinity", name);
    max_abs = w.abs().max().item<double>();
  }
  QuantizedTensor q;
  q.name = name;
  q.bits = bits;
  // An all-zero (or empty) weight has no scale; step 1 keeps every value 0 and avoids 0/0.
  q.step = max_abs > 0.0 ? max_abs / half_levels : 1.0;
  q.values = torch::round(torch::clamp(w / q.step, -half_levels, half_levels))
                 .to(torch::kInt32)
                 .contiguous();
  return q;
}

std::vector<QuantizedTensor> quantize_module(torch::nn::Module& module, int bits) {
  check_bits(bits);
  std::vector<QuantizedTensor> out;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (ends_with(item.key(), "weight") && item.value().dim() >= 2) {
      out.push_back(quantize(item.key(), item.value(), bits));
    }
  }
  return out;
}

void load_into_module(const std::vector<QuantizedTensor>& weights, torch::nn::Module& module) {
  auto params = module.named_parameters(/*recurse=*/true);
  // Check everything before writing anything, so a mismatch leaves the module untouched.
  for (const auto& q : weights) {
    const torch::Tensor* param = params.find(q.name);
    TESSERA_CHECK(param != nullptr, "module has no parameter named '{}'", q.name);
    TESSERA_CHECK(q.values.defined() && q.values.sizes() == param->sizes(),
                  "quantized '{}' has shape {} but the parameter has shape {}", q.name,
                  q.values.defined() ? c10::str(q.values.sizes()) : "undefined",
                  c10::str(param->sizes()));
  }
  torch::NoGradGuard no_grad;
  for (const auto& q : weights) {
    torch::Tensor& param = *params.find(q.name);
    param.copy_(q.dequantize().to(param.dtype()));
  }
}

}  // namespace tessera::quant
