// AVX2 K-quant dot products against Q8_K activations. Integer sums per super-block are exact
// and combined in float32 exactly as kernels/ref/kquant_ref.cpp does, so results are
// bit-identical to the reference; each super-block is unpacked once for up to kMaxTokens
// activation rows (the row loop is shared with AVX-512: kernels/x86_shared/kquant_dot_rows.h).
// maddubs multiplies unsigned quants by signed activations;
// pairs stay below 2 * 63 * 128 < 2^15, so it never saturates.
#include <immintrin.h>

#include "common/fp16.h"
#include "kernels/kquant.h"
#include "kernels/x86_avx2/token_tiles.h"
#include "kernels/x86_shared/kquant_dot_rows.h"
#include "kernels/x86_shared/quantize_q8_K.h"

namespace llamix {
namespace avx2 {

struct Tag;  // names this ISA's copies of kernels/x86_shared code (defined in lowbit.cpp)

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

// Packed K-quant groups (kernels/kquant.h), block steps of one 8-row half (run by token_tiles.h as
// GEMM tiles and decode pairs): a ymm holds 4 bytes of each of 8 rows; pmaddubsw against a broadcast 4-byte piece of the activations gives each row two
// int16 sums, kept in int16 only while they provably fit (Q4_K: one 32-wide sub-block, 16
// products of at most 15 * 127; Q5_K: half of one; Q6_K: 8 elements), then pmaddwd with the
// sub-block scale in both halves turns them into scale * sum in int32. Exact integer sums,
// combined in float32 as the reference does: bit-identical.
// Tokens per GEMM tile: each unpacked weight vector meets 4 tokens (with 2, GEMM-512 on a Zen 3 was
// 5-30% slower and Q5_K / Q6_K / IQ4_XS below numpy's sgemm; some sums then live in memory).
constexpr int kGroupTile = 4;

inline __m256i bcast32(const void* p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
// x unchanged, held in a register at this point: an integer sum pinned after each add, so GCC
// cannot reassociate a run of adds into a tree (which needs more live registers than AVX2 has).
inline __m256i keep_in_register(__m256i x) {
    __asm__("" : "+x"(x));
    return x;
}
// pshufb control: byte k of each int32 lane zero-extended into both of its int16 halves, (b_k, b_k)
// as int16 for pmaddwd (one instruction instead of shift, mask, shift and or).
inline __m256i byte_pair_ctrl(int k) {
    const __m256i lane = _mm256_setr_epi32(0, 0x00040004, 0x00080008, 0x000c000c, 0, 0x00040004, 0x00080008, 0x000c000c);
    return _mm256_add_epi32(_mm256_set1_epi32(int(0x80008000u | (0x00010001u * unsigned(k)))), lane);
}
// pshufb control: int16 k (0 or 1) of each int32 lane copied to both of its halves.
inline __m256i word_pair_ctrl(int k) {
    const __m256i lane = _mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0c0c0c0c, 0, 0x04040404, 0x08080808, 0x0c0c0c0c);
    return _mm256_add_epi32(_mm256_set1_epi32(k ? 0x03020302 : 0x01000100), lane);
}
// The 8 sub-block sums of a Q8_K block's bsums, B_j = bsums[2j] + bsums[2j + 1] (|B_j| <= 32 * 128,
// so int16), as the int16 pairs (B0, B2), (B1, B3), (B4, B6), (B5, B7) broadcast to every int32 lane:
// pmaddwd of them with a row's mins as pairs (m0, m2), (m1, m3), ... sums m_j * B_j exactly.
inline void min_pairs(const block_q8_K* a, __m256i out[4]) {
    const __m256i b = _mm256_madd_epi16(load256(a->bsums), _mm256_set1_epi16(1));  // B0..B3 | B4..B7 (int32)
    const __m256i p = _mm256_shufflelo_epi16(_mm256_packs_epi32(b, b), 0xd8);          // (B0,B2),(B1,B3) | (B4,B6),(B5,B7)
    out[0] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(0));
    out[1] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(1));
    out[2] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(4));
    out[3] = _mm256_permutevar8x32_epi32(p, _mm256_set1_epi32(5));
}

