// K-quants (Q4_K, Q5_K, Q6_K): super-blocks of 256 weights with packed sub-block scales
// (block layouts in common/formats.h; values as llama.cpp's ggml-quants.c / gguf.quants define
// them), and their error-minimising quantizers.
//
// Dot products run against activations quantized to Q8_K: one float32 scale per 256 values,
// int8 quants, and the sum of every 16 quants (so the K-quant mins and Q6_K's offset of 32 are
// removed with one multiply per sub-block). Every ISA computes the same integer sums per
// super-block and combines them in float32 in the same order, so results are bit-identical
// across ISAs.
#pragma once
#include <cstdint>

#include "common/formats.h"
#include "kernels/matmul.h"

namespace llamix {

// Activations for K-quant dot products: value = d * qs[i].
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];  // sum of qs[16 j .. 16 j + 15]
};
static_assert(sizeof(block_q8_K) == 292, "Q8_K block must be 292 bytes");

// All 8 scales then all 8 mins of a Q4_K/Q5_K 12-byte scale field as 16 bytes, with 32-bit
// operations: bytes 0..3 of each word hold four sub-blocks' fields (see kquant_scale_min).
inline void kquant_scales_mins(const uint8_t* s, uint8_t* out16) {
    uint32_t w[3];
    __builtin_memcpy(w, s, 12);
    const uint32_t low6 = 0x3f3f3f3f, low4 = 0x0f0f0f0f, low2 = 0x03030303;
    const uint32_t v[4] = {w[0] & low6,                                       // sc[0..3]
                           (w[2] & low4) | (((w[0] >> 6) & low2) << 4),       // sc[4..7]
                           w[1] & low6,                                       // m[0..3]
                           ((w[2] >> 4) & low4) | (((w[1] >> 6) & low2) << 4)};  // m[4..7]
    __builtin_memcpy(out16, v, 16);
}

