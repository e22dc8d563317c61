// AVX-512 (VNNI) K-quant dot products against Q8_K activations: 64 quants per vpdpbusd, the
// sub-block scales applied to the int32 partial sums. Integer sums per super-block are exact
// and combined in float32 as the reference does: bit-identical to kernels/ref/kquant_ref.cpp.
#include <immintrin.h>

#include "common/fp16.h"
#include "kernels/kquant.h"

namespace llamix {
namespace avx512 {

namespace {

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

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
    const __m512i scv = join(_mm256_set1_epi32(s0), _mm256_set1_epi32(s1));
    return _mm512_mullo_epi32(dot, scv);
}

}  // namespace

float dot_q4_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q4_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        uint8_t sc[8];
        const int32_t summ = min_term(x[b].scales, a[b].bsums, sc);
        __m512i acc = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {
            const __m256i q = load256(x[b].qs + 32 * c);
            const __m512i q64 = join(_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
            acc = _mm512_add_epi32(acc, scaled_dot64(q64, a[b].qs + 64 * c, sc[2 * c], sc[2 * c + 1]));
        }
        const int32_t sumi = _mm512_reduce_add_epi32(acc);
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

float dot_q5_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q5_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        uint8_t sc[8];
        const int32_t summ = min_term(x[b].scales, a[b].bsums, sc);
        const __m256i qh = load256(x[b].qh);
        __m512i acc = _mm512_setzero_si512();
        for (int c = 0; c < 4; ++c) {
            const __m256i q = load256(x[b].qs + 32 * c);
            const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
            const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
            const __m512i q64 = join(_mm256_or_si256(_mm256_and_si256(q, m4), h0),
                                     _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1));
            acc = _mm512_add_epi32(acc, scaled_dot64(q64, a[b].qs + 64 * c, sc[2 * c], sc[2 * c + 1]));
        }
        const int32_t sumi = _mm512_reduce_add_epi32(acc);
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

float dot_q6_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q6_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    // int32 lane i of a vpdpbusd result holds elements 4i..4i+3: scale (i / 4) of four
    const __m128i spread = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t offset = 0;
        for (int j = 0; j < 16; ++j) offset += x[b].scales[j] * a[b].bsums[j];
        __m512i acc = _mm512_setzero_si512();
        for (int h = 0; h < 2; ++h) {
            const __m256i ql0 = load256(x[b].ql + 64 * h);
            const __m256i ql1 = load256(x[b].ql + 64 * h + 32);
            const __m256i qh = load256(x[b].qh + 32 * h);
            auto high = [&](int c) { return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), m2), 4); };
            const __m512i q01 = join(_mm256_or_si256(_mm256_and_si256(ql0, m4), high(0)),
                                     _mm256_or_si256(_mm256_and_si256(ql1, m4), high(1)));
            const __m512i q23 = join(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), high(2)),
                                     _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), high(3)));
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
        const int32_t sumi = _mm512_reduce_add_epi32(acc) - 32 * offset;
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
