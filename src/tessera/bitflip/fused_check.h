// The RADAR check fused into the weight read: one pass over a layer's int8 codes in the block
// layout (radar.h) that dequantizes them for inference and computes every group's signature with
// 32-lane int8 SIMD (AVX2 when the CPU has it, else the same arithmetic in scalar code).
#pragma once

#include <cstdint>

namespace tessera::bitflip {

struct LayerLayout;

/// Whether the AVX2 kernels run on this CPU.
bool simd_available();

/// Reads layer codes[0 .. layout.padded) in the block layout. When `out` is not null, writes
/// out[i] = codes[i] * step for every i (the dequantized weights inference uses). Writes the
/// signature masks of every slot q: bit i of a[q] / b[q] is A / B of group 32 q + i. `simd`
/// false forces the scalar path (same results; the tests compare both).
void fused_read(const LayerLayout& layout, const int8_t* codes, float* out, float step, uint32_t* a,
                uint32_t* b, bool simd = true);

/// Plain dequantization out[i] = codes[i] * step, i < n (the unchecked read).
void dequantize_codes(const int8_t* codes, int64_t n, float step, float* out, bool simd = true);

}  // namespace tessera::bitflip
