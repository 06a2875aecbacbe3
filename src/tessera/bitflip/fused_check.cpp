// Fused dequantize-and-check kernels (AVX-512 and AVX2 via target attributes, dispatched at run
// time) and their scalar twins.
#include "tessera/bitflip/fused_check.h"

#include <immintrin.h>

#include <atomic>

#include "tessera/bitflip/radar.h"
#include "tessera/core/error.h"

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

/// One slot q (32 groups) with AVX2. kG > 0: the group size known at compile time (the loops
/// unroll); 0: layout.group_size.
template <bool kOut, int kG>
__attribute__((target("avx2"))) inline void slot_avx2(const LayerLayout& layout,
                                                      const int8_t* codes, float* out, __m256 scale,
                                                      int64_t q, uint32_t* a, uint32_t* b) {
  const int64_t g_size = kG > 0 ? kG : layout.group_size;
  const int64_t n_plus = kG > 0 ? (kG + 1) / 2 : layout.n_plus;
  const __m256i zero = _mm256_setzero_si256();
  const uint8_t* controls = layout.controls.data();
  const uint32_t* chunk = layout.chunk.data() + q * g_size;
  const uint32_t* control_of = layout.control_of.data() + q * g_size;
  __m256i sum = zero, neg = zero;
  for (int64_t j = 0; j < n_plus; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + chunk[j]));
    if (kOut) dequant32_avx2(v, out + chunk[j], scale);
    const __m256i control =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(controls + size_t{32} * control_of[j]));
    const __m256i p = _mm256_shuffle_epi8(v, control);
    sum = _mm256_add_epi8(sum, p);
    neg = _mm256_sub_epi8(neg, _mm256_cmpgt_epi8(zero, p));
  }
  for (int64_t j = n_plus; j < g_size; ++j) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + chunk[j]));
    if (kOut) dequant32_avx2(v, out + chunk[j], scale);
    const __m256i control =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(controls + size_t{32} * control_of[j]));
    const __m256i p = _mm256_sub_epi8(zero, _mm256_shuffle_epi8(v, control));
    sum = _mm256_add_epi8(sum, p);
    neg = _mm256_sub_epi8(neg, _mm256_cmpgt_epi8(zero, p));
  }
  // B = [s >= 0]: the complement of each byte's sign bit; A = bit 1 of the negative count,
  // moved to bit 7 of its byte by a 16-bit shift of 6 (bytes do not mix at bit 7).
  b[q] = ~static_cast<uint32_t>(_mm256_movemask_epi8(sum));
  a[q] = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(neg, 6)));
}

template <bool kOut, int kG>
__attribute__((target("avx2"))) void fused_avx2(const LayerLayout& layout, const int8_t* codes,
                                                float* out, float step, uint32_t* a, uint32_t* b) {
  const __m256 scale = _mm256_set1_ps(step);
  for (int64_t q = 0; q < layout.n_slots(); ++q)
    slot_avx2<kOut, kG>(layout, codes, out, scale, q, a, b);
}

__attribute__((target("avx2"))) void dequantize_avx2(const int8_t* codes, int64_t n, float step,
                                                     float* out) {
  const __m256 scale = _mm256_set1_ps(step);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    dequant32_avx2(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i)), out + i, scale);
  for (; i < n; ++i) out[i] = static_cast<float>(codes[i]) * step;
}

#define TESSERA_AVX512 __attribute__((target("avx2,avx512f,avx512bw")))
// GCC 12 warns that the "undefined" source inside the 512-bit conversion and insert intrinsics
// is uninitialized (GCC bug 105593, fixed in GCC 13); the value is never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

/// 32 codes to floats, 16 per instruction; the sign extension reads memory directly (no
/// extracts, which would compete with the check's byte shuffle for the shuffle unit).
TESSERA_AVX512 inline void dequant32_avx512(const int8_t* src, float* dst, __m512 scale) {
  const __m512i lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  const __m512i hi =
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16)));
  _mm512_storeu_ps(dst, _mm512_mul_ps(_mm512_cvtepi32_ps(lo), scale));
  _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(hi), scale));
}

/// Two 32-byte rows in one register: `lo` in bytes 0-31, `hi` in 32-63 (a broadcast load, which
/// needs no shuffle unit, and one insert).
TESSERA_AVX512 inline __m512i pair_avx512(const void* lo, const void* hi) {
  return _mm512_inserti64x4(
      _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(lo))),
      _mm256_loadu_si256(static_cast<const __m256i*>(hi)), 1);
}

