// AVX2 kernels of Q4_1, IQ4_NL (packed 16-row groups against Q8_0 activations, block steps of one
// 8-row half as the Q4_0 kernel in matmul.cpp) and Q2_K, Q3_K, IQ4_XS (packed groups below, and
// row dots against Q8_K for unpacked weights: kernels/x86_shared/lowbit_kquant.h); token_tiles.h
// runs the steps as GEMM tiles and decode pairs. Exact integer sums, combined in float32 as
// kernels/ref/lowbit_ref.cpp does: bit-identical with the reference.
#include <immintrin.h>

#include <cstring>

#include "kernels/lowbit.h"
#include "kernels/x86_avx2/token_tiles.h"
#include "kernels/x86_shared/lowbit_kquant.h"

namespace llamix {
namespace avx2 {

struct Tag {};  // names this ISA's copies of kernels/x86_shared code

namespace {

inline __m256i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

inline __m256 half_scales(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// Q4_1: unsigned nibbles, all 8 maddubs of a block summed in int16 (8 * 2 * 15 * 127 < 2^15);
// per block acc += (d_w * d_x) * isum + m_w * (d_x * sum_x).
struct Q41Groups {
    using Act = block_q8a;
    static constexpr int64_t kBlockBytes = kQ41GroupBlockBytes;
    static constexpr int kTile = 4;

    template <int T>
    static inline void step(const uint8_t* blk, const block_q8a* const* x, int h, __m256* acc) {
        const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
        __m256i s[T];
        for (int i = 0; i < T; ++i) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 4 * kGroupRows + 64 * c + 32 * h));
            const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
            for (int i = 0; i < T; ++i) {
                const int8_t* q = x[i]->qs;
                s[i] = _mm256_add_epi16(s[i], _mm256_maddubs_epi16(lo, bcast4(q + 4 * c)));
                s[i] = _mm256_add_epi16(s[i], _mm256_maddubs_epi16(hi, bcast4(q + 16 + 4 * c)));
            }
        }
        const __m256 dw = half_scales(blk + 16 * h), mw = half_scales(blk + 2 * kGroupRows + 16 * h);
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = *x[i];
            const __m256 prod = _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), _mm256_cvtepi32_ps(_mm256_madd_epi16(s[i], ones)));
            const __m256 mins = _mm256_mul_ps(mw, _mm256_set1_ps(xb.d * float(xb.sum)));
            acc[i] = _mm256_add_ps(acc[i], _mm256_add_ps(prod, mins));
        }
    }
};

// IQ4_NL: nibbles looked up in kvalues_iq4nl (pshufb), then |v| times x with v's sign
// (pairs at most 2 * 127 * 127, widened per piece); per block acc += (d_w * d_x) * isum.
struct IQ4NLGroups {
    using Act = block_q8a;
    static constexpr int64_t kBlockBytes = kQ4GroupBlockBytes;
    static constexpr int kTile = 4;
    static constexpr bool kGroupsDecode = true;  // decode_groups below (token_tiles.h)

