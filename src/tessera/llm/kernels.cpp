// Batch-invariant matmul for LLM inference. One 8-lane accumulator per (row, column): lane l sums
// the products with k = l (mod 8) for k below the last multiple of 8, the lanes are added in a
// fixed tree, then the tail is added with scalar fma. The AVX2 kernels and the scalar fallback
// follow exactly this order, so they agree bit for bit and any row grouping gives the same result.
#include "tessera/llm/kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define TESSERA_HAVE_X86 1
#endif

namespace tessera::llm {
namespace {

// The fixed lane-summation tree shared by every path.
inline float sum_lanes(const float* l) {
  return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

float dot_scalar(const float* x, const float* w, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] = std::fma(w[k + l], x[k + l], lanes[l]);
  }
  float s = sum_lanes(lanes);
  for (; k < n; ++k) s = std::fma(w[k], x[k], s);
  return s;
}

#ifdef TESSERA_HAVE_X86
// Eight accumulators reduced at once with the lane tree of sum_lanes: hadd forms (l0+l1), (l2+l3),
// ..., a second hadd the quarter sums, and the final add joins the two 128-bit halves, so
// result[i] == sum_lanes(v[i]) bit for bit (float addition is commutative).
__attribute__((target("avx2,fma"))) inline __m256 reduce8(const __m256* v) {
  const __m256 g0 = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 g1 = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(g0, g1, 0x20), _mm256_permute2f128_ps(g0, g1, 0x31));
}

// R weight rows x G input rows per call; R*G accumulators stay in registers.
template <int R, int G>
__attribute__((target("avx2,fma"))) void micro_avx2(const float* x, int64_t ldx, const float* w,
                                                    int64_t ldw, int64_t n_in, float* y,
                                                    int64_t ldy, const float* bias) {
  __m256 acc[R * G];  // acc[r * G + g]
  for (int i = 0; i < R * G; ++i) acc[i] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= n_in; k += 8) {
    __m256 xv[G];
    for (int g = 0; g < G; ++g) xv[g] = _mm256_loadu_ps(x + g * ldx + k);
    for (int r = 0; r < R; ++r) {
      const __m256 wv = _mm256_loadu_ps(w + r * ldw + k);
      for (int g = 0; g < G; ++g) acc[r * G + g] = _mm256_fmadd_ps(wv, xv[g], acc[r * G + g]);
    }
  }
  alignas(32) float sums[R * G];
  if constexpr (R * G == 8) {
    const __m256 s = reduce8(acc);
    if (G == 1 && k == n_in) {  // 8 outputs of one input row, contiguous in y: one store
      _mm256_storeu_ps(y, bias != nullptr ? _mm256_add_ps(s, _mm256_loadu_ps(bias)) : s);
      return;
    }
    _mm256_store_ps(sums, s);
  } else {
    for (int i = 0; i < R * G; ++i) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[i]);
      sums[i] = sum_lanes(lanes);
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int g = 0; g < G; ++g) {
      float s = sums[r * G + g];
      for (int64_t kk = k; kk < n_in; ++kk) s = std::fma(w[r * ldw + kk], x[g * ldx + kk], s);
      if (bias != nullptr) s += bias[r];
      y[g * ldy + r] = s;
    }
  }
}

// Columns [j0, j1) for all rows. Blocks of 8 weight rows are read from memory once and reused
// from L1 by every input row: groups of 4 input rows share each weight load (2x4 kernel), the
// other 1-3 rows use the 8x1 kernel. So an n-token forward streams the weights once, like a
// 1-token one.
void block_avx2(const float* x, int64_t n_rows, int64_t n_in, int64_t ldx, const float* w,
                int64_t ldw, float* y, int64_t ldy, const float* bias, int64_t j0, int64_t j1) {
  const int64_t n4 = n_rows / 4 * 4;
  auto b = [bias](int64_t j) { return bias != nullptr ? bias + j : nullptr; };
  int64_t j = j0;
  for (; j + 8 <= j1; j += 8) {
    for (int64_t r = 0; r < 8; r += 2) {
      for (int64_t t = 0; t < n4; t += 4) {
        micro_avx2<2, 4>(x + t * ldx, ldx, w + (j + r) * ldw, ldw, n_in, y + t * ldy + j + r, ldy,
                         b(j + r));
      }
    }
    for (int64_t t = n4; t < n_rows; ++t) {
      micro_avx2<8, 1>(x + t * ldx, ldx, w + j * ldw, ldw, n_in, y + t * ldy + j, ldy, b(j));
    }
  }
  for (; j < j1; ++j) {
    for (int64_t t = 0; t < n4; t += 4) {
      micro_avx2<1, 4>(x + t * ldx, ldx, w + j * ldw, ldw, n_in, y + t * ldy + j, ldy, b(j));
    }
    for (int64_t t = n4; t < n_rows; ++t) {
      micro_avx2<1, 1>(x + t * ldx, ldx, w + j * ldw, ldw, n_in, y + t * ldy + j, ldy, b(j));
    }
  }
}