// Unpack sub-block j (0..7) scale and min from a Q4_K/Q5_K 12-byte scale field.
inline void kquant_scale_min(int j, const uint8_t* s, uint8_t& sc, uint8_t& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

constexpr int kMaxTokens = 8;  // activation rows per K-quant dot call (one unpack of each super-block)

// Packed Q3_K groups come in two layouts (below): `masks` for AVX-512 (high bits as mask
// registers), `triples` for AVX2 (3-bit quants whole, in byte triples).
enum class Q3KLayout : uint8_t { masks = 0, triples = 1 };
// Packed Q5_K groups likewise: `nibbles` (the source's nibbles and fifth bits, below; AVX-512),
// `merged` for AVX2 (the 5-bit quants whole or in two pieces, below).
enum class Q5KLayout : uint8_t { nibbles = 0, merged = 1 };

// The `triples` kernels read Q8_K activations (nblocks blocks) rearranged in place: in each
// 32-element pair of sub-blocks, int16 unit m of the first sub-block then unit m of the second
// (bytes 4m .. 4m + 3 = elements 2m, 2m + 1, 16 + 2m, 16 + 2m + 1); d and bsums unchanged.
inline void q3_K_pair_activations(block_q8_K* x, int64_t nblocks) {
    for (int64_t b = 0; b < nblocks; ++b)
        for (int p = 0; p < QK_K / 32; ++p) {
            int8_t* q = x[b].qs + 32 * p;
            int8_t t[32];
            for (int m = 0; m < 8; ++m) {
                t[4 * m] = q[2 * m];
                t[4 * m + 1] = q[2 * m + 1];
                t[4 * m + 2] = q[16 + 2 * m];
                t[4 * m + 3] = q[16 + 2 * m + 1];
            }
            for (int i = 0; i < 32; ++i) q[i] = t[i];
        }
}

struct KQuantKernels {
    // blocks -> (k) float32; k is a multiple of 256. Bit-exact with gguf.quants.dequantize.
    void (*dequantize_row_q4_K)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q5_K)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q6_K)(const void* x, float* y, int64_t k) = nullptr;
    // (k) float32 -> blocks, scales and mins chosen by a weighted least-squares search.
    void (*quantize_row_q4_K)(const float* x, void* y, int64_t k) = nullptr;
    void (*quantize_row_q5_K)(const float* x, void* y, int64_t k) = nullptr;
    void (*quantize_row_q6_K)(const float* x, void* y, int64_t k) = nullptr;
    // Activation quantizer: d = amax / 127, q = round(x / d) half away from zero.
    void (*quantize_act_q8_K)(const float* x, void* y, int64_t k) = nullptr;
    // One weight row (k elements) against n <= kMaxTokens Q8_K activation rows (xq_stride bytes
    // apart): y[t * y_stride] = dot(w, row t). Each super-block is unpacked once for all n.
    using DotRows = void (*)(int64_t k, const void* w, const void* xq, int64_t xq_stride, int n, float* y,
                             int64_t y_stride);
    DotRows dot_q4_K_q8_K = nullptr;
    DotRows dot_q5_K_q8_K = nullptr;
    DotRows dot_q6_K_q8_K = nullptr;
    // Packed groups (below) of nsb super-blocks against n Q8_K activation rows (xq_stride bytes
    // apart): y[t * y_stride + r] for t < n, r < rows. Null where a variant has none: the row
    // kernels above then run on the source bytes. Bit-identical with them.
    using GroupGemm = void (*)(const uint8_t* w, int64_t nsb, const void* xq, int64_t xq_stride, int64_t n, float* y,
                               int64_t y_stride, int rows);
    GroupGemm gemm_q4_K_groups = nullptr;
    GroupGemm gemm_q5_K_groups = nullptr;
    GroupGemm gemm_q6_K_groups = nullptr;
    // Q2_K, Q3_K, IQ4_XS (kernels/lowbit.h): dequantization bit-exact with gguf.quants, and the
    // row dots against Q8_K: Q2_K a.d * (d * sumi - dmin * summ) as Q4_K; Q3_K
    // a.d * (d * (sumi - 4 * off)) with the quants taken unsigned (0..7) and off = sum_j
    // (sc_j - 32) * bsums_j; IQ4_XS a.d * (d * sumi).
    void (*dequantize_row_q2_K)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q3_K)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_iq4_xs)(const void* x, float* y, int64_t k) = nullptr;
    DotRows dot_q2_K_q8_K = nullptr;
    DotRows dot_q3_K_q8_K = nullptr;
    DotRows dot_iq4_xs_q8_K = nullptr;
    // Packed groups of these (layouts below), where a variant has a kernel for them.
    GroupGemm gemm_q2_K_groups = nullptr;
    GroupGemm gemm_q3_K_groups = nullptr;
    GroupGemm gemm_iq4_xs_groups = nullptr;
    // Decode of two packed groups at once (MatmulKernels::GemvPair; x: Q8_K bytes, nb = k / 256).
    MatmulKernels::GemvPair gemv_pair_q4_K = nullptr;
    MatmulKernels::GemvPair gemv_pair_q5_K = nullptr;
    MatmulKernels::GemvPair gemv_pair_q6_K = nullptr;
    MatmulKernels::GemvPair gemv_pair_q2_K = nullptr;
    MatmulKernels::GemvPair gemv_pair_q3_K = nullptr;
    MatmulKernels::GemvPair gemv_pair_iq4_xs = nullptr;
    // The packed Q3_K layout the group kernels above read (below): each ISA's own, chosen when a
    // weight is packed; a weight packed for another layout is multiplied from its source bytes.
    Q3KLayout q3_K_layout = Q3KLayout::masks;
    Q5KLayout q5_K_layout = Q5KLayout::nibbles;  // the same for Q5_K
};

