// NEON (armv8.2-a + dotprod) matmul kernels on the packed 16-row groups (kernels/matmul.h).
// A q register holds 4 bytes of each of 4 rows, so sdot by lane (vdotq_laneq_s32) against one
// 16-byte half of an activation block accumulates 4 row dots at once; four registers cover the
// group. Nibbles (0..15) are valid int8, so the Q4_0 offset is removed with the activation sum;
// Q8_0 weights are stored + 128 and XOR 0x80 restores them. The float accumulation is the
// reference's: (d_w * d_x) * float(isum), added in block order, no fused multiply-add.
#include <arm_neon.h>

#include <cstring>

#include "kernels/matmul.h"

namespace llamix {
namespace neon {

namespace {

inline float32x4_t accumulate(float32x4_t acc, float32x4_t dw, const block_q8a& xb, int32x4_t dot, int offset) {
    const int32x4_t isum = vsubq_s32(dot, vdupq_n_s32(offset * xb.sum));
    const float32x4_t scale = vmulq_f32(dw, vdupq_n_f32(xb.d));
    return vaddq_f32(acc, vmulq_f32(scale, vcvtq_f32_s32(isum)));
}

inline float32x4_t scales(const uint8_t* blk, int quad) {
    uint16_t h[4];
    std::memcpy(h, blk + 8 * quad, 8);
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

// One token against the group: acc[q] holds rows 4q..4q+3.
void q4_0_token(const uint8_t* w, int64_t nb, const block_q8a* x, float32x4_t acc[4]) {
    const uint8x16_t m4 = vdupq_n_u8(0x0f);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kQ4GroupBlockBytes;
        const int8x16_t xl = vld1q_s8(x[b].qs), xh = vld1q_s8(x[b].qs + 16);
        int32x4_t s[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        const uint8_t* qs = blk + 2 * kGroupRows;
#define LLAMIX_Q4_CHUNK(c)                                                                      \
    for (int q = 0; q < 4; ++q) {                                                               \
        const uint8x16_t v = vld1q_u8(qs + 64 * (c) + 16 * q);                                  \
        s[q] = vdotq_laneq_s32(s[q], vreinterpretq_s8_u8(vandq_u8(v, m4)), xl, (c));            \
        s[q] = vdotq_laneq_s32(s[q], vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), xh, (c));           \
    }
        LLAMIX_Q4_CHUNK(0) LLAMIX_Q4_CHUNK(1) LLAMIX_Q4_CHUNK(2) LLAMIX_Q4_CHUNK(3)
#undef LLAMIX_Q4_CHUNK
        for (int q = 0; q < 4; ++q) acc[q] = accumulate(acc[q], scales(blk, q), x[b], s[q], 8);
    }
}

void q8_0_token(const uint8_t* w, int64_t nb, const block_q8a* x, float32x4_t acc[4]) {
    const uint8x16_t bias = vdupq_n_u8(0x80);
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kQ8GroupBlockBytes;
        const int8x16_t xl = vld1q_s8(x[b].qs), xh = vld1q_s8(x[b].qs + 16);
        int32x4_t s[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        const uint8_t* qs = blk + 2 * kGroupRows;
#define LLAMIX_Q8_CHUNK(c, xv, lane)                                                            \
    for (int q = 0; q < 4; ++q) {                                                               \
        const int8x16_t v = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(qs + 64 * (c) + 16 * q), bias)); \
        s[q] = vdotq_laneq_s32(s[q], v, xv, lane);                                              \
    }
        LLAMIX_Q8_CHUNK(0, xl, 0) LLAMIX_Q8_CHUNK(1, xl, 1) LLAMIX_Q8_CHUNK(2, xl, 2) LLAMIX_Q8_CHUNK(3, xl, 3)
        LLAMIX_Q8_CHUNK(4, xh, 0) LLAMIX_Q8_CHUNK(5, xh, 1) LLAMIX_Q8_CHUNK(6, xh, 2) LLAMIX_Q8_CHUNK(7, xh, 3)
#undef LLAMIX_Q8_CHUNK
        for (int q = 0; q < 4; ++q) acc[q] = accumulate(acc[q], scales(blk, q), x[b], s[q], 0);
    }
}

template <void (*Token)(const uint8_t*, int64_t, const block_q8a*, float32x4_t*)>
void run_tokens(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    for (int64_t t = 0; t < n; ++t) {
        float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
        Token(w, nb, x + t * nb, acc);
        float out[kGroupRows];
        for (int q = 0; q < 4; ++q) vst1q_f32(out + 4 * q, acc[q]);
        std::memcpy(y + t * y_stride, out, size_t(rows) * sizeof(float));
    }
}

// Float weights: 4 accumulators of 4 lanes; the tail goes through a zero-padded vector.
template <class W, class Load>
float dot_float(int64_t k, const W* w, const float* x, Load load) {
    float32x4_t acc[4] = {vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0), vdupq_n_f32(0)};
    int64_t i = 0;
    for (; i + 16 <= k; i += 16)
        for (int j = 0; j < 4; ++j) acc[j] = vfmaq_f32(acc[j], load(w + i + 4 * j), vld1q_f32(x + i + 4 * j));
    for (; i + 4 <= k; i += 4) acc[0] = vfmaq_f32(acc[0], load(w + i), vld1q_f32(x + i));
    if (i < k) {
        W wt[4] = {};
        float xt[4] = {};
        std::memcpy(wt, w + i, size_t(k - i) * sizeof(W));
        std::memcpy(xt, x + i, size_t(k - i) * sizeof(float));
        acc[1] = vfmaq_f32(acc[1], load(wt), vld1q_f32(xt));
    }
    return vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
}

}  // namespace

void gemm_q4_0(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tokens<q4_0_token>(w, nb, x, n, y, y_stride, rows);
}

void gemm_q8_0(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    run_tokens<q8_0_token>(w, nb, x, n, y, y_stride, rows);
}

float dot_f32_f32(int64_t k, const void* w, const float* x) {
    return dot_float(k, static_cast<const float*>(w), x, [](const float* p) { return vld1q_f32(p); });
}

float dot_f16_f32(int64_t k, const void* w, const float* x) {
    return dot_float(k, static_cast<const uint16_t*>(w), x,
                     [](const uint16_t* p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); });
}

float dot_bf16_f32(int64_t k, const void* w, const float* x) {
    return dot_float(k, static_cast<const uint16_t*>(w), x,
                     [](const uint16_t* p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); });
}

}  // namespace neon

// The activation quantizer stays the reference's (bit-exact rounding, untested SIMD would risk it).
void fill_matmul_neon(MatmulKernels& k) {
    k.gemm_q4_0 = neon::gemm_q4_0;
    k.gemm_q8_0 = neon::gemm_q8_0;
    k.dot_f32_f32 = neon::dot_f32_f32;
    k.dot_f16_f32 = neon::dot_f16_f32;
    k.dot_bf16_f32 = neon::dot_bf16_f32;
}

}  // namespace llamix