    template <int T>
    static inline void step(const uint8_t* blk, const block_q8a* const* x, int h, __m256* acc) {
        const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl)));
        __m256i s[T];
        for (int i = 0; i < T; ++i) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2 * kGroupRows + 64 * c + 32 * h));
            const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, m4));
            const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
            const __m256i alo = _mm256_sign_epi8(lo, lo), ahi = _mm256_sign_epi8(hi, hi);
            for (int i = 0; i < T; ++i) {
                const int8_t* q = x[i]->qs;
                const __m256i plo = _mm256_maddubs_epi16(alo, _mm256_sign_epi8(bcast4(q + 4 * c), lo));
                const __m256i phi = _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(bcast4(q + 16 + 4 * c), hi));
                s[i] = _mm256_add_epi32(s[i], _mm256_add_epi32(_mm256_madd_epi16(plo, ones), _mm256_madd_epi16(phi, ones)));
            }
        }
        const __m256 dw = half_scales(blk + 16 * h);
        for (int i = 0; i < T; ++i) {
            const block_q8a& xb = *x[i];
            acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(_mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), _mm256_cvtepi32_ps(s[i])));
        }
    }

    // Decode (gemv_groups): block b of G groups against one token, chunk by chunk: each 4-byte
    // piece of x is broadcast and its |x| taken once for the G groups' both halves, and the
    // levels take x's sign (|x| * (v with x's sign) = |v| * (x with v's sign), the same products).
    // The int32 sums are pinned after each add, so none is kept as a tree of products (spills).
    // Against two steps per group (a harness, one process, 2026-12-01, Zen 3): 1.22-1.23x from L2
    // or L3 with one thread, 1.02-1.05x from memory with two; one group at a time through
    // decode_groups<1> 1.12-1.14x and 1.02x.
    template <int G>
    static inline void decode_groups(const uint8_t* const* blk, const block_q8a& xb, __m256 (*acc)[2][1]) {
        const __m256i m4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl)));
        __m256i sum[G][2];
        for (int s = 0; s < G; ++s) sum[s][0] = sum[s][1] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m256i xl = bcast4(xb.qs + 4 * c), xh = bcast4(xb.qs + 16 + 4 * c);
            const __m256i axl = _mm256_sign_epi8(xl, xl), axh = _mm256_sign_epi8(xh, xh);
#pragma GCC unroll 4
            for (int s = 0; s < G; ++s)
#pragma GCC unroll 2
                for (int h = 0; h < 2; ++h) {
                    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[s] + 2 * kGroupRows + 64 * c + 32 * h));
                    const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(v, m4));
                    const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
                    const __m256i plo = _mm256_maddubs_epi16(axl, _mm256_sign_epi8(lo, xl));
                    const __m256i phi = _mm256_maddubs_epi16(axh, _mm256_sign_epi8(hi, xh));
                    sum[s][h] = _mm256_add_epi32(sum[s][h], _mm256_add_epi32(_mm256_madd_epi16(plo, ones), _mm256_madd_epi16(phi, ones)));
                    __asm__("" : "+x"(sum[s][h]));
                }
        }
        const __m256 dx = _mm256_set1_ps(xb.d);
        for (int s = 0; s < G; ++s)
            for (int h = 0; h < 2; ++h)
                acc[s][h][0] = _mm256_add_ps(acc[s][h][0], _mm256_mul_ps(_mm256_mul_ps(half_scales(blk[s] + 16 * h), dx),
                                                                          _mm256_cvtepi32_ps(sum[s][h])));
    }
};

// Packed Q2_K / Q3_K / IQ4_XS groups (layouts in kernels/kquant.h). A ymm holds 4 bytes of each of
// 8 rows. Q2_K / Q3_K: unsigned quants (at most 7), pmaddubsw against a broadcast 4-byte piece.
// Q2_K: the 4 pieces of a 16-element sub-block summed in int16 (at most 4 * 2 * 7 * 128), then
// pmaddwd by (scale, scale) gives scale * dot in int32, mins through the 16-sums. Q3_K's quants
// come whole out of AVX2's own byte triples (Q3KLayout::triples: 19 operations per 8 vectors,
// where the AVX-512 layout's mask bits cost 5 per vector here), each vector holding two elements
// of each of a pair of sub-blocks, so that one pmaddwd scales the pair and the offset of 4 comes
// off in int16 (q3_pair_sum). IQ4_XS: levels looked up signed, |a| times the level
// with a's sign (or |level| times a with the level's sign; pairs at most 2 * 128 * 127), pmaddwd by
// the scale per piece. The reference's float order.
// Scales come out of the scale words with one pshufb per sub-block (int16 pairs in an int32 lane);
// Q3_K's signed scales as 256 (sc - 32) (so pshufb keeps the sign; |256 * sum| < 2^31, shifted
// back exactly), Q2_K's mins as 16 m. A decode (`decode`, token_tiles.h's gemv_both) does both
// 8-row halves in one pass, so each activation piece is broadcast once for 16 rows. Exact integer
// sums in another order than the reference's: the same bits.
constexpr int kGroupTile = 4;  // tokens per GEMM tile, as the K-quants (kquant.cpp)