template <bool Q5>
struct KQuantGroups {
    using Act = block_q8_K;
    static constexpr int64_t kBlockBytes = Q5 ? kQ5KGroupBlockBytes : kQ4KGroupBlockBytes;
    static constexpr int kTile = kGroupTile;
    static constexpr int64_t kQs = 64 + 3 * 64;
    static constexpr int kFlush = Q5 ? 4 : 8;  // chunks whose int16 sums fit
    static constexpr bool kDecode = true;      // decode: both halves in one pass (token_tiles.h)
    static constexpr bool kFarPrefetch = true;  // and a second prefetch 16 KiB ahead (token_tiles.h)

    // The quants of chunk c (elements 4c .. 4c + 3) of sub-blocks 2p (lo) and 2p + 1 (hi), half h.
    // Q4_K: the two nibbles of one vector. Q5_K: from the 5-vector record of quad c / 4
    // (Q5KLayout::merged, kernels/kquant.h): L_k / H_3 by one and, H_0 / H_1 by 5 operations, H_2
    // by 8 (2.9 per vector, where the nibbles and qh's fifth bits took 4.5).
    static inline void quants(const uint8_t* g, int p, int c, int h, __m256i& lo, __m256i& hi) {
        if constexpr (!Q5) {
            const __m256i m4 = _mm256_set1_epi8(0x0F);
            const __m256i raw = load256(g + kQs + (p * 8 + c) * 64 + 32 * h);
            lo = _mm256_and_si256(raw, m4);
            hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
        } else {
            const uint8_t* rec = g + kQs + ((p * 2 + c / 4) * 2 + h) * 160;
            const __m256i m5 = _mm256_set1_epi8(0x1F), top3 = _mm256_set1_epi8(char(0xE0)), mid2 = _mm256_set1_epi8(0x60),
                          bit7 = _mm256_set1_epi8(char(0x80));
            const int k = c % 4;
            if (k == 3) {
                lo = _mm256_and_si256(load256(rec + 96), m5);
                hi = _mm256_and_si256(load256(rec + 128), m5);
                return;
            }
            const __m256i v = load256(rec + 32 * k);
            lo = _mm256_and_si256(v, m5);
            hi = _mm256_srli_epi16(_mm256_and_si256(v, top3), 5);  // bits 0-2 (the and first: no bits from the next byte)
            if (k == 0) {
                hi = _mm256_or_si256(hi, _mm256_srli_epi16(_mm256_and_si256(load256(rec + 96), mid2), 2));
            } else if (k == 1) {
                hi = _mm256_or_si256(hi, _mm256_srli_epi16(_mm256_and_si256(load256(rec + 128), mid2), 2));
            } else {
                hi = _mm256_or_si256(hi, _mm256_or_si256(_mm256_srli_epi16(_mm256_and_si256(load256(rec + 96), bit7), 4),
                                                         _mm256_srli_epi16(_mm256_and_si256(load256(rec + 128), bit7), 3)));
            }
        }
    }

