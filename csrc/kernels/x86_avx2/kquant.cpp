// AVX2 K-quant dot products against Q8_K activations. Integer sums per super-block are exact
// and combined in float32 exactly as kernels/ref/kquant_ref.cpp does, so results are
// bit-identical to the reference. maddubs multiplies unsigned quants by signed activations;
// pairs stay below 2 * 63 * 128 < 2^15, so it never saturates.
#include <immintrin.h>

#include "common/fp16.h"
#include "kernels/kquant.h"

namespace llamix {
namespace avx2 {

namespace {

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

// sc * <q, a> for 32 unsigned quants and 32 int8 activations, as 8 int32 partial sums.
inline __m256i scaled_dot32(__m256i q, const int8_t* a, int16_t sc) {
    const __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(sc));
}

// The min term of Q4_K/Q5_K: sum_j m_j * (sum of the 32 activations of sub-block j).
inline int32_t min_term(const uint8_t* scales, const int16_t* bsums, uint8_t* sc) {
    int32_t summ = 0;
    for (int j = 0; j < 8; ++j) {
        uint8_t m;
        kquant_scale_min(j, scales, sc[j], m);
        summ += m * (bsums[2 * j] + bsums[2 * j + 1]);
    }
    return summ;
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
        __m256i acc = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs + 32 * c));
            acc = _mm256_add_epi32(acc, scaled_dot32(_mm256_and_si256(q, m4), a[b].qs + 64 * c, sc[2 * c]));
            acc = _mm256_add_epi32(acc, scaled_dot32(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                                     a[b].qs + 64 * c + 32, sc[2 * c + 1]));
        }
        const int32_t sumi = hsum_i32(acc);
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
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qh));
        __m256i acc = _mm256_setzero_si256();
        for (int c = 0; c < 4; ++c) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs + 32 * c));
            // bit j of qh[l] is the fifth bit of element l of sub-block j; 0/1 bytes shift safely
            const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
            const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
            acc = _mm256_add_epi32(acc, scaled_dot32(lo, a[b].qs + 64 * c, sc[2 * c]));
            acc = _mm256_add_epi32(acc, scaled_dot32(hi, a[b].qs + 64 * c + 32, sc[2 * c + 1]));
        }
        const int32_t sumi = hsum_i32(acc);
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

float dot_q6_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q6_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t offset = 0;  // 32 * sum_j sc_j * bsum_j: the quants are multiplied unsigned
        for (int j = 0; j < 16; ++j) offset += x[b].scales[j] * a[b].bsums[j];
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; ++h) {
            const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].ql + 64 * h));
            const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].ql + 64 * h + 32));
            const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qh + 32 * h));
            const __m256i lows[4] = {_mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4),
                                     _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                     _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4)};
            for (int c = 0; c < 4; ++c) {
                const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), m2), 4);
                const __m256i q = _mm256_or_si256(lows[c], hb);
                const int8_t* sc = x[b].scales + 8 * h + 2 * c;  // 16 elements per scale
                const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
                const __m256i p = _mm256_maddubs_epi16(
                    q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[b].qs + 128 * h + 32 * c)));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, scv));
            }
        }
        const int32_t sumi = hsum_i32(acc) - 32 * offset;
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi));
    }
    return sum;
}

}  // namespace avx2

void fill_kquant_avx2(KQuantKernels& k) {
    k.dot_q4_K_q8_K = avx2::dot_q4_K_q8_K;
    k.dot_q5_K_q8_K = avx2::dot_q5_K_q8_K;
    k.dot_q6_K_q8_K = avx2::dot_q6_K_q8_K;
}

}  // namespace llamix
