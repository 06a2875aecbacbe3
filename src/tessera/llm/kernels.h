// Batch-invariant fp32 kernels for the no-grad LLM inference path: every output row is computed
// with the same accumulation order whatever the number of rows or threads, so an n-token forward
// gives each position bit-identical logits to a 1-token forward (what exact Jacobi decoding needs).
#pragma once

#include <cstdint>
#include <vector>

namespace tessera::llm {

/// y[t, j] = sum_k x[t, k] * w[j, k] (+ bias[j]) for t < n_rows, j < n_out.
/// x: [n_rows, n_in] with row stride ldx; w: [n_out, n_in] with row stride ldw;
/// y: [n_rows, n_out] with row stride ldy; bias: [n_out] or nullptr.
/// The reduction over k for one (t, j) is a fixed sequence of fused multiply-adds that depends
/// only on n_in: the result never depends on n_rows, on which rows share a micro-kernel, or on
/// the thread count. Threads (at::parallel_for) split the output columns.
void matmul_rows(const float* x, int64_t n_rows, int64_t n_in, int64_t ldx, const float* w,
                 int64_t n_out, int64_t ldw, float* y, int64_t ldy, const float* bias = nullptr);

/// The naive twin of matmul_rows (plain loops, double accumulation): the tests' reference.
void matmul_rows_reference(const float* x, int64_t n_rows, int64_t n_in, const float* w,
                           int64_t n_out, float* y, const float* bias = nullptr);

/// The dot product of one (x row, w row) pair, with exactly matmul_rows' accumulation order.
float dot_invariant(const float* x, const float* w, int64_t n);

/// The matmul_rows kernels, in order of capability. All give bit-identical results. kAvx512 runs
/// more than 8 input rows in passes of up to 16 (fewer rows use the AVX2 kernels, which measured
/// faster there).
enum class MatmulKernel { kScalar, kAvx2, kAvx512 };

/// The best kernel this CPU supports, detected once; matmul_rows starts with it.
MatmulKernel best_matmul_kernel();
/// The kernel matmul_rows uses now.
MatmulKernel matmul_kernel();
/// Selects a kernel for the whole process (the tests compare them); throws tessera::Error when
/// the CPU lacks it.
void set_matmul_kernel(MatmulKernel kernel);
/// "avx512 (...)", "avx2-fma" or "scalar".
const char* matmul_kernel_name(MatmulKernel kernel);
/// The name of the kernel in use.
const char* matmul_kernel_name();

/// STREAM-like triad a[i] = b[i] + s * c[i] over three arrays of n floats (allocated and first
/// touched once, by the threads that run it), split over LibTorch's threads like matmul_rows.
class StreamTriad {
 public:
  explicit StreamTriad(int64_t n);
  /// One timed pass, in bytes per second, counting 3 arrays x 4 bytes x n as STREAM does.
  double run();

 private:
  std::vector<float> a_, b_, c_;
};

}  // namespace tessera::llm