    template <int T>
    static inline void step(const uint8_t* g, const block_q8_K* const* a, int h, __m256* fsum) {
        const __m256i low6 = _mm256_set1_epi32(0x3f3f3f3f), low4 = _mm256_set1_epi32(0x0f0f0f0f);
        const __m256i low2 = _mm256_set1_epi32(0x03030303);
        // the 12-byte scale fields of 8 rows as three words each: sc0..3, sc4..7, m0..3, m4..7
        const __m256i w0 = load256(g + 64 + 32 * h), w1 = load256(g + 128 + 32 * h), w2 = load256(g + 192 + 32 * h);
        const __m256i sc[2] = {_mm256_and_si256(w0, low6),
                               _mm256_or_si256(_mm256_and_si256(w2, low4),
                                               _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w0, 6), low2), 4))};
        const __m256i mn[2] = {_mm256_and_si256(w1, low6),
                               _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), low4),
                                               _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w1, 6), low2), 4))};
        __m256i sumi[T], summ[T];
        for (int t = 0; t < T; ++t) sumi[t] = _mm256_setzero_si256();
        for (int p = 0; p < 4; ++p) {  // sub-blocks 2p (low nibbles) and 2p + 1 (high nibbles)
            const __m256i s_lo = _mm256_shuffle_epi8(sc[p / 2], byte_pair_ctrl(2 * (p % 2)));
            const __m256i s_hi = _mm256_shuffle_epi8(sc[p / 2], byte_pair_ctrl(2 * (p % 2) + 1));
            __m256i lo16[T], hi16[T];
            for (int t = 0; t < T; ++t) lo16[t] = hi16[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int c = 0; c < 8; ++c) {
                __m256i lo, hi;
                quants(g, p, c, h, lo, hi);
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    lo16[t] = _mm256_add_epi16(lo16[t], _mm256_maddubs_epi16(lo, bcast32(a[t]->qs + 64 * p + 4 * c)));
                    hi16[t] = _mm256_add_epi16(hi16[t], _mm256_maddubs_epi16(hi, bcast32(a[t]->qs + 64 * p + 32 + 4 * c)));
                }
                if ((c + 1) % kFlush == 0) {
#pragma GCC unroll 4
                    for (int t = 0; t < T; ++t) {
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(lo16[t], s_lo), _mm256_madd_epi16(hi16[t], s_hi)));
                        lo16[t] = hi16[t] = _mm256_setzero_si256();
                    }
                }
            }
        }
        // summ = sum_j m_j * (bsums[2j] + bsums[2j+1]): the mins as int16 pairs (m0, m2), (m1, m3), ...
        {
            const __m256i even = _mm256_set1_epi32(0x00ff00ff);
            const __m256i m[4] = {_mm256_and_si256(mn[0], even), _mm256_srli_epi16(mn[0], 8), _mm256_and_si256(mn[1], even),
                                  _mm256_srli_epi16(mn[1], 8)};
            for (int t = 0; t < T; ++t) {
                __m256i bp[4];
                min_pairs(a[t], bp);
                summ[t] = _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(m[0], bp[0]), _mm256_madd_epi16(m[1], bp[1])),
                                           _mm256_add_epi32(_mm256_madd_epi16(m[2], bp[2]), _mm256_madd_epi16(m[3], bp[3])));
            }
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
        const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 16 * h)));
        for (int t = 0; t < T; ++t) {  // a.d * (d * sumi - dmin * summ), as the reference
            const __m256 v = _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[t])), _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(summ[t])));
            fsum[t] = _mm256_add_ps(fsum[t], _mm256_mul_ps(_mm256_set1_ps(a[t]->d), v));
        }
    }

    // Decode (one token): both 8-row halves in one pass, so each activation piece is broadcast once
    // for the 16 rows; the same integer sums and float expression per half as step<1>. Pair p is a
    // template argument (with the nibbles-and-qh layout a run-time p compiled to branches and shifts
    // by a register), and each int16 sum is pinned after its add (keep_in_register):
    // GCC otherwise reassociates the 8 chunks' sums into trees and spills them, 1.3-1.6x slower
    // from L2 on a Zen 3.
    template <int P>
    static inline void decode_pair(const uint8_t* g, const int8_t* aq, const __m256i (&sc)[2][2], __m256i (&sumi)[2]) {
        __m256i lo16[2], hi16[2];
        lo16[0] = hi16[0] = lo16[1] = hi16[1] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int c = 0; c < 8; ++c) {
            const __m256i al = bcast32(aq + 64 * P + 4 * c), ah = bcast32(aq + 64 * P + 32 + 4 * c);
#pragma GCC unroll 2
            for (int h = 0; h < 2; ++h) {
                __m256i lo, hi;
                quants(g, P, c, h, lo, hi);
                lo16[h] = keep_in_register(_mm256_add_epi16(lo16[h], _mm256_maddubs_epi16(lo, al)));
                hi16[h] = keep_in_register(_mm256_add_epi16(hi16[h], _mm256_maddubs_epi16(hi, ah)));
            }
            if ((c + 1) % kFlush == 0) {
#pragma GCC unroll 2
                for (int h = 0; h < 2; ++h) {
                    const __m256i s_lo = _mm256_shuffle_epi8(sc[h][P / 2], byte_pair_ctrl(2 * (P % 2)));
                    const __m256i s_hi = _mm256_shuffle_epi8(sc[h][P / 2], byte_pair_ctrl(2 * (P % 2) + 1));
                    sumi[h] = keep_in_register(_mm256_add_epi32(sumi[h], _mm256_add_epi32(_mm256_madd_epi16(lo16[h], s_lo), _mm256_madd_epi16(hi16[h], s_hi))));
                    lo16[h] = hi16[h] = _mm256_setzero_si256();
                }
            }
        }
    }

    static inline void decode(const uint8_t* g, const block_q8_K* a, __m256* fsum) {
        const __m256i low6 = _mm256_set1_epi32(0x3f3f3f3f), low4 = _mm256_set1_epi32(0x0f0f0f0f);
        const __m256i low2 = _mm256_set1_epi32(0x03030303);
        __m256i sc[2][2];  // the 12-byte scale fields of each half's 8 rows: sc0..3, sc4..7
        for (int h = 0; h < 2; ++h) {
            const __m256i w0 = load256(g + 64 + 32 * h), w2 = load256(g + 192 + 32 * h);
            sc[h][0] = _mm256_and_si256(w0, low6);
            sc[h][1] = _mm256_or_si256(_mm256_and_si256(w2, low4), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w0, 6), low2), 4));
        }
        __m256i sumi[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        decode_pair<0>(g, a->qs, sc, sumi);
        decode_pair<1>(g, a->qs, sc, sumi);
        decode_pair<2>(g, a->qs, sc, sumi);
        decode_pair<3>(g, a->qs, sc, sumi);
        __m256i bp[4];
        min_pairs(a, bp);
        const __m256i even = _mm256_set1_epi32(0x00ff00ff);
        const __m256 ad = _mm256_set1_ps(a->d);
        for (int h = 0; h < 2; ++h) {  // the mins m0..3, m4..7 (decoded after the sums: fewer live registers)
            const __m256i w1 = load256(g + 128 + 32 * h), w2 = load256(g + 192 + 32 * h);
            const __m256i mn0 = _mm256_and_si256(w1, low6);
            const __m256i mn1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w2, 4), low4),
                                                _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w1, 6), low2), 4));
            const __m256i summ = _mm256_add_epi32(
                _mm256_add_epi32(_mm256_madd_epi16(_mm256_and_si256(mn0, even), bp[0]), _mm256_madd_epi16(_mm256_srli_epi16(mn0, 8), bp[1])),
                _mm256_add_epi32(_mm256_madd_epi16(_mm256_and_si256(mn1, even), bp[2]), _mm256_madd_epi16(_mm256_srli_epi16(mn1, 8), bp[3])));
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
            const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 16 * h)));
            const __m256 v = _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[h])), _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(summ)));
            fsum[h] = _mm256_add_ps(fsum[h], _mm256_mul_ps(ad, v));
        }
    }
};