bool cpu_has_avx2_fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

void block_scalar(const float* x, int64_t n_rows, int64_t n_in, int64_t ldx, const float* w,
                  int64_t ldw, float* y, int64_t ldy, const float* bias, int64_t j0, int64_t j1) {
  for (int64_t t = 0; t < n_rows; ++t) {
    for (int64_t j = j0; j < j1; ++j) {
      float s = dot_scalar(x + t * ldx, w + j * ldw, n_in);
      if (bias != nullptr) s += bias[j];
      y[t * ldy + j] = s;
    }
  }
}

bool use_avx2() {
#ifdef TESSERA_HAVE_X86
  static const bool ok = cpu_has_avx2_fma();
  return ok;
#else
  return false;
#endif
}

}  // namespace

const char* matmul_kernel_name() { return use_avx2() ? "avx2-fma" : "scalar"; }

float dot_invariant(const float* x, const float* w, int64_t n) { return dot_scalar(x, w, n); }

void matmul_rows(const float* x, int64_t n_rows, int64_t n_in, int64_t ldx, const float* w,
                 int64_t n_out, int64_t ldw, float* y, int64_t ldy, const float* bias) {
  if (n_rows <= 0 || n_out <= 0) return;
  // Columns in blocks of 16; enough blocks per task that a task does >= ~64k multiply-adds, so
  // tiny matmuls run on one thread instead of paying the fork/join.
  constexpr int64_t kBlock = 16;
  const int64_t n_blocks = (n_out + kBlock - 1) / kBlock;
  const int64_t work_per_block = std::max<int64_t>(1, kBlock * n_in * n_rows);
  const int64_t grain = std::max<int64_t>(1, 65536 / work_per_block);
  const bool avx2 = use_avx2();
  at::parallel_for(0, n_blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * kBlock;
    const int64_t j1 = std::min(n_out, b1 * kBlock);
#ifdef TESSERA_HAVE_X86
    if (avx2) {
      block_avx2(x, n_rows, n_in, ldx, w, ldw, y, ldy, bias, j0, j1);
      return;
    }
#endif
    block_scalar(x, n_rows, n_in, ldx, w, ldw, y, ldy, bias, j0, j1);
  });
}

void matmul_rows_reference(const float* x, int64_t n_rows, int64_t n_in, const float* w,
                           int64_t n_out, float* y, const float* bias) {
  for (int64_t t = 0; t < n_rows; ++t) {
    for (int64_t j = 0; j < n_out; ++j) {
      double s = bias != nullptr ? bias[j] : 0.0;
      for (int64_t k = 0; k < n_in; ++k)
        s += static_cast<double>(x[t * n_in + k]) * w[j * n_in + k];
      y[t * n_out + j] = static_cast<float>(s);
    }
  }
}

StreamTriad::StreamTriad(int64_t n) : a_(n), b_(n), c_(n) {
  // First touch by the same threads and partition as the timed loop.
  at::parallel_for(0, n, 1 << 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      a_[i] = 0.0f;
      b_[i] = 1.0f;
      c_[i] = 2.0f;
    }
  });
}

double StreamTriad::run() {
  const auto n = static_cast<int64_t>(a_.size());
  const float s = 3.0f;
  float* pa = a_.data();
  const float* pb = b_.data();
  const float* pc = c_.data();
  const auto t0 = std::chrono::steady_clock::now();
  at::parallel_for(0, n, 1 << 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) pa[i] = pb[i] + s * pc[i];
  });
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 3.0 * 4.0 * static_cast<double>(n) / dt;
}

}  // namespace tessera::llm
