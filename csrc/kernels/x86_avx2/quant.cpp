// AVX2 (+F16C) quantizers, dequantizers and half/bfloat16 conversions. Bytes equal the reference
// (kernels/ref/quant_ref.cpp): the same float operations in the same order (no FMA), and blocks
// holding a NaN are handed to the reference so NaN payloads come out identical.
// Only intrinsics and this file's own functions are used here: an inline function shared with
// baseline code could be emitted with AVX instructions and picked by the linker for it.
#include <immintrin.h>

#include <cstring>

#include "common/formats.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace llamix {
namespace avx2 {

namespace {

inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// v where finite, 0 elsewhere (NaN, +-inf)
inline __m256 zero_non_finite(__m256 v) {
    return _mm256_and_ps(v, _mm256_cmp_ps(abs_ps(v), _mm256_set1_ps(__builtin_inff()), _CMP_LT_OQ));
}

inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

inline bool has_nan(const __m256 v[4]) {
    __m256 u = _mm256_cmp_ps(v[0], v[0], _CMP_UNORD_Q);
    for (int i = 1; i < 4; ++i) u = _mm256_or_ps(u, _mm256_cmp_ps(v[i], v[i], _CMP_UNORD_Q));
    return _mm256_movemask_ps(u) != 0;
}

inline uint16_t to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

// 16 int32 (a: elements 0..7, b: 8..15) -> 16 bytes in order (signed saturation; values fit).
inline __m128i pack_i32_i8(__m256i a, __m256i b) {
    __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xd8);
    p = _mm256_packs_epi16(p, p);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(p, 0x08));
}

// roundf (half away from zero); non-finite lanes become 0; saturate to [-127, 127] (the reference).
inline __m256i round_q8(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 away = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
    __m256 r = _mm256_add_ps(t, _mm256_and_ps(away, one));
    r = zero_non_finite(r);
    r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(r);
}

// One Q8_0 block; also returns the sum of its quants.
inline int32_t quantize_block_q8_0(const float* x, block_q8_0* y) {
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 8 * i);
    if (has_nan(v)) {
        ref::quantize_block_q8_0(x, y);
        const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y->qs));
        const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), q);
        return hsum_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)));
    }
    const __m256 m = _mm256_max_ps(_mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])), _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])));
    const float amax = hmax(m);
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y->d = to_half(d);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = round_q8(_mm256_mul_ps(v[i], vid));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y->qs), pack_i32_i8(q[0], q[1]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y->qs + 16), pack_i32_i8(q[2], q[3]));
    return hsum_epi32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
}

}  // namespace

void quantize_row_q4_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q4_0*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        __m256 v[4], a[4];
        for (int i = 0; i < 4; ++i) { v[i] = _mm256_loadu_ps(x + 8 * i); a[i] = abs_ps(v[i]); }
        if (has_nan(v)) {
            ref::quantize_block_q4_0(x, y + b);
            continue;
        }
        const float amax = hmax(_mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3])));
        // the first element of largest magnitude, with its sign (x[0] for an all-zero block)
        const __m256 va = _mm256_set1_ps(amax);
        uint32_t hits = 0;
        for (int i = 0; i < 4; ++i) hits |= uint32_t(_mm256_movemask_ps(_mm256_cmp_ps(a[i], va, _CMP_EQ_OQ))) << (8 * i);
        const float max = x[__builtin_ctz(hits)];
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = to_half(d);
        const __m256 vid = _mm256_set1_ps(id), half8 = _mm256_set1_ps(8.5f);
        __m256i q[4];
        for (int i = 0; i < 4; ++i) {
            // non-finite lanes (inf * 0 in a block holding an inf; x * inf under a subnormal scale) give 0
            const __m256 t = _mm256_max_ps(zero_non_finite(_mm256_add_ps(_mm256_mul_ps(v[i], vid), half8)), _mm256_setzero_ps());
            q[i] = _mm256_cvttps_epi32(_mm256_min_ps(t, _mm256_set1_ps(15.0f)));
        }
        const __m256i lo = _mm256_or_si256(q[0], _mm256_slli_epi32(q[2], 4));  // elements j and j + 16
        const __m256i hi = _mm256_or_si256(q[1], _mm256_slli_epi32(q[3], 4));
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xd8);
        const __m256i bytes = _mm256_permute4x64_epi64(_mm256_packus_epi16(p, p), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(y[b].qs), _mm256_castsi256_si128(bytes));
    }
}