struct Q6KGroups {
    using Act = block_q8_K;
    static constexpr int64_t kBlockBytes = kQ6KGroupBlockBytes;
    static constexpr int kTile = kGroupTile;
    static constexpr int64_t kScales = 32, kQl = kScales + 256, kQh = kQl + 2048;
    static constexpr bool kDecode = true;  // decode: both halves in one pass (token_tiles.h)
    static constexpr bool kFarPrefetch = true; 

    template <int T>
    static inline void step(const uint8_t* g, const block_q8_K* const* a, int h, __m256* fsum) {
        const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
        __m256i sumi[T], off[T];
        for (int t = 0; t < T; ++t) sumi[t] = off[t] = _mm256_setzero_si256();
        for (int u = 0; u < 8; ++u) {  // sub-blocks u (chunks 4u..4u+3) and 8 + u (chunks 32 + 4u..)
            // (sc_2q, sc_2q+1) int16 pairs per row for q = u / 2 and 4 + u / 2; (sc_u, sc_u) of each
            const __m256i pa = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kScales + (u / 2) * 32 + 16 * h)));
            const __m256i pb = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kScales + (4 + u / 2) * 32 + 16 * h)));
            const __m256i dup = word_pair_ctrl(u % 2);
            const __m256i sa = _mm256_shuffle_epi8(pa, dup), sb = _mm256_shuffle_epi8(pb, dup);  // (sc_u, sc_u), (sc_8+u, sc_8+u)
