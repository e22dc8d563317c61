// Reference (scalar) quantizers: THE SPEC for the block formats. Bytes equal llama.cpp's
// reference quantizers (and the gguf package's numpy port) for the same float32 input.
#include <cmath>

#include "common/formats.h"
#include "common/fp16.h"
#include "kernels/quant.h"

namespace llamix {
namespace ref {

// Truncating float -> nibble conversion without UB. Non-finite values (NaN, and +-inf when a
// subnormal scale makes 1/d overflow) give 0, as llama.cpp's (int8_t) cast does on x86 and the
// gguf package's numpy cast does.
static inline uint8_t q4_from(float v) {
    if (!std::isfinite(v)) return 0;
    if (v >= 15.0f) return 15;
    if (v > 0.0f) return static_cast<uint8_t>(v);
    return 0;
}

void quantize_block_q4_0(const float* x, block_q4_0* y) {
    // the element of largest magnitude, with its sign (the first one on ties, so x[0] for an
    // all-zero block, as gguf's argmax picks); a NaN counts as the largest, as numpy's argmax
    // does, so it poisons the block instead of vanishing
    float amax = std::fabs(x[0]), max = x[0];
    for (int j = 1; j < QK4_0; ++j) {
        const bool first_nan = std::isnan(x[j]) && !std::isnan(amax);
        if (amax < std::fabs(x[j]) || first_nan) { amax = std::fabs(x[j]); max = x[j]; }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = fp32_to_fp16(d);
    for (int j = 0; j < QK4_0 / 2; ++j) {
        const uint8_t lo = q4_from(x[j] * id + 8.5f);
        const uint8_t hi = q4_from(x[j + QK4_0 / 2] * id + 8.5f);
        y->qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
}

void quantize_row_q4_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q4_0*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b) quantize_block_q4_0(x + b * QK4_0, y + b);
}

// roundf (half away from zero) into int8, saturating; non-finite values give 0 (as q4_from).
static inline int8_t q8_from(float v) {
    const float r = std::round(v);
    if (!std::isfinite(r)) return 0;
    if (r >= 127.0f) return 127;
    if (r <= -127.0f) return -127;
    return static_cast<int8_t>(r);
}

void quantize_block_q8_0(const float* x, block_q8_0* y) {
    float amax = 0.0f;
    // NaN propagates into the scale (numpy's max does the same)
    for (int j = 0; j < QK8_0; ++j) {
        const float a = std::fabs(x[j]);
        if (a > amax || std::isnan(a)) amax = std::isnan(amax) ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = fp32_to_fp16(d);
    for (int j = 0; j < QK8_0; ++j) y->qs[j] = q8_from(x[j] * id);
}

void quantize_row_q8_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q8_0*>(out);
    for (int64_t b = 0; b < k / QK8_0; ++b) quantize_block_q8_0(x + b * QK8_0, y + b);
}

void dequantize_row_q4_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q4_0*>(in);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = d * float((x[b].qs[j] & 0x0f) - 8);
            y[j + QK4_0 / 2] = d * float((x[b].qs[j] >> 4) - 8);
        }
    }
}

void dequantize_row_q8_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q8_0*>(in);
    for (int64_t b = 0; b < k / QK8_0; ++b, y += QK8_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK8_0; ++j) y[j] = d * float(x[b].qs[j]);
    }
}

void f16_to_f32(const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = fp16_to_fp32(x[i]);
}
void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_fp32(x[i]);
}
void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_fp16(x[i]);
}
void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] = fp32_to_bf16(x[i]);
}

}  // namespace ref

void fill_quant_ref(QuantKernels& k) {
    k.quantize_row_q4_0 = ref::quantize_row_q4_0;
    k.quantize_row_q8_0 = ref::quantize_row_q8_0;
    k.dequantize_row_q4_0 = ref::dequantize_row_q4_0;
    k.dequantize_row_q8_0 = ref::dequantize_row_q8_0;
    k.f16_to_f32 = ref::f16_to_f32;
    k.bf16_to_f32 = ref::bf16_to_f32;
    k.f32_to_f16 = ref::f32_to_f16;
    k.f32_to_bf16 = ref::f32_to_bf16;
}

}  // namespace llamix