inline __m256i bcast32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
inline __m256i ld(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
// x unchanged, held in a register at this point: a sum pinned after each add, so that GCC cannot
// reassociate a run of adds into a tree (its products computed early and spilled).
inline __m256i pin(__m256i x) {
    __asm__("" : "+x"(x));
    return x;
}

// pshufb control: bytes k0 and k1 of each int32 lane (row) as its two int16 halves, zero-extended
// (b_k0, b_k1), or (high) times 256, (256 b_k0, 256 b_k1), so that a signed byte stays signed.
inline __m256i pair_ctrl(int k0, int k1, bool high = false) {
    const __m256i lane = _mm256_setr_epi32(0, 0x04040404, 0x08080808, 0x0c0c0c0c, 0, 0x04040404, 0x08080808, 0x0c0c0c0c);
    const uint32_t v = high ? (0x80u | uint32_t(k0) << 8 | 0x80u << 16 | uint32_t(k1) << 24)
                            : (uint32_t(k0) | 0x80u << 8 | uint32_t(k1) << 16 | 0x80u << 24);
    return _mm256_add_epi32(_mm256_set1_epi32(int(v)), lane);  // 0x80 + 12 still zeroes its byte
}

// Q3_K's quant vector u_m (m < 8; bytes 0, 1 of each row sub-block 2p's elements 2m, 2m + 1,
// bytes 2, 3 sub-block 2p + 1's) out of the byte triple v[0..2] of its pair p and half
// (Q3KLayout::triples, kernels/kquant.h): an and, a shift and an and, or (u_6, u_7) both halves
// of the value merged with an or.
inline __m256i triple_quants(const __m256i* v, int m) {
    const __m256i m7 = _mm256_set1_epi8(7), m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    if (m < 6) return _mm256_and_si256(m % 2 ? _mm256_srli_epi16(v[m / 2], 3) : v[m / 2], m7);
    return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v[m - 6], 6), m3),
                           _mm256_and_si256(_mm256_srli_epi16(v[2], m - 2), m4));
}

// Q2_K (Q3 = false) and Q3_K (Q3 = true) groups.
template <bool Q3>
struct Q2Q3Groups {
    using Act = block_q8_K;
    static constexpr int64_t kBlockBytes = Q3 ? kQ3KGroupBlockBytes : kQ2KGroupBlockBytes;
    static constexpr int kTile = 8;  // GEMM tiles unpack a half once into L1: more tokens cost no registers
    static constexpr bool kDecode = true;  // decode: both halves in one pass (token_tiles.h)
    static constexpr int64_t kQs = Q3 ? 32 + 192 : 64 + 256;  // Q3_K: the byte triples (AVX2's layout)

    // Q3_K: the byte triple of pair p, half h
    static inline void triple(const uint8_t* g, int p, int h, __m256i v[3]) {
        for (int c = 0; c < 3; ++c) v[c] = ld(g + kQs + 96 * (2 * p + h) + 32 * c);
    }

    // Q2_K: byte b of word i: sub-block 4 i + b's scale 0..15 in sc, 16 * min in mn.
    static inline void words(const uint8_t* g, int h, __m256i sc[4], __m256i mn[4]) {
        const __m256i lo4 = _mm256_set1_epi32(0x0F0F0F0F);
        for (int i = 0; i < 4; ++i) {
            const __m256i w = ld(g + 64 + 64 * i + 32 * h);
            sc[i] = _mm256_and_si256(w, lo4);
            mn[i] = _mm256_andnot_si256(lo4, w);
        }
    }

