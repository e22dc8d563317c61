// AVX-512 (VNNI) K-quant dot products against Q8_K activations: 64 quants per vpdpbusd, the
// sub-block scales applied to the int32 partial sums. Integer sums per super-block are exact
// and combined in float32 as the reference does: bit-identical to kernels/ref/kquant_ref.cpp.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as a mask source and trip
// -Wmaybe-uninitialized (GCC bug 105593, fixed in 13): a false positive, silenced here only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "common/fp16.h"
#include "kernels/kquant.h"

namespace llamix {
namespace avx512 {

namespace {

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
// 32 bytes in both halves; shifting the halves by different counts then splits the nibbles.
// (No 256->512 insert or cast: GCC 12 warns about their undefined upper half.)
inline __m512i broadcast256(const void* p) { return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p))); }
inline __m512i shift_halves(__m512i v, int lo, int hi) {
    return _mm512_srlv_epi16(v, _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16(short(lo)), _mm512_set1_epi16(short(hi))));
}
inline __m512i halves_epi32(int32_t lo, int32_t hi) {
    return _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(lo), _mm512_set1_epi32(hi));
}
inline int32_t hsum_i32(__m512i v) {
    const __m256i h = _mm256_add_epi32(_mm512_extracti64x4_epi64(v, 0), _mm512_extracti64x4_epi64(v, 1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

inline int32_t min_term(const uint8_t* scales, const int16_t* bsums, uint8_t* sc) {
    int32_t summ = 0;
    for (int j = 0; j < 8; ++j) {
        uint8_t m;
        kquant_scale_min(j, scales, sc[j], m);
        summ += m * (bsums[2 * j] + bsums[2 * j + 1]);
    }
    return summ;
}

// 64 unsigned quants (two sub-blocks of 32, scales s0 and s1) against 64 activations.
inline __m512i scaled_dot64(__m512i q, const int8_t* a, int32_t s0, int32_t s1) {
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, load512(a));
    return _mm512_mullo_epi32(dot, halves_epi32(s0, s1));
}

}  // namespace

float dot_q4_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q4_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        uint8_t sc[8];
        const int32_t summ = min_term(x[b].scales, a[b].bsums, sc);
        __m512i acc = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {
            // low nibbles: elements 0..31 of the chunk, high nibbles: 32..63
            const __m512i q64 = _mm512_and_si512(shift_halves(broadcast256(x[b].qs + 32 * c), 0, 4), m4);
            acc = _mm512_add_epi32(acc, scaled_dot64(q64, a[b].qs + 64 * c, sc[2 * c], sc[2 * c + 1]));
        }
        const int32_t sumi = hsum_i32(acc);
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

float dot_q5_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q5_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    const __m512i m4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        uint8_t sc[8];
        const int32_t summ = min_term(x[b].scales, a[b].bsums, sc);
        const __m512i qh = broadcast256(x[b].qh);
        __m512i acc = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {
            // fifth bits: bit 2c of qh for the low half, bit 2c + 1 for the high half
            const __m512i h = _mm512_slli_epi16(_mm512_and_si512(shift_halves(qh, 2 * c, 2 * c + 1), one), 4);
            const __m512i q64 = _mm512_or_si512(_mm512_and_si512(shift_halves(broadcast256(x[b].qs + 32 * c), 0, 4), m4), h);
            acc = _mm512_add_epi32(acc, scaled_dot64(q64, a[b].qs + 64 * c, sc[2 * c], sc[2 * c + 1]));
        }
        const int32_t sumi = hsum_i32(acc);
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

float dot_q6_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q6_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
    // int32 lane i of a vpdpbusd result holds elements 4i..4i+3: scale (i / 4) of four
    const __m128i spread = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t offset = 0;
        for (int j = 0; j < 16; ++j) offset += x[b].scales[j] * a[b].bsums[j];
        __m512i acc = _mm512_setzero_si512();
        for (int h = 0; h < 2; ++h) {
            // elements 0..63 of the half: low nibbles of ql[0..63], qh bits (0,1) then (2,3);
            // elements 64..127: high nibbles, qh bits (4,5) then (6,7)
            const __m512i ql = load512(x[b].ql + 64 * h);
            const __m512i qh = broadcast256(x[b].qh + 32 * h);
            const __m512i q01 = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                                _mm512_slli_epi16(_mm512_and_si512(shift_halves(qh, 0, 2), m2), 4));
            const __m512i q23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                                _mm512_slli_epi16(_mm512_and_si512(shift_halves(qh, 4, 6), m2), 4));
            const int8_t* sc = x[b].scales + 8 * h;
            for (int g = 0; g < 2; ++g) {
                int32_t four;
                __builtin_memcpy(&four, sc + 4 * g, 4);
                const __m512i scv = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128(four), spread));
                const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), g == 0 ? q01 : q23,
                                                        load512(a[b].qs + 128 * h + 64 * g));
                acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(dot, scv));
            }
        }
        const int32_t sumi = hsum_i32(acc) - 32 * offset;
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi));
    }
    return sum;
}

}  // namespace avx512

void fill_kquant_avx512(KQuantKernels& k) {
    k.dot_q4_K_q8_K = avx512::dot_q4_K_q8_K;
    k.dot_q5_K_q8_K = avx512::dot_q5_K_q8_K;
    k.dot_q6_K_q8_K = avx512::dot_q6_K_q8_K;
}

}  // namespace llamix
