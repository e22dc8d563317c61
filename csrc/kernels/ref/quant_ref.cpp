// Reference (scalar) quantizers: THE SPEC for the block formats (Q4_0, Q8_0, Q5_0, Q5_1, and Q4_0
// with a searched scale). Bytes equal llama.cpp's reference quantizers (and the gguf package's
// numpy port) for the same float32 input, except Q4_0-mse, whose scale search is our own.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/formats.h"
#include "common/fp16.h"
#include "kernels/quant.h"
#include "kernels/ref/scale_search.h"

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

// Q4_0 with a searched scale. Candidates: the max-abs rule itself (so no block gets worse than
// plain Q4_0) and least-squares refits of the quants given by a grid of scales; each is judged
// with its fp16-rounded scale, as a reader will see it.
void quantize_row_q4_0_mse(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q4_0*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; ++j)
            if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
        auto err_of = [&](uint16_t dh16, const float* id_opt) {
            const float dh = fp16_to_fp32(dh16);
            const float id = id_opt ? *id_opt : (dh != 0.0f ? 1.0f / dh : 0.0f);
            double e = 0;
            for (int j = 0; j < QK4_0; ++j) {
                const int q = clampi(id_opt ? int(std::min(15.0f, std::max(0.0f, x[j] * id + 8.5f))) - 8
                                            : nearest_int(x[j] * id), -8, 7);
                const double r = double(dh) * q - x[j];
                e += r * r;
            }
            return e;
        };
        // plain Q4_0: the quants use the float32 1/d, as the max-abs rule defines them
        const float d0 = max / -8.0f;
        const float id0 = d0 != 0.0f ? 1.0f / d0 : 0.0f;
        uint16_t best_d = fp32_to_fp16(d0);
        bool best_plain = true;
        double best_err = err_of(best_d, &id0);
        if (amax > 0.0f && std::isfinite(amax)) {
            const float s = fit_scale_sym(x, QK4_0, 8, 7);
            for (const uint16_t cand : {fp32_to_fp16(s), fp32_to_fp16(-s)}) {
                const double e = err_of(cand, nullptr);
                if (e < best_err) { best_err = e; best_d = cand; best_plain = false; }
            }
        }
        y[b].d = best_d;
        const float dh = fp16_to_fp32(best_d);
        const float id = best_plain ? id0 : (dh != 0.0f ? 1.0f / dh : 0.0f);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            int lo, hi;
            if (best_plain) {
                lo = int(std::min(15.0f, std::max(0.0f, x[j] * id + 8.5f)));
                hi = int(std::min(15.0f, std::max(0.0f, x[j + 16] * id + 8.5f)));
            } else {
                lo = clampi(nearest_int(x[j] * id), -8, 7) + 8;
                hi = clampi(nearest_int(x[j + 16] * id), -8, 7) + 8;
            }
            y[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
        }
    }
}

// Truncating float -> 5-bit conversion (llama.cpp's (int8_t)(v) then MIN(31, .)), NaN-safe.
static inline uint8_t q5_from(float v) {
    if (v >= 31.0f) return 31;
    if (v > 0.0f) return static_cast<uint8_t>(v);
    return 0;
}

static void pack_q5(const uint8_t* q, uint8_t* qh, uint8_t* qs) {
    uint32_t h = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        h |= uint32_t(q[j] >> 4) << j;
        h |= uint32_t(q[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(qh, &h, 4);
}

static inline int unpack_q5(const uint8_t* qh, const uint8_t* qs, int j) {
    uint32_t h;
    std::memcpy(&h, qh, 4);
    const int lo = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
    return lo | int((h >> j) & 1) << 4;
}

// Q5_0: d = max / -16 with max the element of largest magnitude, with its sign (first on ties).
void quantize_row_q5_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q5_0*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; ++j) {
            const bool first_nan = std::isnan(x[j]) && !std::isnan(amax);
            if (amax < std::fabs(x[j]) || first_nan) { amax = std::fabs(x[j]); max = x[j]; }
        }
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        uint8_t q[QK4_0];
        for (int j = 0; j < QK4_0; ++j) q[j] = q5_from(x[j] * id + 16.5f);
        pack_q5(q, y[b].qh, y[b].qs);
    }
}

// Q5_1: d = (max - min) / 31, offset min.
void quantize_row_q5_1(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q5_1*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        float min = x[0], max = x[0];
        for (int j = 1; j < QK4_0; ++j) { min = std::min(min, x[j]); max = std::max(max, x[j]); }
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(min);
        uint8_t q[QK4_0];
        for (int j = 0; j < QK4_0; ++j) q[j] = q5_from((x[j] - min) * id + 0.5f);
        pack_q5(q, y[b].qh, y[b].qs);
    }
}

void dequantize_row_q5_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q5_0*>(in);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK4_0; ++j) y[j] = d * float(unpack_q5(x[b].qh, x[b].qs, j) - 16);
    }
}

void dequantize_row_q5_1(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q5_1*>(in);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        for (int j = 0; j < QK4_0; ++j) y[j] = d * float(unpack_q5(x[b].qh, x[b].qs, j)) + m;
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
    k.quantize_row_q4_0_mse = ref::quantize_row_q4_0_mse;
    k.quantize_row_q5_0 = ref::quantize_row_q5_0;
    k.quantize_row_q5_1 = ref::quantize_row_q5_1;
    k.dequantize_row_q5_0 = ref::dequantize_row_q5_0;
    k.dequantize_row_q5_1 = ref::dequantize_row_q5_1;
}

}  // namespace llamix