    // Q3_K's scale word q of half h: byte b of each row sub-block 4 q + b's scale as sc - 32 (signed).
    static inline __m256i q3_word(const uint8_t* g, int h, int q) {
        const __m256i lo4 = _mm256_set1_epi32(0x0F0F0F0F), hi2 = _mm256_set1_epi32(0x30303030);
        const __m256i w = ld(g + 32 + 64 * (q % 2) + 32 * h), w2 = ld(g + 160 + 32 * h);
        const __m256i lo = _mm256_and_si256(q < 2 ? w : _mm256_srli_epi32(w, 4), lo4);
        const __m256i hi = _mm256_and_si256(
            q == 0 ? _mm256_slli_epi32(w2, 4) : q == 1 ? _mm256_slli_epi32(w2, 2) : q == 2 ? w2 : _mm256_srli_epi32(w2, 2), hi2);
        return _mm256_sub_epi8(_mm256_or_si256(lo, hi), _mm256_set1_epi8(32));
    }

    // Field s (elements 4 s .. 4 s + 3 of the sub-block) of a Q2_K quant vector, unsigned.
    static inline __m256i field(__m256i raw, int s) {
        const __m256i m3 = _mm256_set1_epi8(3);
        return _mm256_and_si256(s ? _mm256_srli_epi16(raw, 2 * s) : raw, m3);
    }

