// Reference dot products for the matmul driver: plain loops, float32 accumulation per block.
#include "common/formats.h"
#include "common/fp16.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace llamix {
namespace ref {

void quantize_row_q8_0(const float* x, void* y, int64_t k);

// sum over blocks of d_w * d_x * sum_j (q_w[j] - 8) * q_x[j]
float dot_q4_0_q8_0(int64_t k, const void* wv, const void* xv) {
    const auto* w = static_cast<const block_q4_0*>(wv);
    const auto* x = static_cast<const block_q8_0*>(xv);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK4_0; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < QK4_0 / 2; ++j) {
            isum += ((w[b].qs[j] & 0x0f) - 8) * x[b].qs[j];
            isum += ((w[b].qs[j] >> 4) - 8) * x[b].qs[j + QK4_0 / 2];
        }
        sum += fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d) * float(isum);
    }
    return sum;
}

float dot_q8_0_q8_0(int64_t k, const void* wv, const void* xv) {
    const auto* w = static_cast<const block_q8_0*>(wv);
    const auto* x = static_cast<const block_q8_0*>(xv);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK8_0; ++b) {
        int32_t isum = 0;
        for (int j = 0; j < QK8_0; ++j) isum += w[b].qs[j] * x[b].qs[j];
        sum += fp16_to_fp32(w[b].d) * fp16_to_fp32(x[b].d) * float(isum);
    }
    return sum;
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

}  // namespace ref

void fill_matmul_ref(MatmulKernels& k) {
    k.quantize_act_q8_0 = ref::quantize_row_q8_0;
    k.dot_q4_0_q8_0 = ref::dot_q4_0_q8_0;
    k.dot_q8_0_q8_0 = ref::dot_q8_0_q8_0;
    k.dot_f16_f32 = ref::dot_f16_f32;
    k.dot_bf16_f32 = ref::dot_bf16_f32;
    k.dot_f32_f32 = ref::dot_f32_f32;
}

}  // namespace llamix