void quantize_row_q8_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q8_0*>(out);
    for (int64_t b = 0; b < k / QK8_0; ++b) quantize_block_q8_0(x + b * QK8_0, y + b);
}

void quantize_act_q8a(const float* x, block_q8a* y, int64_t k) {
    block_q8_0 blk;
    for (int64_t b = 0; b < k / QK8_0; ++b) {
        y[b].sum = quantize_block_q8_0(x + b * QK8_0, &blk);
        y[b].d = _cvtsh_ss(blk.d);
        std::memcpy(y[b].qs, blk.qs, QK8_0);
    }
}

void dequantize_row_q4_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q4_0*>(in);
    const __m256i eight = _mm256_set1_epi32(8), m4 = _mm256_set1_epi32(0x0f);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d));
        for (int h = 0; h < 2; ++h) {
            const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x[b].qs + 8 * h)));
            const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(q, m4), eight);
            const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(q, 4), eight);
            _mm256_storeu_ps(y + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(lo)));
            _mm256_storeu_ps(y + 16 + 8 * h, _mm256_mul_ps(d, _mm256_cvtepi32_ps(hi)));
        }
    }
}

void dequantize_row_q8_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q8_0*>(in);
    for (int64_t b = 0; b < k / QK8_0; ++b, y += QK8_0) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(x[b].d));
        for (int i = 0; i < 4; ++i) {
            const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(x[b].qs + 8 * i)));
            _mm256_storeu_ps(y + 8 * i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
        }
    }
}

// Element-wise conversions, 8 at a time. The tail (< 8 elements) goes through a zero-padded
// buffer of one vector: the one place a partial vector is handled.
template <class Src, class Dst, class Convert>
void convert(const Src* x, Dst* y, int64_t n, Convert f) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) f(x + i, y + i);
    if (i < n) {
        Src in[8] = {};
        Dst out[8];
        std::memcpy(in, x + i, size_t(n - i) * sizeof(Src));
        f(in, out);
        std::memcpy(y + i, out, size_t(n - i) * sizeof(Dst));
    }
}

void f16_to_f32(const uint16_t* x, float* y, int64_t n) {
    convert(x, y, n, [](const uint16_t* s, float* d) {
        _mm256_storeu_ps(d, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s))));
    });
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
    convert(x, y, n, [](const float* s, uint16_t* d) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm256_cvtps_ph(_mm256_loadu_ps(s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    });
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
    convert(x, y, n, [](const uint16_t* s, float* d) {
        const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
        _mm256_storeu_ps(d, _mm256_castsi256_ps(_mm256_slli_epi32(u, 16)));
    });
}

// Round to nearest even; NaN stays a quiet NaN (as the reference).
void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
    convert(x, y, n, [](const float* s, uint16_t* d) {
        const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s));
        const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
        const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
        // signed compare is safe: both sides are below 2^31 after clearing the sign
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
        const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
        const __m256i v = _mm256_blendv_epi8(r, quiet, nan);
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm256_castsi256_si128(p));
    });
}

}  // namespace avx2

void fill_quant_avx2(QuantKernels& k) {
    k.quantize_row_q4_0 = avx2::quantize_row_q4_0;
    k.quantize_row_q8_0 = avx2::quantize_row_q8_0;
    k.dequantize_row_q4_0 = avx2::dequantize_row_q4_0;
    k.dequantize_row_q8_0 = avx2::dequantize_row_q8_0;
    k.f16_to_f32 = avx2::f16_to_f32;
    k.f32_to_f16 = avx2::f32_to_f16;
    k.bf16_to_f32 = avx2::bf16_to_f32;
    k.f32_to_bf16 = avx2::f32_to_bf16;
}

}  // namespace llamix