    // Q2_K: sumi[t] = sum_j sb[j] * <ub[j], a_t's sub-block j> for N tokens, 4 at a time (each
    // unpacked vector loaded once for the 4; their sums stay in registers).
    template <int N>
    static inline void dots(const __m256i (*ub)[4], const __m256i* sb, const block_q8_K* const* a, __m256i* sumi) {
        if constexpr (N > 4) {
            dots<4>(ub, sb, a, sumi);
            dots<N - 4>(ub, sb, a + 4, sumi + 4);
        } else {
            __m256i si[N];
            for (int t = 0; t < N; ++t) si[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
            for (int j = 0; j < 16; ++j) {
                const __m256i u0 = ub[j][0], u1 = ub[j][1], u2 = ub[j][2], u3 = ub[j][3], scale = sb[j];
#pragma GCC unroll 4
                for (int t = 0; t < N; ++t) {
                    const int8_t* x = a[t]->qs + 16 * j;
                    const __m256i acc = _mm256_add_epi16(
                        _mm256_add_epi16(_mm256_maddubs_epi16(u0, bcast32(x)), _mm256_maddubs_epi16(u1, bcast32(x + 4))),
                        _mm256_add_epi16(_mm256_maddubs_epi16(u2, bcast32(x + 8)), _mm256_maddubs_epi16(u3, bcast32(x + 12))));
                    si[t] = _mm256_add_epi32(si[t], _mm256_madd_epi16(acc, scale));
                }
            }
            for (int t = 0; t < N; ++t) sumi[t] = si[t];
        }
    }

    // Q2_K: rows [8 h0, 8 h0 + 8 H) against T tokens: fsum[h * T + t] += a_t.d * (...), as the
    // reference. A decode (T = 1) runs both halves in one pass; a GEMM tile (T > 1) one half.
    template <int H, int T>
    static inline void block(const uint8_t* g, const block_q8_K* const* a, int h0, __m256* fsum) {
        static_assert(T == 1 || H == 1, "GEMM tiles are one half at a time");
        __m256i sc[H][4], mn[H][4], sumi[H][T];
        for (int h = 0; h < H; ++h) words(g, h0 + h, sc[h], mn[h]);
        if constexpr (T > 1) {
            // The half's quants and scales unpacked once into L1, then 4 tokens at a time (unpacking
            // in registers for a 4-token tile spilled: 16 ymm)
            __m256i ub[16][4], sb[16];
#pragma GCC unroll 1
            for (int q = 0; q < 4; ++q) {  // a loop of 4 sub-blocks: GCC's schedule of all 16 spilled
                const __m256i wq = sc[0][q];
#pragma GCC unroll 4
                for (int jj = 0; jj < 4; ++jj) {
                    const int j = 4 * q + jj;
                    const __m256i raw = ld(g + kQs + 64 * j + 32 * h0);
#pragma GCC unroll 4
                    for (int s = 0; s < 4; ++s) ub[j][s] = field(raw, s);
                    sb[j] = _mm256_shuffle_epi8(wq, pair_ctrl(jj, jj));
                }
            }
            dots<T>(ub, sb, a, sumi[0]);
        } else {
            for (int h = 0; h < H; ++h) sumi[h][0] = _mm256_setzero_si256();
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j) {
                __m256i raw[H], acc[H];
                for (int h = 0; h < H; ++h) raw[h] = ld(g + kQs + 64 * j + 32 * (h0 + h));
#pragma GCC unroll 4
                for (int s = 0; s < 4; ++s) {  // each activation piece broadcast once for the H halves
                    const __m256i x = bcast32(a[0]->qs + 16 * j + 4 * s);
                    for (int h = 0; h < H; ++h) {
                        const __m256i p = _mm256_maddubs_epi16(field(raw[h], s), x);
                        acc[h] = s ? _mm256_add_epi16(acc[h], p) : p;
                    }
                }
                for (int h = 0; h < H; ++h) {
                    const __m256i scale = _mm256_shuffle_epi8(sc[h][j / 4], pair_ctrl(j % 4, j % 4));
                    sumi[h][0] = _mm256_add_epi32(sumi[h][0], _mm256_madd_epi16(acc[h], scale));
                }
            }
        }
        // sum_j 16 m_j * bsums_j, adjacent sub-blocks paired
        for (int h = 0; h < H; ++h) {
            __m256i off[T];
            for (int t = 0; t < T; ++t) off[t] = _mm256_setzero_si256();
#pragma GCC unroll 8
            for (int i = 0; i < 8; ++i) {
                const __m256i pr = _mm256_shuffle_epi8(mn[h][i / 2], pair_ctrl(2 * (i % 2), 2 * (i % 2) + 1));
                for (int t = 0; t < T; ++t) off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(pr, bcast32(a[t]->bsums + 2 * i)));
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * (h0 + h))));
            const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 16 * (h0 + h))));
            for (int t = 0; t < T; ++t) {  // d * sumi - dmin * summ
                const __m256 v = _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[h][t])),
                                               _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(_mm256_srai_epi32(off[t], 4))));
                fsum[h * T + t] = _mm256_add_ps(fsum[h * T + t], _mm256_mul_ps(_mm256_set1_ps(a[t]->d), v));
            }
        }
    }

    // Q3_K: the int32 sum of pair p (sub-blocks 2p, 2p + 1) of one half added to sumi: the 8 quant
    // vectors' pmaddubsw sums (int16 per row: sub-block 2p's in the low half, 2p + 1's in the high;
    // at most 16 * 7 * 128) less 4 bsums of each (at most 4 * 16 * 128: the offset of 4 in int16,
    // |difference| < 2^15), then one pmaddwd by the pair's scales (256 (sc - 32), 256 (sc' - 32)).
    // Activations interleaved per pair (q3_K_pair_activations): piece m at qs + 32 p + 4 m.
    static inline __m256i q3_pair_sum(__m256i acc, __m256i b4, __m256i scales, __m256i sumi) {
        return pin(_mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_sub_epi16(acc, b4), scales)));
    }

    // Q3_K decode (one token, both halves): a scale word per half at a time, each pair's 8 vectors
    // summed in int16 with one activation broadcast for both halves; sums, words, the pair's int16
    // sums and the broadcast stay in registers. The order of m frees u_0's triple byte first.
    static inline void decode_q3(const uint8_t* g, const block_q8_K* a, __m256* fsum) {
        alignas(32) int16_t b4[16];  // 4 * bsums (|4 bsum| <= 4 * 16 * 128: int16)
        _mm256_store_si256(reinterpret_cast<__m256i*>(b4), _mm256_slli_epi16(ld(reinterpret_cast<const uint8_t*>(a->bsums)), 2));
        __m256i sumi[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
#pragma GCC unroll 4
        for (int q = 0; q < 4; ++q) {
            const __m256i wq[2] = {q3_word(g, 0, q), q3_word(g, 1, q)};
#pragma GCC unroll 2
            for (int pp = 0; pp < 2; ++pp) {
                const int p = 2 * q + pp;
                __m256i v[2][3], acc[2];
                for (int h = 0; h < 2; ++h) triple(g, p, h, v[h]);
                constexpr int order[8] = {0, 1, 6, 4, 5, 7, 2, 3};
#pragma GCC unroll 8
                for (int k = 0; k < 8; ++k) {
                    const int m = order[k];
                    const __m256i x = bcast32(a->qs + 32 * p + 4 * m);
                    for (int h = 0; h < 2; ++h) {
                        const __m256i prod = _mm256_maddubs_epi16(triple_quants(v[h], m), x);
                        acc[h] = k ? pin(_mm256_add_epi16(acc[h], prod)) : prod;
                    }
                }
                const __m256i b = bcast32(b4 + 2 * p);
                for (int h = 0; h < 2; ++h) sumi[h] = q3_pair_sum(acc[h], b, _mm256_shuffle_epi8(wq[h], pair_ctrl(2 * pp, 2 * pp + 1, true)), sumi[h]);
            }
        }
        const __m256 ad = _mm256_set1_ps(a->d);
        for (int h = 0; h < 2; ++h) {  // a.d * (d * (sumi - 4 off)): |256 (sumi - 4 off)| < 2^31, the shift exact
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
            fsum[h] = _mm256_add_ps(fsum[h], _mm256_mul_ps(ad, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_srai_epi32(sumi[h], 8)))));
        }
    }

    // Q3_K, N tokens against the unpacked half (ub: each pair's 8 quant vectors, sp: its scales),
    // 4 tokens at a time (each unpacked vector loaded once for the 4; their sums in registers).
    template <int N>
    static inline void q3_dots(const __m256i (*ub)[8], const __m256i* sp, const block_q8_K* const* a, __m256i* sumi) {
        if constexpr (N > 4) {
            q3_dots<4>(ub, sp, a, sumi);
            q3_dots<N - 4>(ub, sp, a + 4, sumi + 4);
        } else {
            __m256i si[N];
            for (int t = 0; t < N; ++t) si[t] = _mm256_setzero_si256();
#pragma GCC unroll 1
            for (int p = 0; p < 8; ++p) {
                __m256i acc[N];
#pragma GCC unroll 8
                for (int m = 0; m < 8; ++m) {
                    const __m256i u = ub[p][m];
#pragma GCC unroll 4
                    for (int t = 0; t < N; ++t) {
                        const __m256i prod = _mm256_maddubs_epi16(u, bcast32(a[t]->qs + 32 * p + 4 * m));
                        acc[t] = m ? pin(_mm256_add_epi16(acc[t], prod)) : prod;
                    }
                }
#pragma GCC unroll 4
                for (int t = 0; t < N; ++t)
                    si[t] = q3_pair_sum(acc[t], _mm256_slli_epi16(bcast32(a[t]->bsums + 2 * p), 2), sp[p], si[t]);
            }
            for (int t = 0; t < N; ++t) sumi[t] = si[t];
        }
    }

    // Q3_K GEMM tile: half h against T tokens, the half's quants and scales unpacked once into L1.
    template <int T>
    static inline void q3_tile(const uint8_t* g, const block_q8_K* const* a, int h, __m256* fsum) {
        __m256i ub[8][8], sp[8], sumi[T];
#pragma GCC unroll 1
        for (int q = 0; q < 4; ++q) {  // a loop: GCC's schedule of all 8 pairs at once spilled
            const __m256i w = q3_word(g, h, q);
#pragma GCC unroll 2
            for (int pp = 0; pp < 2; ++pp) {
                const int p = 2 * q + pp;
                __m256i v[3];
                triple(g, p, h, v);
#pragma GCC unroll 8
                for (int m = 0; m < 8; ++m) ub[p][m] = triple_quants(v, m);
                sp[p] = _mm256_shuffle_epi8(w, pair_ctrl(2 * pp, 2 * pp + 1, true));
            }
        }
        q3_dots<T>(ub, sp, a, sumi);
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
        for (int t = 0; t < T; ++t)
            fsum[t] = _mm256_add_ps(fsum[t], _mm256_mul_ps(_mm256_set1_ps(a[t]->d), _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_srai_epi32(sumi[t], 8)))));
    }

    template <int T>
    static inline void step(const uint8_t* g, const block_q8_K* const* a, int h, __m256* fsum) {
        if constexpr (Q3)
            q3_tile<T>(g, a, h, fsum);
        else
            block<1, T>(g, a, h, fsum);
    }
    static inline void decode(const uint8_t* g, const block_q8_K* a, __m256* fsum) {
        if constexpr (Q3)
            decode_q3(g, a, fsum);
        else
            block<2, 1>(g, &a, 0, fsum);
    }
};

