// Fused dequantize-and-check kernels (AVX2 via target attributes, dispatched at run time) and
// their scalar twins.
#include "tessera/bitflip/fused_check.h"

#include <immintrin.h>

#include "tessera/bitflip/radar.h"

namespace tessera::bitflip {
namespace {

template <bool kOut>
void fused_scalar(const LayerLayout& layout, const int8_t* codes, float* out, float step,
                  uint32_t* a, uint32_t* b) {
  const int64_t g_size = layout.group_size;
  for (int64_t q = 0; q < layout.n_slots(); ++q) {
    uint8_t sum[32] = {};
    uint8_t neg[32] = {};
    for (int64_t j = 0; j < g_size; ++j) {
      const auto e = static_cast<size_t>(q * g_size + j);
      const int8_t* chunk = codes + layout.chunk[e];
      const uint8_t* control = layout.controls.data() + size_t{32} * layout.control_of[e];
      if (kOut) {
        float* dst = out + layout.chunk[e];
        for (int i = 0; i < 32; ++i) dst[i] = static_cast<float>(chunk[i]) * step;
      }
      const bool plus = j < layout.n_plus;
      for (int lane = 0; lane < 32; ++lane) {
        const auto v = static_cast<uint8_t>(chunk[(lane & 16) + control[lane]]);
        const auto p = static_cast<uint8_t>(plus ? v : static_cast<uint8_t>(0u - v));
        sum[lane] = static_cast<uint8_t>(sum[lane] + p);
        neg[lane] = static_cast<uint8_t>(neg[lane] + (p >> 7));
      }
    }
    uint32_t am = 0, bm = 0;
    for (int lane = 0; lane < 32; ++lane) {
      am |= static_cast<uint32_t>((neg[lane] >> 1) & 1u) << lane;
      bm |= static_cast<uint32_t>(((sum[lane] >> 7) & 1u) ^ 1u) << lane;
    }
    a[q] = am;
    b[q] = bm;
  }
}

__attribute__((target("avx2"))) inline void dequant32_avx2(__m256i v, float* dst, __m256 scale) {
  const __m128i lo = _mm256_castsi256_si128(v);
  const __m128i hi = _mm256_extracti128_si256(v, 1);
  _mm256_storeu_ps(dst, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), scale));
  _mm256_storeu_ps(
      dst + 8,
      _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), scale));
  _mm256_storeu_ps(dst + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), scale));
  _mm256_storeu_ps(
      dst + 24,
      _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), scale));
}

/// kG > 0: the group size known at compile time (the loops unroll); 0: layout.group_size.
template <bool kOut, int kG>
__attribute__((target("avx2"))) void fused_avx2(const LayerLayout& layout, const int8_t* codes,
                                                float* out, float step, uint32_t* a, uint32_t* b) {
  const int64_t g_size = kG > 0 ? kG : layout.group_size;
  const int64_t n_plus = kG > 0 ? (kG + 1) / 2 : layout.n_plus;
  const __m256 scale = _mm256_set1_ps(step);
  const __m256i zero = _mm256_setzero_si256();
  const uint8_t* controls = layout.controls.data();
  for (int64_t q = 0; q < layout.n_slots(); ++q) {
    const uint32_t* chunk = layout.chunk.data() + q * g_size;
    const uint32_t* control_of = layout.control_of.data() + q * g_size;
    __m256i sum = zero, neg = zero;
    for (int64_t j = 0; j < n_plus; ++j) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + chunk[j]));
      if (kOut) dequant32_avx2(v, out + chunk[j], scale);
      const __m256i control = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(controls + size_t{32} * control_of[j]));
      const __m256i p = _mm256_shuffle_epi8(v, control);
      sum = _mm256_add_epi8(sum, p);
      neg = _mm256_sub_epi8(neg, _mm256_cmpgt_epi8(zero, p));
    }
    for (int64_t j = n_plus; j < g_size; ++j) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + chunk[j]));
      if (kOut) dequant32_avx2(v, out + chunk[j], scale);
      const __m256i control = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(controls + size_t{32} * control_of[j]));
      const __m256i p = _mm256_sub_epi8(zero, _mm256_shuffle_epi8(v, control));
      sum = _mm256_add_epi8(sum, p);
      neg = _mm256_sub_epi8(neg, _mm256_cmpgt_epi8(zero, p));
    }
    // B = [s >= 0]: the complement of each byte's sign bit; A = bit 1 of the negative count,
    // moved to bit 7 of its byte by a 16-bit shift of 6 (bytes do not mix at bit 7).
    b[q] = ~static_cast<uint32_t>(_mm256_movemask_epi8(sum));
    a[q] = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(neg, 6)));
  }
}

__attribute__((target("avx2"))) void dequantize_avx2(const int8_t* codes, int64_t n, float step,
                                                     float* out) {
  const __m256 scale = _mm256_set1_ps(step);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    dequant32_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i)), out + i, scale);
  for (; i < n; ++i) out[i] = static_cast<float>(codes[i]) * step;
}

}  // namespace

bool simd_available() {
  static const bool available = __builtin_cpu_supports("avx2");
  return available;
}

void fused_read(const LayerLayout& layout, const int8_t* codes, float* out, float step, uint32_t* a,
                uint32_t* b, bool simd) {
  if (simd && simd_available()) {
    const int64_t g = layout.group_size;
    if (out == nullptr)
      fused_avx2<false, 0>(layout, codes, out, step, a, b);
    else if (g == 8)
      fused_avx2<true, 8>(layout, codes, out, step, a, b);
    else if (g == 16)
      fused_avx2<true, 16>(layout, codes, out, step, a, b);
    else
      fused_avx2<true, 0>(layout, codes, out, step, a, b);
    return;
  }
  if (out != nullptr)
    fused_scalar<true>(layout, codes, out, step, a, b);
  else
    fused_scalar<false>(layout, codes, out, step, a, b);
}

void dequantize_codes(const int8_t* codes, int64_t n, float step, float* out, bool simd) {
  if (simd && simd_available()) {
    dequantize_avx2(codes, n, step, out);
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(codes[i]) * step;
}

}  // namespace tessera::bitflip
