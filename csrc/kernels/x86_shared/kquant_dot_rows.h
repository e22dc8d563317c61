// The row-by-row K-quant dot loop (KQuantKernels::DotRows) shared by the x86 ISAs, written once
// and parameterised by each ISA's super-block unpack and per-block dot.
//
// ISA code: include it only from an x86 ISA folder (x86_avx2/, x86_avx512/), so that it is
// compiled with that folder's flags. Everything here has internal linkage and is instantiated
// with the including ISA's own functions, so each instantiation is that ISA's private copy: the
// linker can never hand a baseline caller (or a lesser ISA) a copy built with wider instructions.
#pragma once
#if !defined(__AVX2__)
#error "kernels/x86_shared/ is ISA code: include it only from an x86 ISA folder"
#endif
#include <immintrin.h>

#include <cstdint>

#include "common/formats.h"
#include "kernels/kquant.h"

namespace llamix {
namespace x86_shared {
namespace {

// [sum of v0, v1, v2, v3] as int32 lanes (exact): horizontal adds of four vectors at once.
inline __m128i reduce4(const __m256i v[4]) {
    const __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
}

inline bool has_mins(const block_q4_K*) { return true; }
inline bool has_mins(const block_q5_K*) { return true; }
inline bool has_mins(const block_q6_K*) { return false; }
inline bool has_mins(const block_q2_K*) { return true; }
inline bool has_mins(const block_q3_K*) { return false; }
inline bool has_mins(const block_iq4_xs*) { return false; }
// Types without mins: log2 of the offset their quants were multiplied with (unsigned), removed
// as offset * sum_j scale_j * bsums_j (IQ4_XS: signed levels, bsum multipliers of zero).
inline int offset_log2(const void*) { return 0; }
inline int offset_log2(const block_q6_K*) { return 5; }
inline int offset_log2(const block_q3_K*) { return 2; }

// One weight row against n <= kMaxTokens activation rows. Per super-block and token the int32
// sums are exact; four tokens' sums are reduced together and combined in float32 lane by lane
// with the reference's operations and order, so results equal the reference bit for bit.
// Unpacked: the ISA's super-block unpacked once for all tokens, with float d, dmin and the int16
// multiplier of each of the 16 activation sums (__m256i bsum_mul: Q4_K/Q5_K mins, Q6_K scales).
// Unpack fills it from one super-block; BlockDot gives that super-block's sum of
// scale * q * a against one activation row's quants, as 8 int32 lanes (exact).
template <class Block, class Unpacked, void (*Unpack)(const Block&, Unpacked&),
          __m256i (*BlockDot)(const Unpacked&, const int8_t*)>
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
        Unpack(x[b], u);
        const __m128 d = _mm_set1_ps(u.d), dmin = _mm_set1_ps(u.dmin);
        for (int g = 0; g < groups; ++g) {
            __m256i acc[4], bs[4];
            alignas(16) float ad[4] = {};
            for (int i = 0; i < 4; ++i) {
                const int t = 4 * g + i;
                if (t < n) {
                    const block_q8_K& a = reinterpret_cast<const block_q8_K*>(xb + t * xq_stride)[b];
                    acc[i] = BlockDot(u, a.qs);
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
            else       // a.d * (d * (sumi - 32 * offset)): Q6_K's quants were multiplied unsigned (Q3_K: 4)
                v = _mm_mul_ps(d, _mm_cvtepi32_ps(_mm_sub_epi32(sumi, _mm_sll_epi32(sumb, _mm_cvtsi32_si128(offset_log2(x))))));
            sum[g] = _mm_add_ps(sum[g], _mm_mul_ps(_mm_load_ps(ad), v));
        }
    }
    alignas(16) float out[kMaxTokens];
    for (int g = 0; g < groups; ++g) _mm_store_ps(out + 4 * g, sum[g]);
    for (int t = 0; t < n; ++t) y[t * y_stride] = out[t];
}

}  // namespace
}  // namespace x86_shared
}  // namespace llamix
