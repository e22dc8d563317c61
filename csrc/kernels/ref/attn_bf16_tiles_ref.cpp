// Reference bf16 attention products (kernels/ops.h, attn_bf16_*): plain loops over the
// TDPBF16PS block of tdpbf16.h (THE SPEC for the emulations and the AMX kernels), and the packing.
#include <algorithm>

#include "common/fp16.h"
#include "kernels/ops.h"
#include "kernels/ref/tdpbf16.h"

namespace llamix {
namespace ref {

void attn_bf16_scores(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp, float* s) {
    for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t j = 0; j < kAttnTile; ++j) {
            float acc = 0.0f;
            for (int64_t b = 0; b < hd32 / 32; ++b)
                acc = tdp_block(acc, q + r * hd32 + 32 * b, kp + (b * 4 + j / 16) * 512 + 2 * (j % 16));
            s[r * kAttnTile + j] = acc;
        }
}

void attn_bf16_accumulate(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp, const float* alpha,
                          float* o) {
    const int64_t col_blocks = hd32 / 16;
    for (int64_t r = 0; r < n_rows; ++r)
        for (int64_t c = 0; c < hd32; ++c) {
            float acc = o[r * hd32 + c];
            if (alpha[r] != 1.0f) acc *= alpha[r];
            for (int64_t b = 0; b < 2; ++b)
                acc = tdp_block(acc, p + r * kAttnTile + 32 * b, vp + (b * col_blocks + c / 16) * 512 + 2 * (c % 16));
            o[r * hd32 + c] = acc;
        }
}

void attn_bf16_pack_keys(const float* kt, int64_t head_dim, uint16_t* kp) {
    const int64_t hd32 = (head_dim + 31) / 32 * 32;
    for (int64_t d = 0; d < hd32; ++d)
        for (int64_t j = 0; j < kAttnTile; ++j)
            kp[(d / 32 * 4 + j / 16) * 512 + d % 32 / 2 * 32 + 2 * (j % 16) + d % 2] =
                d < head_dim ? fp32_to_bf16(kt[d * kAttnTile + j]) : 0;
}

void attn_bf16_pack_keys_f16(const uint16_t* kt, int64_t head_dim, uint16_t* kp) {
    const int64_t hd32 = (head_dim + 31) / 32 * 32;
    for (int64_t d = 0; d < hd32; ++d)
        for (int64_t j = 0; j < kAttnTile; ++j)
            kp[(d / 32 * 4 + j / 16) * 512 + d % 32 / 2 * 32 + 2 * (j % 16) + d % 2] =
                d < head_dim ? fp32_to_bf16(fp16_to_fp32(kt[d * kAttnTile + j])) : 0;
}

void attn_bf16_pack_values(const float* v, int64_t head_dim, uint16_t* vp) {
    const int64_t hd32 = (head_dim + 31) / 32 * 32, col_blocks = hd32 / 16;
    for (int64_t j = 0; j < kAttnTile; ++j)
        for (int64_t c = 0; c < hd32; ++c)
            vp[(j / 32 * col_blocks + c / 16) * 512 + j % 32 / 2 * 32 + 2 * (c % 16) + j % 2] =
                c < head_dim ? fp32_to_bf16(v[j * head_dim + c]) : 0;
}

void attn_bf16_pack_values_f16(const uint16_t* v, int64_t head_dim, uint16_t* vp) {
    const int64_t hd32 = (head_dim + 31) / 32 * 32, col_blocks = hd32 / 16;
    for (int64_t j = 0; j < kAttnTile; ++j)
        for (int64_t c = 0; c < hd32; ++c)
            vp[(j / 32 * col_blocks + c / 16) * 512 + j % 32 / 2 * 32 + 2 * (c % 16) + j % 2] =
                c < head_dim ? fp32_to_bf16(fp16_to_fp32(v[j * head_dim + c])) : 0;
}

}  // namespace ref

void fill_attn_bf16_tiles_ref(OpsKernels& k) {
    k.attn_bf16_scores = ref::attn_bf16_scores;
    k.attn_bf16_accumulate = ref::attn_bf16_accumulate;
    k.attn_bf16_pack_keys = ref::attn_bf16_pack_keys;
    k.attn_bf16_pack_keys_f16 = ref::attn_bf16_pack_keys_f16;
    k.attn_bf16_pack_values = ref::attn_bf16_pack_values;
    k.attn_bf16_pack_values_f16 = ref::attn_bf16_pack_values_f16;
}

}  // namespace llamix