struct IQ4XSGroups {
    using Act = block_q8_K;
    static constexpr int64_t kBlockBytes = kIQ4XSGroupBlockBytes;
    static constexpr int kTile = kGroupTile;
    static constexpr bool kDecode = true;  // decode: both halves in one pass (token_tiles.h)

    // Each row's 6-bit scales ls_j (0..63) as bytes: w[0] j = 0, 2, 4, 6; w[1] j = 1, 3, 5, 7.
    static inline void words(const uint8_t* g, int h, __m256i w[2]) {
        const __m256i sl = ld(g + 64 + 32 * h), lo4 = _mm256_set1_epi8(0x0F);
        const __m256i sh = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 16 * h)));
        // byte k of each lane <- byte k / 2 of scales_h (the 2-bit fields of j = 2k and 2k + 1)
        const __m256i t = _mm256_shuffle_epi8(sh, _mm256_setr_epi8(0, 0, 1, 1, 4, 4, 5, 5, 8, 8, 9, 9, 12, 12, 13, 13, 0, 0, 1, 1, 4, 4, 5, 5,
                                                                   8, 8, 9, 9, 12, 12, 13, 13));
        const __m256i even = _mm256_set1_epi32(0x00300030), odd = _mm256_set1_epi32(0x30003000);
        w[0] = _mm256_or_si256(_mm256_and_si256(sl, lo4),
                               _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(t, 4), even), _mm256_and_si256(t, odd)));
        w[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(sl, 4), lo4),
                               _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(t, 2), even), _mm256_and_si256(_mm256_srli_epi32(t, 2), odd)));
    }

    template <int H, int T>
    static inline void block(const uint8_t* g, const block_q8_K* const* a, int h0, __m256* fsum) {
        const __m256i m4 = _mm256_set1_epi8(0x0F);
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl)));
        __m256i w[H][2], sumi[H][T];
        for (int h = 0; h < H; ++h) {
            words(g, h0 + h, w[h]);
            for (int t = 0; t < T; ++t) sumi[h][t] = _mm256_setzero_si256();
        }
        const uint8_t* qs = g + 128;
