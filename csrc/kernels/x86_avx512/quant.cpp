// AVX-512 quantizers, dequantizers and half/bfloat16 conversions. Bytes equal the reference
// (kernels/ref/quant_ref.cpp): the same float operations in the same order (no FMA), and blocks
// holding a NaN are handed to the reference so NaN payloads come out identical.
// Only intrinsics and this file's own functions are used here: an inline function shared with
// baseline code could be emitted with AVX-512 instructions and picked by the linker for it.
// GCC 12 warns inside its own headers about _mm512_undefined_*() (GCC bug 105593), e.g. in the
// _mm512_reduce_* helpers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstring>

#include "common/formats.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace llamix {
namespace avx512 {

namespace {

inline bool has_nan(__m512 a, __m512 b) {
    return (_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q)) != 0;
}

inline __m512 abs_ps(__m512 v) { return _mm512_abs_ps(v); }

inline __mmask16 finite(__m512 v) { return _mm512_cmp_ps_mask(abs_ps(v), _mm512_set1_ps(__builtin_inff()), _CMP_LT_OQ); }

inline uint16_t to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

// roundf (half away from zero): truncate, then step away from zero when the (exact) remainder
// is at least one half. Non-finite lanes become 0, then saturate to [-127, 127] (the reference).
inline __m512i round_q8(__m512 v) {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 frac = abs_ps(_mm512_sub_ps(v, t));
    const __mmask16 away = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f), _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
    __m512 r = _mm512_mask_add_ps(t, away, t, one);
    r = _mm512_maskz_mov_ps(finite(r), r);
    r = _mm512_min_ps(_mm512_max_ps(r, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_cvtps_epi32(r);
}

// One Q8_0 block; returns the quants as two vectors of 16 int32 (for sums) via q0/q1.
inline void quantize_block_q8_0(const float* x, block_q8_0* y, __m512i& q0, __m512i& q1) {
    const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    if (has_nan(x0, x1)) {
        ref::quantize_block_q8_0(x, y);
        q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y->qs)));
        q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y->qs + 16)));
        return;
    }
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(abs_ps(x0), abs_ps(x1)));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = to_half(d);
    const __m512 vid = _mm512_set1_ps(id);
    q0 = round_q8(_mm512_mul_ps(x0, vid));
    q1 = round_q8(_mm512_mul_ps(x1, vid));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y->qs), _mm512_cvtepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y->qs + 16), _mm512_cvtepi32_epi8(q1));
}

}  // namespace

void quantize_row_q4_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q4_0*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        if (has_nan(x0, x1)) {
            ref::quantize_block_q4_0(x, y + b);
            continue;
        }
        const __m512 a0 = abs_ps(x0), a1 = abs_ps(x1);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(a0, a1));
        // the first element of largest magnitude, with its sign (x[0] for an all-zero block)
        const __m512 va = _mm512_set1_ps(amax);
        const uint32_t hits = uint32_t(_mm512_cmp_ps_mask(a0, va, _CMP_EQ_OQ)) |
                              (uint32_t(_mm512_cmp_ps_mask(a1, va, _CMP_EQ_OQ)) << 16);
        const float max = x[__builtin_ctz(hits)];
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = to_half(d);
        const __m512 vid = _mm512_set1_ps(id), half8 = _mm512_set1_ps(8.5f);
        const __m512 zero = _mm512_setzero_ps(), fifteen = _mm512_set1_ps(15.0f);
        // non-finite lanes (inf * 0 in a block holding an inf; x * inf under a subnormal scale) give 0
        __m512 v0 = _mm512_add_ps(_mm512_mul_ps(x0, vid), half8), v1 = _mm512_add_ps(_mm512_mul_ps(x1, vid), half8);
        v0 = _mm512_min_ps(_mm512_max_ps(_mm512_maskz_mov_ps(finite(v0), v0), zero), fifteen);
        v1 = _mm512_min_ps(_mm512_max_ps(_mm512_maskz_mov_ps(finite(v1), v1), zero), fifteen);
        const __m512i q = _mm512_or_si512(_mm512_cvttps_epi32(v0), _mm512_slli_epi32(_mm512_cvttps_epi32(v1), 4));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs), _mm512_cvtepi32_epi8(q));
    }
}

void quantize_row_q8_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q8_0*>(out);
    __m512i q0, q1;
    for (int64_t b = 0; b < k / QK8_0; ++b) quantize_block_q8_0(x + b * QK8_0, y + b, q0, q1);
}

void dequantize_row_q4_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q4_0*>(in);
    const __m512i eight = _mm512_set1_epi32(8), m4 = _mm512_set1_epi32(0x0f);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(x[b].d));
        const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs)));
        const __m512i lo = _mm512_sub_epi32(_mm512_and_si512(q, m4), eight);
        const __m512i hi = _mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight);
        _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)));
    }
}

void dequantize_row_q8_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q8_0*>(in);
    for (int64_t b = 0; b < k / QK8_0; ++b, y += QK8_0) {
        const __m512 d = _mm512_set1_ps(_cvtsh_ss(x[b].d));
        const __m512i q0 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs)));
        const __m512i q1 = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x[b].qs + 16)));
        _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(q0)));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(q1)));
    }
}

// Element-wise conversions, 16 at a time; the tail uses masked loads and stores.
inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1); }

void f16_to_f32(const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x + i)));
    }
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m256i h = _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm256_mask_storeu_epi16(y + i, m, h);
    }
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512i u = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x + i)), 16);
        _mm512_mask_storeu_ps(y + i, m, _mm512_castsi512_ps(u));
    }
}

// Round to nearest even; NaN stays a quiet NaN (as the reference).
void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(m, x + i));
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, abs_mask), inf);
        r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
        _mm256_mask_storeu_epi16(y + i, m, _mm512_cvtepi32_epi16(r));
    }
}

// The matmul's activation quantizer: quantize_row_q8_0's bytes plus float scale and block sum.
void quantize_act_q8a(const float* x, block_q8a* y, int64_t k) {
    block_q8_0 blk;
    __m512i q0, q1;
    for (int64_t b = 0; b < k / QK8_0; ++b) {
        quantize_block_q8_0(x + b * QK8_0, &blk, q0, q1);
        y[b].d = _cvtsh_ss(blk.d);
        y[b].sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        std::memcpy(y[b].qs, blk.qs, QK8_0);
    }
}

}  // namespace avx512

void fill_quant_avx512(QuantKernels& k) {
    k.quantize_row_q4_0 = avx512::quantize_row_q4_0;
    k.quantize_row_q8_0 = avx512::quantize_row_q8_0;
    k.dequantize_row_q4_0 = avx512::dequantize_row_q4_0;
    k.dequantize_row_q8_0 = avx512::dequantize_row_q8_0;
    k.f16_to_f32 = avx512::f16_to_f32;
    k.f32_to_f16 = avx512::f32_to_f16;
    k.bf16_to_f32 = avx512::bf16_to_f32;
    k.f32_to_bf16 = avx512::f32_to_bf16;
}

}  // namespace llamix
