// Reference kernels for the matmul driver: plain loops over the packed layout (kernels/matmul.h),
// float32 accumulation per block in block order. SIMD variants reproduce these sums bit for bit
// for block weights (same integer dot, same (d_w * d_x) * isum, same addition order).
#include <cstring>

#include "common/formats.h"
#include "common/fp16.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"
#include "kernels/ref/row_loops.h"

namespace llamix {
namespace ref {

// quantize_row_q8_0's rounding, plus the widened scale and the block sum.
void quantize_act_q8a(const float* x, block_q8a* y, int64_t k) {
    for (int64_t b = 0; b < k / QK8_0; ++b) {
        block_q8_0 blk;
        quantize_block_q8_0(x + b * QK8_0, &blk);
        y[b].d = fp16_to_fp32(blk.d);
        int32_t sum = 0;
        for (int j = 0; j < QK8_0; ++j) {
            y[b].qs[j] = blk.qs[j];
            sum += blk.qs[j];
        }
        y[b].sum = sum;
    }
}

// Packed Q4_0 group block, row r: sum_j (q_w[j] - 8) * q_x[j], then (d_w * d_x) * isum.
float term_q4_0(const uint8_t* blk, int r, const block_q8a& xb) {
    const uint8_t* qs = blk + 2 * kGroupRows;
    int32_t isum = 0;
    for (int c = 0; c < 4; ++c)
        for (int j = 0; j < 4; ++j) {
            const uint8_t q = qs[(c * kGroupRows + r) * 4 + j];
            isum += ((q & 0x0f) - 8) * xb.qs[4 * c + j];
            isum += ((q >> 4) - 8) * xb.qs[16 + 4 * c + j];
        }
    return group_half(blk, 0, r) * xb.d * float(isum);
}

// Row r of a packed Q5_0 / Q5_1 group block's quants (qs, then qh): sum_j q_w[j] * q_x[j] with
// q_w = nibble | fifth bit << 4, unsigned (0..31).
int32_t five_bit_dot(const uint8_t* qs, int r, const block_q8a& xb) {
    const uint8_t* qh = qs + 4 * kGroupRows * 4;
    int32_t isum = 0;
    for (int c = 0; c < 4; ++c)
        for (int j = 0; j < 4; ++j) {
            const uint8_t q = qs[(c * kGroupRows + r) * 4 + j], h = qh[r * 4 + j];
            isum += ((q & 0x0f) | (h >> c & 1) << 4) * xb.qs[4 * c + j];
            isum += ((q >> 4) | (h >> (c + 4) & 1) << 4) * xb.qs[16 + 4 * c + j];
        }
    return isum;
}

// Packed Q5_0 group block, row r: as term_q4_0 with 5-bit quants and an offset of 16.
float term_q5_0(const uint8_t* blk, int r, const block_q8a& xb) {
    const int32_t isum = five_bit_dot(blk + 2 * kGroupRows, r, xb) - 16 * xb.sum;
    return group_half(blk, 0, r) * xb.d * float(isum);
}

// Packed Q5_1 group block, row r: Q4_1's (d_w * d_x) * isum + m_w * (d_x * sum_x), 5-bit quants.
float term_q5_1(const uint8_t* blk, int r, const block_q8a& xb) {
    const int32_t isum = five_bit_dot(blk + 4 * kGroupRows, r, xb);
    return group_half(blk, 0, r) * xb.d * float(isum) + group_half(blk, 2 * kGroupRows, r) * (xb.d * float(xb.sum));
}

// As term_q4_0 with int8 weights stored as q + 128 in 8 chunks of 4 elements.
float term_q8_0(const uint8_t* blk, int r, const block_q8a& xb) {
    const uint8_t* qs = blk + 2 * kGroupRows;
    int32_t isum = 0;
    for (int c = 0; c < 8; ++c)
        for (int j = 0; j < 4; ++j) isum += (int(qs[(c * kGroupRows + r) * 4 + j]) - 128) * xb.qs[4 * c + j];
    return group_half(blk, 0, r) * xb.d * float(isum);
}

float dot_f16_f32(int64_t k, const void* wv, const float* x) {
    const auto* w = static_cast<const uint16_t*>(wv);
    float sum = 0.0f;
    for (int64_t i = 0; i < k; ++i) sum += fp16_to_fp32(w[i]) * x[i];
    return sum;
}

float dot_bf16_f32(int64_t k, const void* wv, const float* x) {
    const auto* w = static_cast<const uint16_t*>(wv);
    float sum = 0.0f;
    for (int64_t i = 0; i < k; ++i) sum += bf16_to_fp32(w[i]) * x[i];
    return sum;
}

float dot_f32_f32(int64_t k, const void* wv, const float* x) {
    const auto* w = static_cast<const float*>(wv);
    float sum = 0.0f;
    for (int64_t i = 0; i < k; ++i) sum += w[i] * x[i];
    return sum;
}

template <float (*Dot)(int64_t, const void*, const float*), int64_t ElemBytes>
void gemm_float(const void* w, int64_t rows, int64_t k, const float* x, int64_t n, float* y, int64_t y_stride) {
    const auto* wb = static_cast<const uint8_t*>(w);
    for (int64_t t = 0; t < n; ++t)
        for (int64_t r = 0; r < rows; ++r) y[t * y_stride + r] = Dot(k, wb + r * k * ElemBytes, x + t * k);
}

}  // namespace ref

void fill_matmul_ref(MatmulKernels& k) {
    k.quantize_act_q8a = ref::quantize_act_q8a;
    k.gemm_q4_0 = ref::gemm_groups<kQ4GroupBlockBytes, ref::term_q4_0>;
    k.gemm_q8_0 = ref::gemm_groups<kQ8GroupBlockBytes, ref::term_q8_0>;
    k.gemm_q5_0 = ref::gemm_groups<kQ5GroupBlockBytes, ref::term_q5_0>;
    k.gemm_q5_1 = ref::gemm_groups<kQ51GroupBlockBytes, ref::term_q5_1>;
    k.dot_f16_f32 = ref::dot_f16_f32;
    k.dot_bf16_f32 = ref::dot_bf16_f32;
    k.dot_f32_f32 = ref::dot_f32_f32;
    k.gemm_f16 = ref::gemm_float<ref::dot_f16_f32, 2>;
    k.gemm_bf16 = ref::gemm_float<ref::dot_bf16_f32, 2>;
    k.gemm_f32 = ref::gemm_float<ref::dot_f32_f32, 4>;
}

}  // namespace llamix
