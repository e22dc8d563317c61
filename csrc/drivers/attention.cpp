// Table-level fallbacks for the optional grouped-attention entries of the ops table.
#include "drivers/attention.h"

namespace llamix {

void attention_group(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const float* k,
                     const float* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                     int64_t out_stride, float* scratch) {
    if (K.attention_group) {
        K.attention_group(q, q_stride, n_q, k, v, stride, n_keys, head_dim, scale, out, out_stride, scratch);
        return;
    }
    for (int64_t h = 0; h < n_q; ++h)
        K.attention(q + h * q_stride, k, v, stride, n_keys, head_dim, scale, out + h * out_stride, scratch);
}

void attention_group_f16(const OpsKernels& K, const float* q, int64_t q_stride, int64_t n_q, const uint16_t* k,
                         const uint16_t* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out,
                         int64_t out_stride, float* scratch) {
    if (K.attention_group_f16) {
        K.attention_group_f16(q, q_stride, n_q, k, v, stride, n_keys, head_dim, scale, out, out_stride, scratch);
        return;
    }
    for (int64_t h = 0; h < n_q; ++h)
        K.attention_f16(q + h * q_stride, k, v, stride, n_keys, head_dim, scale, out + h * out_stride, scratch);
}

}  // namespace llamix