// Packed Q2_K / Q3_K / IQ4_XS groups: kGroupRows rows per super-block, the source's bytes
// rearranged (same size) so that one 512-bit vector holds 4 bytes of each of 16 rows.
// Q2_K, with v(e) the 2-bit quant of element e:
//   uint16_t d[16], dmin[16];
//   uint32_t scales[4][16];       word i of row r's scales[16] (sub-block 4i + b in byte b)
//   uint8_t  qs[16][16][4];       sub-block j, row r, byte i: bits 2s, 2s + 1 = v(16 j + 4 s + i)
// Q3_K, with h(e) its hmask bit:
//   uint16_t d[16];
//   uint32_t scales[3][16];       word i of row r's 12-byte scale field
//   uint8_t  qs[16][16][4];       as Q2_K
//   uint64_t hmask[16][4];        sub-block j, field s: bit 4 r + i = h(16 j + 4 s + i) of row r
//                                 (a byte mask over the qs vector of j: loaded straight into
//                                 an AVX-512 mask register)
// Q3_K, AVX2 (Q3KLayout::triples), with u(e) = v(e) + 4 h(e) (0..7) and, for pair p (sub-blocks
// 2p, 2p + 1), u_m = u(32 p + 16 (i / 2) + 2 m + i % 2) in byte i of row r (m < 8: bytes 0, 1
// sub-block 2p's elements 2m, 2m + 1, bytes 2, 3 sub-block 2p + 1's, so that each row's two int16
// pmaddubsw sums are the two sub-blocks'; the kernels read Q8_K activations whose 32-element pairs
// are interleaved to match: q3_K_pair_activations):
//   uint16_t d[16];
//   uint32_t scales[3][16];       as above
//   uint8_t  q3[8][2][3][32];     pair p, half h, vector c, byte 4 (r - 8h) + i:
//                                 c = 0: u_0 | u_1 << 3 | (u_6 & 3) << 6
//                                 c = 1: u_2 | u_3 << 3 | (u_7 & 3) << 6
//                                 c = 2: u_4 | u_5 << 3 | (u_6 >> 2) << 6 | (u_7 >> 2) << 7
//                                 (each u_m out of them with 1-5 AVX2 operations)
// IQ4_XS:
//   uint16_t d[16], scales_h[16];
//   uint32_t scales_l[16];
//   uint8_t  qs[8][4][16][4];     sub-block j, chunk c, row r: row r's qs[16 j + 4 c .. + 3]
constexpr int64_t kQ2KGroupBlockBytes = kGroupRows * int64_t(sizeof(block_q2_K));
constexpr int64_t kQ3KGroupBlockBytes = kGroupRows * int64_t(sizeof(block_q3_K));
constexpr int64_t kIQ4XSGroupBlockBytes = kGroupRows * int64_t(sizeof(block_iq4_xs));

// Packed K-quant groups: kGroupRows (16) rows interleaved super-block by super-block, the
// source's bytes rearranged (same size) so that one 512-bit vector holds 4 bytes of each of 16
// rows, as the Q4_0 groups of kernels/matmul.h. Per super-block:
//   uint16_t d[16], dmin[16];
//   uint32_t scales[3][16];       word i of row r's 12-byte scale field
//   uint8_t  qs[4][8][16][4];     pair p, chunk c, row r: row r's qs[32p + 4c .. 32p + 4c + 3]:
//                                 low nibbles are sub-block 2p's elements 4c..4c+3, high
//                                 nibbles sub-block 2p + 1's
//   uint8_t  qh[8][16][4];        Q5_K only: chunk c, row r: row r's qh[4c .. 4c + 3]
// Q5_K, AVX2 (Q5KLayout::merged): d, dmin and scales as above, then with L_k / H_k the 5-bit
// quants of row r's elements 4c + i of sub-blocks 2p / 2p + 1 (c = 4 q + k: chunk k of quad q):
//   uint8_t  q5[4][2][2][5][32];  pair p, quad q, half h, vector v, byte 4 (r - 8h) + i:
//                                 v = 0..2: L_v | (H_v & 7) << 5
//                                 v = 3:    L_3 | (H_0 >> 3) << 5 | (H_2 >> 3 & 1) << 7
//                                 v = 4:    H_3 | (H_1 >> 3) << 5 | (H_2 >> 4) << 7
//                                 (L_k and H_3 by one and, H_0 / H_1 in 5 operations, H_2 in 8)
// Packed Q6_K groups, with v(e) the 6-bit quant of element e (0..255) and chunk c its elements
// 4c..4c+3:
//   uint16_t d[16];
//   int8_t   scales[8][16][2];    q, row r: row r's scales[2q], scales[2q + 1]
//   uint8_t  ql[32][16][4];       chunk c < 32, row r, byte i: low nibble = v(4c + i) & 15, high
//                                 nibble = v(128 + 4c + i) & 15
//   uint8_t  qh[16][16][4];       h, row r, byte i: 2-bit fields v >> 4 of elements 8h + i,
//                                 128 + 8h + i, 8h + 4 + i, 128 + 8h + 4 + i (from bit 0 up)
constexpr int64_t kQ4KGroupBlockBytes = kGroupRows * int64_t(sizeof(block_q4_K));
constexpr int64_t kQ5KGroupBlockBytes = kGroupRows * int64_t(sizeof(block_q5_K));
constexpr int64_t kQ6KGroupBlockBytes = kGroupRows * int64_t(sizeof(block_q6_K));

void fill_kquant_ref(KQuantKernels& k);
namespace ref {
void quantize_act_q8_K(const float* x, void* y, int64_t k);  // SIMD variants hand it blocks holding a NaN
}  // namespace ref
void fill_kquant_avx2(KQuantKernels& k);
void fill_kquant_avx512(KQuantKernels& k);
void fill_kquant_neon(KQuantKernels& k);

}  // namespace llamix