#pragma GCC unroll 2
            for (int hh = 2 * u; hh < 2 * u + 2; ++hh) {
                // chunks 2hh and 2hh + 1 share one vector of high bits (layout in kquant.h)
                const __m256i bits = load256(g + kQh + hh * 64 + 32 * h);
                const __m256i high[4] = {_mm256_slli_epi16(bits, 4), _mm256_slli_epi16(bits, 2), bits, _mm256_srli_epi16(bits, 2)};
                __m256i a16[T], b16[T];  // two chunks: 8 products of at most 63 * 127 per int16
                for (int t = 0; t < T; ++t) a16[t] = b16[t] = _mm256_setzero_si256();
#pragma GCC unroll 2
                for (int odd = 0; odd < 2; ++odd) {
                    const int c = 2 * hh + odd;
                    const __m256i raw = load256(g + kQl + c * 64 + 32 * h);
                    const __m256i qa = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_and_si256(high[2 * odd], m30));
                    const __m256i qb = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4),
                                                       _mm256_and_si256(high[2 * odd + 1], m30));
#pragma GCC unroll 4
                    for (int t = 0; t < T; ++t) {
                        a16[t] = _mm256_add_epi16(a16[t], _mm256_maddubs_epi16(qa, bcast32(a[t]->qs + 4 * c)));
                        b16[t] = _mm256_add_epi16(b16[t], _mm256_maddubs_epi16(qb, bcast32(a[t]->qs + 128 + 4 * c)));
                    }
                }
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t)
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(a16[t], sa), _mm256_madd_epi16(b16[t], sb)));
            }
            if (u % 2) {  // both sub-blocks of each pair are done: their offsets sc_j * bsum_j
                for (int t = 0; t < T; ++t) {
                    off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(pa, bcast32(a[t]->bsums + 2 * (u / 2))));
                    off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(pb, bcast32(a[t]->bsums + 8 + 2 * (u / 2))));
                }
            }
        }
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
        for (int t = 0; t < T; ++t) {  // a.d * (d * sumi), as the reference
            const __m256i total = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(off[t], 5));
            fsum[t] = _mm256_add_ps(fsum[t], _mm256_mul_ps(_mm256_set1_ps(a[t]->d), _mm256_mul_ps(d, _mm256_cvtepi32_ps(total))));
        }
    }

    // Decode (one token): both 8-row halves in one pass, each activation piece broadcast once for
    // the 16 rows; the same integer sums and float expression per half as step<1>.
    static inline void decode(const uint8_t* g, const block_q8_K* a, __m256* fsum) {
        const __m256i m4 = _mm256_set1_epi8(0x0F), m30 = _mm256_set1_epi8(0x30);
        __m256i sumi[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
        for (int u = 0; u < 8; ++u) {  // sub-blocks u (chunks 4u..4u+3) and 8 + u
            const __m256i dup = word_pair_ctrl(u % 2);
#pragma GCC unroll 2
            for (int hh = 2 * u; hh < 2 * u + 2; ++hh) {
                __m256i a16[2], b16[2];
                a16[0] = b16[0] = a16[1] = b16[1] = _mm256_setzero_si256();
#pragma GCC unroll 2
                for (int odd = 0; odd < 2; ++odd) {
                    const int c = 2 * hh + odd;
                    const __m256i xa = bcast32(a->qs + 4 * c), xb = bcast32(a->qs + 128 + 4 * c);
#pragma GCC unroll 2
                    for (int h = 0; h < 2; ++h) {
                        const __m256i bits = load256(g + kQh + hh * 64 + 32 * h);
                        const __m256i raw = load256(g + kQl + c * 64 + 32 * h);
                        const __m256i ha = odd ? bits : _mm256_slli_epi16(bits, 4);
                        const __m256i hb = odd ? _mm256_srli_epi16(bits, 2) : _mm256_slli_epi16(bits, 2);
                        const __m256i qa = _mm256_or_si256(_mm256_and_si256(raw, m4), _mm256_and_si256(ha, m30));
                        const __m256i qb = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m4), _mm256_and_si256(hb, m30));
                        a16[h] = keep_in_register(_mm256_add_epi16(a16[h], _mm256_maddubs_epi16(qa, xa)));
                        b16[h] = keep_in_register(_mm256_add_epi16(b16[h], _mm256_maddubs_epi16(qb, xb)));
                    }
                }
#pragma GCC unroll 2
                for (int h = 0; h < 2; ++h) {
                    const __m256i pa = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kScales + (u / 2) * 32 + 16 * h)));
                    const __m256i pb = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kScales + (4 + u / 2) * 32 + 16 * h)));
                    sumi[h] = _mm256_add_epi32(sumi[h], _mm256_add_epi32(_mm256_madd_epi16(a16[h], _mm256_shuffle_epi8(pa, dup)),
                                                                         _mm256_madd_epi16(b16[h], _mm256_shuffle_epi8(pb, dup))));
                }
            }
        }
        const __m256 ad = _mm256_set1_ps(a->d);
        for (int h = 0; h < 2; ++h) {
            __m256i off = _mm256_setzero_si256();  // sum_j sc_j * bsum_j
            for (int q = 0; q < 4; ++q) {
                const __m256i pa = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kScales + q * 32 + 16 * h)));
                const __m256i pb = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + kScales + (4 + q) * 32 + 16 * h)));
                off = _mm256_add_epi32(off, _mm256_madd_epi16(pa, bcast32(a->bsums + 2 * q)));
                off = _mm256_add_epi32(off, _mm256_madd_epi16(pb, bcast32(a->bsums + 8 + 2 * q)));
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
            const __m256i total = _mm256_sub_epi32(sumi[h], _mm256_slli_epi32(off, 5));
            fsum[h] = _mm256_add_ps(fsum[h], _mm256_mul_ps(ad, _mm256_mul_ps(d, _mm256_cvtepi32_ps(total))));
        }
    }
};

}  // namespace

}  // namespace avx2

void fill_kquant_avx2(KQuantKernels& k) {
    using namespace avx2;
    k.quantize_act_q8_K = x86_shared::quantize_act_q8_K<Tag>;
    k.dot_q4_K_q8_K = x86_shared::dot_rows<block_q4_K, Unpacked, unpack, scaled_sum>;
    k.dot_q5_K_q8_K = x86_shared::dot_rows<block_q5_K, Unpacked, unpack, scaled_sum>;
    k.dot_q6_K_q8_K = x86_shared::dot_rows<block_q6_K, Unpacked, unpack, scaled_sum>;
    k.gemm_q4_K_groups = gemm_q8K<KQuantGroups<false>>;
    k.gemm_q5_K_groups = gemm_q8K<KQuantGroups<true>>;
    k.q5_K_layout = Q5KLayout::merged;  // AVX2's own packed Q5_K layout
    k.gemm_q6_K_groups = gemm_q8K<Q6KGroups>;
}

}  // namespace llamix
