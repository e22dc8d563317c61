// y = x @ W.T with W in a block format (Q4_0, Q5_0, Q8_0, ...) or F16/BF16/F32 and x float32.
//
// Block weights are repacked once (prepare_weight) into groups of kGroupRows rows interleaved
// block by block, the layout every ISA's kernel reads (so a prepared weight stays valid when the
// variant changes). Activations are quantized on the fly to Q8_0 (same rounding as
// quantize_row_q8_0) and carry their block sums, so unsigned weights (nibbles 0..15, or int8 + 128)
// work directly with vpdpbusd / pmaddubsw; one multiply by the sum removes the offset.
// The threaded drivers (drivers/matmul.h) are shared by every ISA.
#pragma once
#include <cstdint>

#include "common/formats.h"

namespace llamix {

// Rows per interleaved group: one 512-bit vector holds 4 bytes of each of 16 rows.
constexpr int kGroupRows = 16;

// A Q8_0 activation block with its scale already widened to float32 (exactly fp16(d)) and the
// sum of its 32 quants.
struct block_q8a {
    float d;
    int32_t sum;
    int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8a) == 40, "activation block must be 40 bytes");

// Packed Q4_0 group, per block b (kGroupRows rows):
//   uint16_t d[16];            fp16 scales of the 16 rows
//   uint8_t  qs[4][16][4];     chunk c, row r: bytes 4c..4c+3 of row r's qs (nibbles unchanged)
// -> 288 bytes, the same as the 16 source blocks. Low nibbles of chunk c are elements 4c..4c+3,
// high nibbles elements 16+4c..16+4c+3.
constexpr int64_t kQ4GroupBlockBytes = kGroupRows * 2 + 4 * kGroupRows * 4;  // 288
// Packed Q8_0 group, per block b:
//   uint16_t d[16];
//   uint8_t  qs[8][16][4];     chunk c, row r: elements 4c..4c+3 of row r, stored as q + 128
// -> 544 bytes.
constexpr int64_t kQ8GroupBlockBytes = kGroupRows * 2 + 8 * kGroupRows * 4;   // 544
// Packed Q5_0 group, per block b: uint16_t d[16]; qs as Q4_0 (the low 4 bits); then
//   uint8_t  qh[16][4];        row r, byte j: bit c is the fifth bit of the element that chunk c
//                              (low nibbles c < 4, high nibbles c >= 4) holds at byte j of row r
// -> 352 bytes, the same as the 16 source blocks. Values are d * (q - 16), q = nibble | bit << 4.
constexpr int64_t kQ5GroupBlockBytes = kGroupRows * 2 + 4 * kGroupRows * 4 + kGroupRows * 4;  // 352
// Packed Q4_1 group, per block b: uint16_t d[16], m[16]; then qs as Q4_0 -> 320 bytes.
// Packed IQ4_NL groups are laid out as Q4_0's (the nibbles index kvalues_iq4nl).
constexpr int64_t kQ41GroupBlockBytes = kGroupRows * 4 + 4 * kGroupRows * 4;  // 320
// Packed Q5_1 group, per block b: uint16_t d[16], m[16]; then qs and qh as Q5_0's -> 384 bytes,
// the same as the 16 source blocks. Values are d * q + m, q = nibble | bit << 4 (0..31).
constexpr int64_t kQ51GroupBlockBytes = kGroupRows * 4 + 4 * kGroupRows * 4 + kGroupRows * 4;  // 384

struct MatmulKernels {
    // x: (k) float32 -> (k / 32) activation blocks; the quants and fp16 scale equal
    // quantize_row_q8_0's bytes on every ISA.
    void (*quantize_act_q8a)(const float* x, block_q8a* y, int64_t k) = nullptr;
    // One packed group (nb blocks of kGroupRows rows) against n activation rows (row stride nb
    // blocks): y[t * y_stride + r] for t < n, r < rows (rows <= kGroupRows; the rest is padding).
    // Per row and token: sum over blocks, in block order, of (d_w * d_x) * float(integer dot).
    void (*gemm_q4_0)(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y,
                      int64_t y_stride, int rows) = nullptr;
    void (*gemm_q8_0)(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y,
                      int64_t y_stride, int rows) = nullptr;
    void (*gemm_q5_0)(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y,
                      int64_t y_stride, int rows) = nullptr;
    // Float weights: one weight row (k elements) against one float32 activation row.
    float (*dot_f16_f32)(int64_t k, const void* w, const float* x) = nullptr;
    float (*dot_bf16_f32)(int64_t k, const void* w, const float* x) = nullptr;
    float (*dot_f32_f32)(int64_t k, const void* w, const float* x) = nullptr;
    // Float weights, many at once: `rows` consecutive weight rows (k elements each) against n
    // activation rows (k apart): y[t * y_stride + r]. Float32 accumulation, order per ISA.
    using FloatGemm = void (*)(const void* w, int64_t rows, int64_t k, const float* x, int64_t n, float* y,
                               int64_t y_stride);
    FloatGemm gemm_f16 = nullptr;
    FloatGemm gemm_bf16 = nullptr;
    FloatGemm gemm_f32 = nullptr;
    // Q4_1: per block += (d_w * d_x) * float(sum q_w * q_x) + m_w * (d_x * float(sum_x)).
    // IQ4_NL: as Q4_0 with kvalues_iq4nl[q] for q - 8. (kernels/lowbit.h)
    void (*gemm_q4_1)(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y,
                      int64_t y_stride, int rows) = nullptr;
    void (*gemm_iq4_nl)(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y,
                        int64_t y_stride, int rows) = nullptr;
    // Q5_1: as Q4_1 with q = nibble | fifth bit << 4 (0..31).
    void (*gemm_q5_1)(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y,
                      int64_t y_stride, int rows) = nullptr;
    // Decode (one token) of two packed groups w0, w1 of one weight at once, their blocks read
    // alternately: two memory streams per core instead of one. x: nb activation blocks
    // (block_q8a, or Q8_K bytes for the K-quant family); y0, y1 as gemm's y for n = 1. The same
    // values as two gemm calls. Null where an ISA has none (the driver then runs single groups).
    using GemvPair = void (*)(const uint8_t* w0, const uint8_t* w1, int64_t nb, const void* x, float* y0, float* y1,
                              int rows0, int rows1);
    GemvPair gemv_pair_q4_0 = nullptr;
    GemvPair gemv_pair_q8_0 = nullptr;
    GemvPair gemv_pair_q5_0 = nullptr;
    GemvPair gemv_pair_q5_1 = nullptr;
    GemvPair gemv_pair_q4_1 = nullptr;
    GemvPair gemv_pair_iq4_nl = nullptr;
};

void fill_matmul_ref(MatmulKernels& k);
void fill_matmul_avx2(MatmulKernels& k);
void fill_matmul_avx512(MatmulKernels& k);
void fill_matmul_neon(MatmulKernels& k);

}  // namespace llamix
