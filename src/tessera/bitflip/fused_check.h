// The RADAR check fused into the weight read: one pass over a layer's int8 codes in the block
// layout (radar.h) that dequantizes them for inference and computes every group's signature with
// int8 SIMD (AVX-512 or AVX2, picked at run time from what the CPU has, else scalar code).
#pragma once

#include <cstdint>
#include <vector>

namespace tessera::bitflip {

struct LayerLayout;

/// The kernels of the fused read and of the plain dequantization, in the order of the CPU
/// features they need. kAvx2: 32 groups (one slot) per register. kAvx512 (avx512f + avx512bw):
/// two slots, 64 groups, per register, and 16 weights per dequantizing multiply.
enum class CheckKernel { kScalar, kAvx2, kAvx512 };

/// The best kernel this CPU supports, detected once; the process starts with it.
CheckKernel best_check_kernel();
/// The kernel fused_read and dequantize_codes use by default now.
CheckKernel check_kernel();
/// Selects the default kernel for the whole process (the bench times them side by side, the
/// tests compare them); throws tessera::Error when the CPU lacks it.
void set_check_kernel(CheckKernel kernel);
/// Every kernel this CPU runs, scalar first.
std::vector<CheckKernel> supported_check_kernels();
/// "scalar", "avx2" or "avx512".
const char* check_kernel_name(CheckKernel kernel);

/// Reads layer codes[0 .. layout.padded) in the block layout. When `out` is not null, writes
/// out[i] = codes[i] * step for every i (the dequantized weights inference uses). Writes the
/// signature masks of every slot q: bit i of a[q] / b[q] is A / B of group 32 q + i. Every
/// kernel gives the same results (the tests compare them); one the CPU lacks throws.
void fused_read(const LayerLayout& layout, const int8_t* codes, float* out, float step, uint32_t* a,
                uint32_t* b, CheckKernel kernel = check_kernel());

/// Plain dequantization out[i] = codes[i] * step, i < n (the unchecked read).
void dequantize_codes(const int8_t* codes, int64_t n, float step, float* out,
                      CheckKernel kernel = check_kernel());

}  // namespace tessera::bitflip