/// One row j of slots q and q + 1 (chunk offsets c0, c1; controls k0, k1) into the 64 group
/// sums and the two sign-bit planes that count negatives modulo 4.
template <bool kOut, bool kMinus>
TESSERA_AVX512 inline void row_avx512(const int8_t* codes, const uint8_t* controls, uint32_t c0,
                                      uint32_t c1, uint32_t k0, uint32_t k1, float* out,
                                      __m512 scale, __m512i& sum, __m512i& bit0, __m512i& bit1) {
  if (kOut) {
    dequant32_avx512(codes + c0, out + c0, scale);
    dequant32_avx512(codes + c1, out + c1, scale);
  }
  const __m512i v = pair_avx512(codes + c0, codes + c1);
  const __m512i control = pair_avx512(controls + size_t{32} * k0, controls + size_t{32} * k1);
  __m512i p = _mm512_shuffle_epi8(v, control);
  if (kMinus) p = _mm512_sub_epi8(_mm512_setzero_si512(), p);
  sum = _mm512_add_epi8(sum, p);
  bit1 = _mm512_ternarylogic_epi32(bit1, bit0, p, 0x78);  // bit1 ^= bit0 & p (bit 7 counts)
  bit0 = _mm512_xor_si512(bit0, p);
}

/// Slots q and q + 1 side by side: 64 groups per register (an odd last slot goes through the
/// AVX2 slot). The negative count needs only its bit 1, so two sign-bit planes count modulo 4
/// (a half adder: one ternary-logic op and one xor) instead of a compare and a subtract.
template <bool kOut, int kG>
TESSERA_AVX512 void fused_avx512(const LayerLayout& layout, const int8_t* codes, float* out,
                                 float step, uint32_t* a, uint32_t* b) {
  const int64_t g_size = kG > 0 ? kG : layout.group_size;
  const int64_t n_plus = kG > 0 ? (kG + 1) / 2 : layout.n_plus;
  const __m512 scale = _mm512_set1_ps(step);
  const uint8_t* controls = layout.controls.data();
  const int64_t n_slots = layout.n_slots();
  int64_t q = 0;
  for (; q + 2 <= n_slots; q += 2) {
    const uint32_t* c0 = layout.chunk.data() + q * g_size;
    const uint32_t* c1 = c0 + g_size;
    const uint32_t* k0 = layout.control_of.data() + q * g_size;
    const uint32_t* k1 = k0 + g_size;
    __m512i sum = _mm512_setzero_si512(), bit0 = sum, bit1 = sum;
    for (int64_t j = 0; j < n_plus; ++j)
      row_avx512<kOut, false>(codes, controls, c0[j], c1[j], k0[j], k1[j], out, scale, sum, bit0,
                              bit1);
    for (int64_t j = n_plus; j < g_size; ++j)
      row_avx512<kOut, true>(codes, controls, c0[j], c1[j], k0[j], k1[j], out, scale, sum, bit0,
                             bit1);
    const uint64_t bm = ~_mm512_movepi8_mask(sum);
    const uint64_t am = _mm512_movepi8_mask(bit1);
    a[q] = static_cast<uint32_t>(am);
    a[q + 1] = static_cast<uint32_t>(am >> 32);
    b[q] = static_cast<uint32_t>(bm);
    b[q + 1] = static_cast<uint32_t>(bm >> 32);
  }
  if (q < n_slots) slot_avx2<kOut, kG>(layout, codes, out, _mm256_set1_ps(step), q, a, b);
}

TESSERA_AVX512 void dequantize_avx512(const int8_t* codes, int64_t n, float step, float* out) {
  const __m512 scale = _mm512_set1_ps(step);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) dequant32_avx512(codes + i, out + i, scale);
  for (; i < n; ++i) out[i] = static_cast<float>(codes[i]) * step;
}

#pragma GCC diagnostic pop
#undef TESSERA_AVX512

bool detect(CheckKernel kernel) {
  __builtin_cpu_init();
  switch (kernel) {
    case CheckKernel::kAvx512:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw");
    case CheckKernel::kAvx2:
      return __builtin_cpu_supports("avx2");
    case CheckKernel::kScalar:
      return true;
  }
  return false;
}

/// Detected once (cpuid is slow, and fused_read asks at every call).
bool cpu_supports(CheckKernel kernel) {
  static const bool supported[3] = {detect(CheckKernel::kScalar), detect(CheckKernel::kAvx2),
                                    detect(CheckKernel::kAvx512)};
  return supported[static_cast<int>(kernel)];
}