#pragma GCC unroll 1
        for (int j = 0; j < 8; ++j) {
            __m256i ls[H];  // (ls_j - 32, ls_j - 32) per row
            for (int h = 0; h < H; ++h)
                ls[h] = _mm256_sub_epi16(_mm256_shuffle_epi8(w[h][j % 2], pair_ctrl(j / 2, j / 2)), _mm256_set1_epi16(32));
#pragma GCC unroll 4
            for (int c = 0; c < 4; ++c) {
                if constexpr (T == 1) {  // |a| (once for the H halves) times the level with a's sign
                    const __m256i xl = bcast32(a[0]->qs + 32 * j + 4 * c), xh = bcast32(a[0]->qs + 32 * j + 16 + 4 * c);
                    const __m256i axl = _mm256_sign_epi8(xl, xl), axh = _mm256_sign_epi8(xh, xh);
                    for (int h = 0; h < H; ++h) {
                        const __m256i raw = ld(qs + 64 * (4 * j + c) + 32 * (h0 + h));
                        const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, m4));
                        const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4));
                        const __m256i plo = _mm256_maddubs_epi16(axl, _mm256_sign_epi8(lo, xl));
                        const __m256i phi = _mm256_maddubs_epi16(axh, _mm256_sign_epi8(hi, xh));
                        sumi[h][0] = _mm256_add_epi32(sumi[h][0], _mm256_add_epi32(_mm256_madd_epi16(plo, ls[h]), _mm256_madd_epi16(phi, ls[h])));
                        __asm__("" : "+x"(sumi[h][0]));  // kept as one sum (no tree of products)
                    }
                } else {  // |level| (once for the T tokens) times a with the level's sign
                    for (int h = 0; h < H; ++h) {
                        const __m256i raw = ld(qs + 64 * (4 * j + c) + 32 * (h0 + h));
                        const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, m4));
                        const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4));
                        const __m256i alo = _mm256_sign_epi8(lo, lo), ahi = _mm256_sign_epi8(hi, hi);
                        for (int t = 0; t < T; ++t) {
                            const __m256i plo = _mm256_maddubs_epi16(alo, _mm256_sign_epi8(bcast32(a[t]->qs + 32 * j + 4 * c), lo));
                            const __m256i phi = _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(bcast32(a[t]->qs + 32 * j + 16 + 4 * c), hi));
                            sumi[h][t] = _mm256_add_epi32(sumi[h][t], _mm256_add_epi32(_mm256_madd_epi16(plo, ls[h]), _mm256_madd_epi16(phi, ls[h])));
                        }
                    }
                }
            }
        }
        for (int h = 0; h < H; ++h) {
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * (h0 + h))));
            for (int t = 0; t < T; ++t)
                fsum[h * T + t] = _mm256_add_ps(fsum[h * T + t], _mm256_mul_ps(_mm256_set1_ps(a[t]->d), _mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[h][t]))));
        }
    }

    template <int T>
    static inline void step(const uint8_t* g, const block_q8_K* const* a, int h, __m256* fsum) {
        block<1, T>(g, a, h, fsum);
    }
    static inline void decode(const uint8_t* g, const block_q8_K* a, __m256* fsum) { block<2, 1>(g, &a, 0, fsum); }
};

}  // namespace

}  // namespace avx2

void fill_lowbit_avx2(QuantKernels&, MatmulKernels& m, KQuantKernels& k) {
    using namespace avx2;
    m.gemm_q4_1 = gemm_q8a<Q41Groups>;
    m.gemm_iq4_nl = gemm_q8a<IQ4NLGroups>;
    m.gemv_pair_q4_1 = gemv_pair<Q41Groups>;
    m.gemv_pair_iq4_nl = gemv_pair<IQ4NLGroups>;
    x86_shared::fill_lowbit_kquant_dots<avx2::Tag>(k);
    k.gemm_q2_K_groups = gemm_q8K<Q2Q3Groups<false>>;
    k.gemm_q3_K_groups = gemm_q8K<Q2Q3Groups<true>>;
    k.gemm_iq4_xs_groups = gemm_q8K<IQ4XSGroups>;
    k.q3_K_layout = Q3KLayout::triples;
}

}  // namespace llamix
