// AVX2 K-quant dot products against Q8_K activations. Integer sums per super-block are exact
// and combined in float32 exactly as kernels/ref/kquant_ref.cpp does, so results are
// bit-identical to the reference; each super-block is unpacked once for up to kMaxTokens
// activation rows. maddubs multiplies unsigned quants by signed activations;
// pairs stay below 2 * 63 * 128 < 2^15, so it never saturates.
#include <immintrin.h>

#include "common/fp16.h"
#include "kernels/kquant.h"

namespace llamix {
namespace avx2 {

namespace {

// A super-block unpacked once for up to kMaxTokens activation rows: q[c] holds the 32 unsigned
// quants that meet activations 32c..32c+31, s[c] the int16 scale of each maddubs pair.
struct Unpacked {
    __m256i q[8], s[8];
    __m256i bsum_mul;  // int16 multiplier of each of the 16 activation sums: Q4_K/Q5_K mins m_(i/2), Q6_K scales
    float d, dmin;
};

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline void unpack(const block_q4_K& x, Unpacked& u) {
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    alignas(16) uint8_t sc[16];  // 8 scales, then 8 mins
    kquant_scales_mins(x.scales, sc);
    const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(sc));
    u.bsum_mul = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(b, b));  // m0 m0 m1 m1 ... m7 m7
    for (int c = 0; c < 4; ++c) {
        const __m256i q = load256(x.qs + 32 * c);
        u.q[2 * c] = _mm256_and_si256(q, m4);                          // elements 64c .. 64c+31
        u.q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);  // 64c+32 .. 64c+63
    }
    for (int j = 0; j < 8; ++j) u.s[j] = _mm256_set1_epi16(sc[j]);
    u.d = fp16_to_fp32(x.d);
    u.dmin = fp16_to_fp32(x.dmin);
}

inline void unpack(const block_q5_K& x, Unpacked& u) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    alignas(16) uint8_t sc[16];  // 8 scales, then 8 mins
    kquant_scales_mins(x.scales, sc);
    const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(sc));
    u.bsum_mul = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(b, b));  // m0 m0 m1 m1 ... m7 m7
    const __m256i qh = load256(x.qh);
    for (int c = 0; c < 4; ++c) {
        const __m256i q = load256(x.qs + 32 * c);
        // bit j of qh[l] is the fifth bit of element l of sub-block j; 0/1 bytes shift safely
        const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), one), 4);
        const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), one), 4);
        u.q[2 * c] = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
        u.q[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
    }
    for (int j = 0; j < 8; ++j) u.s[j] = _mm256_set1_epi16(sc[j]);
    u.d = fp16_to_fp32(x.d);
    u.dmin = fp16_to_fp32(x.dmin);
}

inline void unpack(const block_q6_K& x, Unpacked& u) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
        const __m256i ql0 = load256(x.ql + 64 * h), ql1 = load256(x.ql + 64 * h + 32), qh = load256(x.qh + 32 * h);
        const __m256i lows[4] = {_mm256_and_si256(ql0, m4), _mm256_and_si256(ql1, m4),
                                 _mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                 _mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4)};
        for (int c = 0; c < 4; ++c) {
            const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), m2), 4);
            u.q[4 * h + c] = _mm256_or_si256(lows[c], hb);
            const int8_t* sc = x.scales + 8 * h + 2 * c;  // 16 elements per scale
            u.s[4 * h + c] = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
        }
    }
    u.bsum_mul = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales)));
    u.d = fp16_to_fp32(x.d);
}

// sum over the super-block of scale * q * a: maddubs pairs, then madd by the scales (exact).
inline __m256i scaled_sum(const Unpacked& u, const int8_t* a) {
    __m256i acc = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c)
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u.q[c], load256(a + 32 * c)), u.s[c]));
    return acc;
}

// [sum of v0, v1, v2, v3] as int32 lanes (exact): horizontal adds of four vectors at once.
inline __m128i reduce4(const __m256i v[4]) {
    const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}
inline __m256i fold(__m256i v) { return v; }

inline bool has_mins(const block_q4_K*) { return true; }
inline bool has_mins(const block_q5_K*) { return true; }
inline bool has_mins(const block_q6_K*) { return false; }

// One weight row against n <= kMaxTokens activation rows. Per super-block and token the int32
// sums are exact; four tokens' sums are reduced together and combined in float32 lane by lane
// with the reference's operations and order, so results equal the reference bit for bit.
template <class Block>
void dot_rows(int64_t k, const void* w, const void* xq, int64_t xq_stride, int n, float* y, int64_t y_stride) {
    static_assert(kMaxTokens % 4 == 0, "tokens are reduced four at a time");
    const auto* x = static_cast<const Block*>(w);
    const auto* xb = static_cast<const uint8_t*>(xq);
    const bool mins = has_mins(x);
    const int groups = (n + 3) / 4;
    __m128 sum[kMaxTokens / 4];
    for (int g = 0; g < groups; ++g) sum[g] = _mm_setzero_ps();
    Unpacked u;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        unpack(x[b], u);
        const __m128 d = _mm_set1_ps(u.d), dmin = _mm_set1_ps(u.dmin);
        for (int g = 0; g < groups; ++g) {
            __m256i acc[4], bs[4];
            alignas(16) float ad[4] = {};
            for (int i = 0; i < 4; ++i) {
                const int t = 4 * g + i;
                if (t < n) {
                    const block_q8_K& a = reinterpret_cast<const block_q8_K*>(xb + t * xq_stride)[b];
                    acc[i] = fold(scaled_sum(u, a.qs));
                    bs[i] = _mm256_madd_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums)), u.bsum_mul);
                    ad[i] = a.d;
                } else {
                    acc[i] = bs[i] = _mm256_setzero_si256();
                }
            }
            const __m128i sumi = reduce4(acc), sumb = reduce4(bs);
            __m128 v;
            if (mins)  // a.d * (d * sumi - dmin * summ)
                v = _mm_sub_ps(_mm_mul_ps(d, _mm_cvtepi32_ps(sumi)), _mm_mul_ps(dmin, _mm_cvtepi32_ps(sumb)));
            else       // a.d * (d * (sumi - 32 * offset)): Q6_K's quants were multiplied unsigned
                v = _mm_mul_ps(d, _mm_cvtepi32_ps(_mm_sub_epi32(sumi, _mm_slli_epi32(sumb, 5))));
            sum[g] = _mm_add_ps(sum[g], _mm_mul_ps(_mm_load_ps(ad), v));
        }
    }
    alignas(16) float out[kMaxTokens];
    for (int g = 0; g < groups; ++g) _mm_store_ps(out + 4 * g, sum[g]);
    for (int t = 0; t < n; ++t) y[t * y_stride] = out[t];
}

}  // namespace

}  // namespace avx2

void fill_kquant_avx2(KQuantKernels& k) {
    k.dot_q4_K_q8_K = avx2::dot_rows<block_q4_K>;
    k.dot_q5_K_q8_K = avx2::dot_rows<block_q5_K>;
    k.dot_q6_K_q8_K = avx2::dot_rows<block_q6_K>;
}

}  // namespace llamix
