// Batch-invariant matmul for LLM inference. One 8-lane accumulator per (row, column): lane l sums
// the products with k = l (mod 8) for k below the last multiple of 8, the lanes are added in a
// fixed tree, then the tail is added with scalar fma. The AVX-512 and AVX2 kernels and the scalar
// fallback follow exactly this order, so they agree bit for bit and any row grouping gives the
// same result.
#include "tessera/llm/kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tessera/core/error.h"

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
      // As in the AVX-512 kernel: the next row group's weights, while these FMAs run.
      if ((k & 8) == 0)
        _mm_prefetch(reinterpret_cast<const char*>(w + (r + R) * ldw + k), _MM_HINT_T0);
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

// AVX-512: one 512-bit register holds the 8-lane accumulators of two input rows (a token pair)
// for one weight row, so every lane still sums its k = l (mod 8) products in k order and the
// result equals the AVX2 and scalar paths bit for bit. The input rows are packed once per call as
// [pair][chunk of 8][16 floats] (the row after an odd last one is zero and its outputs are
// dropped); the 8 weights of a chunk are broadcast to both halves. R weight rows x P pairs
// (up to 16 tokens) share each weight load, so an n-token forward streams the weights once.
// GCC 12 warns that the "undefined" source of the broadcast and extract intrinsics is
// uninitialized (GCC bug 105593, fixed in GCC 13); the value is never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
struct PairPack {
  const float* data = nullptr;
  int64_t n_pairs = 0, n_chunks = 0;
};

PairPack pack_pairs(const float* x, int64_t n_rows, int64_t n_in, int64_t ldx) {
  thread_local std::vector<float> buffer;
  PairPack pack;
  pack.n_pairs = (n_rows + 1) / 2;
  pack.n_chunks = n_in / 8;
  const int64_t floats = pack.n_pairs * pack.n_chunks * 16;
  buffer.resize(floats + 16);
  float* out = buffer.data();
  while (reinterpret_cast<std::uintptr_t>(out) % 64 != 0) ++out;
  for (int64_t p = 0; p < pack.n_pairs; ++p) {
    for (int64_t c = 0; c < pack.n_chunks; ++c) {
      float* dst = out + (p * pack.n_chunks + c) * 16;
      for (int half = 0; half < 2; ++half) {
        const int64_t t = 2 * p + half;
        for (int l = 0; l < 8; ++l) dst[half * 8 + l] = t < n_rows ? x[t * ldx + c * 8 + l] : 0.0f;
      }
    }
  }
  pack.data = out;
  return pack;
}

// R weight rows x P pairs over chunks [c0, c1): the accumulators are loaded from and stored back
// to acc[r * acc_stride + p] (zmm slots), so a k-tile at a time keeps every lane's k order.
template <int R, int P>
__attribute__((target("avx512f,avx512dq,avx2,fma"))) void micro_avx512(const float* xp,
                                                                       int64_t n_chunks, int64_t c0,
                                                                       int64_t c1, const float* w,
                                                                       int64_t ldw, float* acc_mem,
                                                                       int64_t acc_stride) {
  __m512 acc[R * P];
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p)
      acc[r * P + p] = _mm512_load_ps(acc_mem + (r * acc_stride + p) * 16);
  for (int64_t c = c0; c < c1; ++c) {
    __m512 xv[P];
    for (int p = 0; p < P; ++p) xv[p] = _mm512_load_ps(xp + (p * n_chunks + c) * 16);
    for (int r = 0; r < R; ++r) {
      const __m512 wv = _mm512_broadcast_f32x8(_mm256_loadu_ps(w + r * ldw + c * 8));
      for (int p = 0; p < P; ++p) acc[r * P + p] = _mm512_fmadd_ps(wv, xv[p], acc[r * P + p]);
      // The next row group's weights of this chunk: they arrive from memory while these FMAs run
      // (one 64-byte line holds two chunks).
      if ((c & 1) == 0)
        _mm_prefetch(reinterpret_cast<const char*>(w + (r + R) * ldw + c * 8), _MM_HINT_T0);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int p = 0; p < P; ++p)
      _mm512_store_ps(acc_mem + (r * acc_stride + p) * 16, acc[r * P + p]);
}