std::atomic<CheckKernel>& current_kernel() {
  static std::atomic<CheckKernel> kernel{best_check_kernel()};
  return kernel;
}

void require_supported(CheckKernel kernel) {
  TESSERA_CHECK(cpu_supports(kernel), "check kernel {} is not supported by this CPU (best: {})",
                check_kernel_name(kernel), check_kernel_name(best_check_kernel()));
}

/// The fused kernel for this group size: G = 8 and 16 (the bench's) unrolled, others generic.
template <template <bool, int> class Pick, bool kOut>
void dispatch_g(const LayerLayout& layout, const int8_t* codes, float* out, float step, uint32_t* a,
                uint32_t* b) {
  const int64_t g = layout.group_size;
  if (g == 8)
    Pick<kOut, 8>::run(layout, codes, out, step, a, b);
  else if (g == 16)
    Pick<kOut, 16>::run(layout, codes, out, step, a, b);
  else
    Pick<kOut, 0>::run(layout, codes, out, step, a, b);
}

/// With an output buffer (inference) or without (the check alone: verify, signing).
template <template <bool, int> class Pick>
void dispatch(const LayerLayout& layout, const int8_t* codes, float* out, float step, uint32_t* a,
              uint32_t* b) {
  if (out == nullptr)
    dispatch_g<Pick, false>(layout, codes, out, step, a, b);
  else
    dispatch_g<Pick, true>(layout, codes, out, step, a, b);
}

template <bool kOut, int kG>
struct Avx2 {
  static void run(const LayerLayout& l, const int8_t* c, float* o, float s, uint32_t* a,
                  uint32_t* b) {
    fused_avx2<kOut, kG>(l, c, o, s, a, b);
  }
};

template <bool kOut, int kG>
struct Avx512 {
  static void run(const LayerLayout& l, const int8_t* c, float* o, float s, uint32_t* a,
                  uint32_t* b) {
    fused_avx512<kOut, kG>(l, c, o, s, a, b);
  }
};

}  // namespace

CheckKernel best_check_kernel() {
  static const CheckKernel best = cpu_supports(CheckKernel::kAvx512) ? CheckKernel::kAvx512
                                  : cpu_supports(CheckKernel::kAvx2) ? CheckKernel::kAvx2
                                                                     : CheckKernel::kScalar;
  return best;
}

CheckKernel check_kernel() { return current_kernel().load(std::memory_order_relaxed); }

void set_check_kernel(CheckKernel kernel) {
  require_supported(kernel);
  current_kernel().store(kernel, std::memory_order_relaxed);
}

std::vector<CheckKernel> supported_check_kernels() {
  std::vector<CheckKernel> out;
  for (const auto k : {CheckKernel::kScalar, CheckKernel::kAvx2, CheckKernel::kAvx512})
    if (cpu_supports(k)) out.push_back(k);
  return out;
}

const char* check_kernel_name(CheckKernel kernel) {
  switch (kernel) {
    case CheckKernel::kAvx512:
      return "avx512";
    case CheckKernel::kAvx2:
      return "avx2";
    case CheckKernel::kScalar:
      return "scalar";
  }
  return "?";
}

void fused_read(const LayerLayout& layout, const int8_t* codes, float* out, float step, uint32_t* a,
                uint32_t* b, CheckKernel kernel) {
  require_supported(kernel);
  switch (kernel) {
    case CheckKernel::kAvx512:
      dispatch<Avx512>(layout, codes, out, step, a, b);
      return;
    case CheckKernel::kAvx2:
      dispatch<Avx2>(layout, codes, out, step, a, b);
      return;
    case CheckKernel::kScalar:
      break;
  }
  if (out != nullptr)
    fused_scalar<true>(layout, codes, out, step, a, b);
  else
    fused_scalar<false>(layout, codes, out, step, a, b);
}

void dequantize_codes(const int8_t* codes, int64_t n, float step, float* out, CheckKernel kernel) {
  require_supported(kernel);
  switch (kernel) {
    case CheckKernel::kAvx512:
      dequantize_avx512(codes, n, step, out);
      return;
    case CheckKernel::kAvx2:
      dequantize_avx2(codes, n, step, out);
      return;
    case CheckKernel::kScalar:
      break;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(codes[i]) * step;
}

}  // namespace tessera::bitflip