using MicroAvx512 = void (*)(const float*, int64_t, int64_t, int64_t, const float*, int64_t, float*,
                             int64_t);
// Kernels by pairs per call (up to 4: 16 accumulators), for 4 weight rows and for a 1-row tail;
// a lone pair takes 8 rows, so that 8 accumulators hide the FMA latency.
constexpr int kTilePairs = 4;
constexpr int64_t kAvx2MaxRows = 8;  // this many rows or fewer run faster on AVX2 (see matmul_rows)
constexpr MicroAvx512 kFourRowKernels[kTilePairs + 1] = {
    nullptr, &micro_avx512<4, 1>, &micro_avx512<4, 2>, &micro_avx512<4, 3>, &micro_avx512<4, 4>};
constexpr MicroAvx512 kOneRowKernels[kTilePairs + 1] = {
    nullptr, &micro_avx512<1, 1>, &micro_avx512<1, 2>, &micro_avx512<1, 3>, &micro_avx512<1, 4>};
constexpr MicroAvx512 kEightRowKernel = &micro_avx512<8, 1>;

// Columns [j0, j1) (at most 16, one block) for all rows. Per group of up to 8 pairs, k advances in
// tiles of kChunkTile chunks: the tile's inputs (8 pairs x 2 KB) and weights (16 rows x 1 KB) stay
// in L1 while every row group and pair group uses them, and the weights stream from memory once.
__attribute__((target("avx512f,avx512dq,avx2,fma"))) void block_avx512(
    const PairPack& pack, const float* x, int64_t n_rows, int64_t n_in, int64_t ldx, const float* w,
    int64_t ldw, float* y, int64_t ldy, const float* bias, int64_t j0, int64_t j1) {
  constexpr int64_t kMaxCols = 16, kGroupPairs = 8;
  constexpr int64_t kChunkTile = 32;
  alignas(64) float acc[kMaxCols * kGroupPairs * 16];
  alignas(64) float sums[2 * kMaxCols * kGroupPairs];
  const int64_t cols = j1 - j0, k_tail = pack.n_chunks * 8;
  for (int64_t g0 = 0; g0 < pack.n_pairs; g0 += kGroupPairs) {
    const int64_t pairs = std::min(kGroupPairs, pack.n_pairs - g0);
    std::fill(acc, acc + cols * kGroupPairs * 16, 0.0f);
    for (int64_t c0 = 0; c0 < pack.n_chunks; c0 += kChunkTile) {
      const int64_t c1 = std::min(pack.n_chunks, c0 + kChunkTile);
      // Row groups outside, pair groups inside: a row group's weights come from memory for the
      // first pair group and from L1 for the rest, while the next group's are prefetched.
      const int rows = pairs == 1 ? 8 : 4;
      for (int64_t r0 = 0; r0 < cols;) {
        const bool full = r0 + rows <= cols;
        for (int64_t p0 = 0; p0 < pairs; p0 += kTilePairs) {
          const int P = static_cast<int>(std::min<int64_t>(kTilePairs, pairs - p0));
          const MicroAvx512 kernel = !full       ? kOneRowKernels[P]
                                     : rows == 8 ? kEightRowKernel
                                                 : kFourRowKernels[P];
          kernel(pack.data + (g0 + p0) * pack.n_chunks * 16, pack.n_chunks, c0, c1,
                 w + (j0 + r0) * ldw, ldw, acc + (r0 * kGroupPairs + p0) * 16, kGroupPairs);
        }
        r0 += full ? rows : 1;
      }
    }
    // Each 512-bit slot holds two 8-lane accumulators: reduce them with the shared lane tree.
    __m256 halves[8];
    const int64_t n_halves = 2 * cols * kGroupPairs;
    for (int64_t i = 0; i < n_halves; i += 8) {
      for (int h = 0; h < 8; ++h) halves[h] = _mm256_load_ps(acc + (i + h) * 8);
      _mm256_storeu_ps(sums + i, reduce8(halves));
    }
    for (int64_t r = 0; r < cols; ++r) {
      const float* wr = w + (j0 + r) * ldw;
      for (int64_t p = 0; p < pairs; ++p) {
        for (int half = 0; half < 2; ++half) {
          const int64_t t = 2 * (g0 + p) + half;
          if (t >= n_rows) continue;
          float s = sums[2 * (r * kGroupPairs + p) + half];
          for (int64_t kk = k_tail; kk < n_in; ++kk) s = std::fma(wr[kk], x[t * ldx + kk], s);
          if (bias != nullptr) s += bias[j0 + r];
          y[t * ldy + j0 + r] = s;
        }
      }
    }
  }
}

#pragma GCC diagnostic pop

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
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

MatmulKernel detect_best_kernel() {
#ifdef TESSERA_HAVE_X86
  if (cpu_has_avx2_fma()) return cpu_has_avx512() ? MatmulKernel::kAvx512 : MatmulKernel::kAvx2;
#endif
  return MatmulKernel::kScalar;
}

std::atomic<MatmulKernel>& current_kernel() {
  static std::atomic<MatmulKernel> kernel{best_matmul_kernel()};
  return kernel;
}

}  // namespace

MatmulKernel best_matmul_kernel() {
  static const MatmulKernel best = detect_best_kernel();
  return best;
}

MatmulKernel matmul_kernel() { return current_kernel().load(std::memory_order_relaxed); }

void set_matmul_kernel(MatmulKernel kernel) {
  TESSERA_CHECK(static_cast<int>(kernel) <= static_cast<int>(best_matmul_kernel()),
                "matmul kernel {} is not supported by this CPU (best: {})",
                matmul_kernel_name(kernel), matmul_kernel_name(best_matmul_kernel()));
  current_kernel().store(kernel, std::memory_order_relaxed);
}

const char* matmul_kernel_name(MatmulKernel kernel) {
  switch (kernel) {
    case MatmulKernel::kAvx512:
      return "avx512 (above 8 rows; avx2-fma below)";
    case MatmulKernel::kAvx2:
      return "avx2-fma";
    case MatmulKernel::kScalar:
      break;
  }
  return "scalar";
}

const char* matmul_kernel_name() { return matmul_kernel_name(matmul_kernel()); }

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
  const MatmulKernel kernel = matmul_kernel();
#ifdef TESSERA_HAVE_X86
  // Up to 8 rows stay on AVX2, which measured faster there (bench_llm_forward, 134M shape: the
  // cost of 2, 4 and 8 tokens over 1 was 1.03, 1.04 and 1.48 on AVX2 against 1.33, 1.50 and 1.70
  // on AVX-512; 2.72 against 2.47 at 16). The pack is made by the calling thread, read by all.
  if (kernel == MatmulKernel::kAvx512 && n_rows > kAvx2MaxRows && n_in >= 8) {
    const PairPack pack = pack_pairs(x, n_rows, n_in, ldx);
    at::parallel_for(0, n_blocks, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        block_avx512(pack, x, n_rows, n_in, ldx, w, ldw, y, ldy, bias, b * kBlock,
                     std::min(n_out, (b + 1) * kBlock));
      }
    });
    return;
  }
#endif
  at::parallel_for(0, n_blocks, grain, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * kBlock;
    const int64_t j1 = std::min(n_out, b1 * kBlock);
#ifdef TESSERA_HAVE_X86
    if (kernel != MatmulKernel::kScalar) {
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
