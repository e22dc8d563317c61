// AVX-512 (VNNI) K-quant dot products against Q8_K activations: 64 quants per vpdpbusd, the
// sub-block scales applied to the int32 partial sums; each super-block is unpacked once for up to
// kMaxTokens activation rows (the row loop is shared with AVX2: kernels/x86_shared/kquant_dot_rows.h).
// Integer sums per super-block are exact
// and combined in float32 as the reference does: bit-identical to kernels/ref/kquant_ref.cpp.
// GCC 12's AVX-512 intrinsics pass _mm512_undefined_*() as a mask source and trip
// -Wmaybe-uninitialized (GCC bug 105593, fixed in 13): a false positive, silenced here only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "common/fp16.h"
#include "kernels/kquant.h"
#include "kernels/x86_avx512/group_tile_adapters.h"
#include "kernels/x86_shared/kquant_dot_rows.h"
#include "kernels/x86_shared/quantize_q8_K.h"

namespace llamix {
namespace avx512 {

struct Tag;  // names this ISA's copies of kernels/x86_shared code (defined in lowbit.cpp)

namespace {

inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }
// 32 bytes in both halves; shifting the halves by different counts then splits the nibbles.
// (No 256->512 insert or cast: GCC 12 warns about their undefined upper half.)
inline __m512i broadcast256(const void* p) { return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p))); }
inline __m512i shift_halves(__m512i v, int lo, int hi) {
    return _mm512_srlv_epi16(v, _mm512_mask_blend_epi16(0xFFFF0000u, _mm512_set1_epi16(short(lo)), _mm512_set1_epi16(short(hi))));
}
// A super-block unpacked once for up to kMaxTokens activation rows: q[c] holds the 64 unsigned
// quants that meet activations 64c..64c+63, s[c] the sub-block scale of each int32 lane.
struct Unpacked {
    __m512i q[4], s[4];
    __m256i bsum_mul;  // int16 multiplier of each of the 16 activation sums: Q4_K/Q5_K mins m_(i/2), Q6_K scales
    float d, dmin;
};

// Scales of chunk c (two sub-blocks) per int32 lane, and each activation sum's min (int16).
inline void unpack_scales(const uint8_t* scales, Unpacked& u) {
    alignas(16) uint8_t sm[16];
    kquant_scales_mins(scales, sm);
    const __m128i b = _mm_load_si128(reinterpret_cast<const __m128i*>(sm));
    const __m512i s32 = _mm512_cvtepu8_epi32(b);  // sc0..sc7, m0..m7
    for (int c = 0; c < 4; ++c)
        u.s[c] = _mm512_permutexvar_epi32(_mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(2 * c), _mm512_set1_epi32(2 * c + 1)), s32);
    u.bsum_mul = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(b, b));  // m0 m0 m1 m1 ... m7 m7
}

inline void unpack(const block_q4_K& x, Unpacked& u) {
    const __m512i m4 = _mm512_set1_epi8(0x0F);
    unpack_scales(x.scales, u);
    for (int c = 0; c < 4; ++c)  // low nibbles: elements 0..31 of the chunk, high nibbles: 32..63
        u.q[c] = _mm512_and_si512(shift_halves(broadcast256(x.qs + 32 * c), 0, 4), m4);
    u.d = fp16_to_fp32(x.d);
    u.dmin = fp16_to_fp32(x.dmin);
}

inline void unpack(const block_q5_K& x, Unpacked& u) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), one = _mm512_set1_epi8(1);
    unpack_scales(x.scales, u);
    const __m512i qh = broadcast256(x.qh);
    for (int c = 0; c < 4; ++c) {
        // fifth bits: bit 2c of qh for the low half, bit 2c + 1 for the high half
        const __m512i h = _mm512_slli_epi16(_mm512_and_si512(shift_halves(qh, 2 * c, 2 * c + 1), one), 4);
        u.q[c] = _mm512_or_si512(_mm512_and_si512(shift_halves(broadcast256(x.qs + 32 * c), 0, 4), m4), h);
    }
    u.d = fp16_to_fp32(x.d);
    u.dmin = fp16_to_fp32(x.dmin);
}

inline void unpack(const block_q6_K& x, Unpacked& u) {
    const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(3);
    // int32 lane i of a vpdpbusd result holds elements 4i..4i+3: scale (i / 4) of four
    const __m128i spread = _mm_setr_epi8(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    for (int h = 0; h < 2; ++h) {
        // elements 0..63 of the half: low nibbles of ql[0..63], qh bits (0,1) then (2,3);
        // elements 64..127: high nibbles, qh bits (4,5) then (6,7)
        const __m512i ql = load512(x.ql + 64 * h);
        const __m512i qh = broadcast256(x.qh + 32 * h);
        u.q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, m4),
                                     _mm512_slli_epi16(_mm512_and_si512(shift_halves(qh, 0, 2), m2), 4));
        u.q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), m4),
                                         _mm512_slli_epi16(_mm512_and_si512(shift_halves(qh, 4, 6), m2), 4));
        for (int g = 0; g < 2; ++g) {
            int32_t four;
            __builtin_memcpy(&four, x.scales + 8 * h + 4 * g, 4);
            u.s[2 * h + g] = _mm512_cvtepi8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128(four), spread));
        }
    }
    u.bsum_mul = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales)));
    u.d = fp16_to_fp32(x.d);
}

inline __m256i fold(__m512i v) { return _mm256_add_epi32(_mm512_extracti64x4_epi64(v, 0), _mm512_extracti64x4_epi64(v, 1)); }

// sum over the super-block of scale * q * a, folded to the 8 int32 lanes the shared dot_rows
// reduces (exact).
inline __m256i scaled_sum(const Unpacked& u, const int8_t* a) {
    __m512i acc = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c)
        acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u.q[c], load512(a + 64 * c)), u.s[c]));
    return fold(acc);
}

// Packed Q4_K / Q5_K groups (kernels/kquant.h): 16 rows per vector, so vpdpbusd against a
// broadcast 4-byte piece of the activations gives 16 row dots at once, with no horizontal sums
// and no per-row unpacking of the scales. Per super-block and row the integer sums are the
// reference's (exact), then combined in float32 with its operations and order: bit-identical.
constexpr int kGroupTile = 4;  // tokens per register tile: 5 accumulators each + the weights

inline __m512i bcast32(const void* p) {
    int32_t v;
    __builtin_memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

// Byte k of each dword of v, zero-extended, by one vpshufb (its indices stay within 128-bit
// lanes): to the whole dword (kByteToDword), or to both int16 halves (kByteToWordPair).
constexpr uint32_t kByteToDword = 0x80808000u, kByteToWordPair = 0x80008000u;
inline __m512i spread_byte(__m512i v, int k, uint32_t pattern) {
    const __m512i lane_dwords = _mm512_set4_epi32(0x0C0C0C0C, 0x08080808, 0x04040404, 0);  // each dword's offset
    const uint32_t kk = uint32_t(k) * 0x01010101u;
    return _mm512_shuffle_epi8(v, _mm512_add_epi32(_mm512_set1_epi32(int32_t(pattern | (kk & ~pattern))), lane_dwords));
}

template <bool Q5, int T, int G = 1>
void group_tile(const uint8_t* const* w, int64_t nsb, const uint8_t* xq, int64_t xq_stride, float* const* y, int64_t y_stride,
                const __mmask16* rows) {
    constexpr int64_t kBlockBytes = Q5 ? kQ5KGroupBlockBytes : kQ4KGroupBlockBytes;
    constexpr int64_t kQs = 64 + 3 * 64, kQh = kQs + 2048;  // offsets in a packed super-block
    const __m512i m4 = _mm512_set1_epi8(0x0F), low6 = _mm512_set1_epi32(0x3f3f3f3f);
    const __m512i low4 = _mm512_set1_epi32(0x0f0f0f0f), low2 = _mm512_set1_epi32(0x03030303);
    // Q4_K keeps the high nibbles in place (16 * n: one AND, no shift); their scaled sums are
    // shifted back once per super-block, exactly (|16 * sum| < 2^28)
    constexpr bool kHigh16 = !Q5;
    const __m512i h4 = _mm512_set1_epi8(char(0xF0));
    __m512 fsum_[G][T];
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) fsum_[s][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; ++b) {
#pragma GCC unroll 2
        for (int s = 0; s < G; ++s) {
            const uint8_t* g = w[s] + b * kBlockBytes;
            __m512* fsum = fsum_[s];
            if constexpr (T == 1) {  // decode streams the weights once: keep more lines in flight
                // (Q4_K over 128 MiB: 31 GB/s without, 37 at 2 KiB ahead, 41 at 4 KiB, 43 at 8 KiB);
                // G interleaved groups (decode pairs) each advance G times slower: 1 / G the bytes
                for (int64_t o = 0; o < kBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(g + 4096 / G + o), _MM_HINT_T0);
            }
            const block_q8_K* a[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const block_q8_K*>(xq + t * xq_stride) + b;
            // the 12-byte scale fields of 16 rows as three words each: sc0..3, sc4..7, m0..3, m4..7
            const __m512i w0 = _mm512_loadu_si512(g + 64), w1 = _mm512_loadu_si512(g + 128), w2 = _mm512_loadu_si512(g + 192);
            const __m512i sc[2] = {_mm512_and_si512(w0, low6),
                                   _mm512_or_si512(_mm512_and_si512(w2, low4),
                                                   _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w0, 6), low2), 4))};
            const __m512i mn[2] = {_mm512_and_si512(w1, low6),
                                   _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(w2, 4), low4),
                                                   _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w1, 6), low2), 4))};
            __m512i sumi[T], sumi_hi[T], summ[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) sumi[t] = sumi_hi[t] = summ[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int p = 0; p < 4; ++p) {  // sub-blocks 2p (low nibbles) and 2p + 1 (high nibbles)
                __m512i lo_acc[T], hi_acc[T];
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) lo_acc[t] = hi_acc[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
                for (int c = 0; c < 8; ++c) {
                    const __m512i raw = _mm512_loadu_si512(g + kQs + (p * 8 + c) * 64);
                    __m512i lo = _mm512_and_si512(raw, m4);
                    __m512i hi = kHigh16 ? _mm512_and_si512(raw, h4) : _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                    if constexpr (Q5) {  // fifth bits: bit j of qh for sub-block j
                        const __m512i qh = _mm512_loadu_si512(g + kQh + c * 64), v16 = _mm512_set1_epi8(16);
                        lo = _mm512_mask_add_epi8(lo, _mm512_test_epi8_mask(qh, _mm512_set1_epi8(char(1 << (2 * p)))), lo, v16);
                        hi = _mm512_mask_add_epi8(hi, _mm512_test_epi8_mask(qh, _mm512_set1_epi8(char(2 << (2 * p)))), hi, v16);
                    }
#pragma GCC unroll 4
                    for (int t = 0; t < T; ++t) {
                        lo_acc[t] = _mm512_dpbusd_epi32(lo_acc[t], lo, bcast32(a[t]->qs + 64 * p + 4 * c));
                        hi_acc[t] = _mm512_dpbusd_epi32(hi_acc[t], hi, bcast32(a[t]->qs + 64 * p + 32 + 4 * c));
                    }
                }
                // byte (2p % 4) and (2p % 4 + 1) of the scale word: sub-blocks 2p and 2p + 1
                const __m512i s_lo = spread_byte(sc[p / 2], (2 * p) % 4, kByteToDword);
                const __m512i s_hi = spread_byte(sc[p / 2], (2 * p) % 4 + 1, kByteToDword);
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(lo_acc[t], s_lo));
                    (kHigh16 ? sumi_hi[t] : sumi[t]) = _mm512_add_epi32(kHigh16 ? sumi_hi[t] : sumi[t], _mm512_mullo_epi32(hi_acc[t], s_hi));
                }
            }
            if constexpr (kHigh16) {
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) sumi[t] = _mm512_add_epi32(sumi[t], _mm512_srai_epi32(sumi_hi[t], 4));
            }
            // summ = sum_j m_j * (bsums[2j] + bsums[2j+1]): (m_j, m_j) int16 pairs against the two sums
#pragma GCC unroll 8
            for (int j = 0; j < 8; ++j) {
                const __m512i pair = spread_byte(mn[j / 4], j % 4, kByteToWordPair);
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) summ[t] = _mm512_dpwssd_epi32(summ[t], pair, bcast32(a[t]->bsums + 2 * j));
            }
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)));
            const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32)));
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) {  // a.d * (d * sumi - dmin * summ), as the reference
                const __m512 v = _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi[t])), _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(summ[t])));
                fsum[t] = _mm512_add_ps(fsum[t], _mm512_mul_ps(_mm512_set1_ps(a[t]->d), v));
            }
        }
    }
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[s] + t * y_stride, rows[s], fsum_[s][t]);
}

// Q6_K: 16 sub-blocks of 16 with signed scales, 6-bit unsigned quants (offset 32, removed with
// the activation sums as the reference does: sumi = sum_j sc_j * (s_j - 32 * bsum_j)).
template <int T, int G = 1>
void q6_group_tile(const uint8_t* const* w, int64_t nsb, const uint8_t* xq, int64_t xq_stride, float* const* y, int64_t y_stride,
                   const __mmask16* rows) {
    constexpr int64_t kScales = 32, kQl = kScales + 256, kQh = kQl + 2048;  // offsets in a packed super-block
    const __m512i m4 = _mm512_set1_epi8(0x0F), m30 = _mm512_set1_epi8(0x30);
    __m512 fsum_[G][T];
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) fsum_[s][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; ++b) {
#pragma GCC unroll 2
        for (int s = 0; s < G; ++s) {
            const uint8_t* g = w[s] + b * kQ6KGroupBlockBytes;
            __m512* fsum = fsum_[s];
            if constexpr (T == 1) {
                for (int64_t o = 0; o < kQ6KGroupBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(g + 4096 / G + o), _MM_HINT_T0);
            }
            const block_q8_K* a[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const block_q8_K*>(xq + t * xq_stride) + b;
            __m512i sumi[T], off[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) sumi[t] = off[t] = _mm512_setzero_si512();
            for (int u = 0; u < 8; ++u) {  // sub-blocks u (chunks 4u..4u+3) and 8 + u (chunks 32 + 4u..)
                __m512i acc_a[T], acc_b[T];
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) acc_a[t] = acc_b[t] = _mm512_setzero_si512();
#pragma GCC unroll 2
                for (int h = 2 * u; h < 2 * u + 2; ++h) {
                    // chunks 2h and 2h + 1 share one vector of high bits: fields (bits 0-1, 2-3) for
                    // chunk 2h and 32 + 2h, (4-5, 6-7) for 2h + 1 and 33 + 2h; each moved to bits 4-5
                    const __m512i hb = _mm512_loadu_si512(g + kQh + h * 64);
                    const __m512i high[4] = {_mm512_slli_epi16(hb, 4), _mm512_slli_epi16(hb, 2), hb, _mm512_srli_epi16(hb, 2)};
#pragma GCC unroll 2
                    for (int odd = 0; odd < 2; ++odd) {
                        const int c = 2 * h + odd;
                        const __m512i raw = _mm512_loadu_si512(g + kQl + c * 64);
                        // ternlog 0xE4: m4 ? nibble : high bits (bits 4-5 only after the AND)
                        const __m512i qa = _mm512_ternarylogic_epi32(raw, _mm512_and_si512(high[2 * odd], m30), m4, 0xE4);
                        const __m512i qb = _mm512_ternarylogic_epi32(_mm512_srli_epi16(raw, 4), _mm512_and_si512(high[2 * odd + 1], m30), m4, 0xE4);
#pragma GCC unroll 4
                        for (int t = 0; t < T; ++t) {
                            acc_a[t] = _mm512_dpbusd_epi32(acc_a[t], qa, bcast32(a[t]->qs + 4 * c));
                            acc_b[t] = _mm512_dpbusd_epi32(acc_b[t], qb, bcast32(a[t]->qs + 128 + 4 * c));
                        }
                    }
                }
                // scales of sub-blocks u and 8 + u: int16 pairs (sc_2q, sc_2q+1) per row, q = u / 2 and 4 + u / 2
                const __m512i pa = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + kScales + (u / 2) * 32)));
                const __m512i pb = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + kScales + (4 + u / 2) * 32)));
                const __m512i sa = u % 2 ? _mm512_srai_epi32(pa, 16) : _mm512_srai_epi32(_mm512_slli_epi32(pa, 16), 16);
                const __m512i sb = u % 2 ? _mm512_srai_epi32(pb, 16) : _mm512_srai_epi32(_mm512_slli_epi32(pb, 16), 16);
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t)
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_add_epi32(_mm512_mullo_epi32(acc_a[t], sa), _mm512_mullo_epi32(acc_b[t], sb)));
            }
            // the offsets sum_j sc_j * bsum_j, after the products so that fewer registers are live there
#pragma GCC unroll 8
            for (int q = 0; q < 8; ++q) {
                const __m512i pairs = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + kScales + q * 32)));
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) off[t] = _mm512_dpwssd_epi32(off[t], pairs, bcast32(a[t]->bsums + 2 * q));
            }
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g)));
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) {  // a.d * (d * sumi), as the reference
                const __m512i total = _mm512_sub_epi32(sumi[t], _mm512_slli_epi32(off[t], 5));
                fsum[t] = _mm512_add_ps(fsum[t], _mm512_mul_ps(_mm512_set1_ps(a[t]->d), _mm512_mul_ps(d, _mm512_cvtepi32_ps(total))));
            }
        }
    }
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[s] + t * y_stride, rows[s], fsum_[s][t]);
}

// Tiles of kGroupTile tokens, then one smaller tile for the rest.
template <GroupTileFn Tile1, GroupTileFn Tile2, GroupTileFn Tile3, GroupTileFn Tile4>
void gemm_groups(const uint8_t* w, int64_t nsb, const void* xq, int64_t xq_stride, int64_t n, float* y, int64_t y_stride,
                 int rows) {
    static_assert(kGroupTile == 4, "one tile function per token count 1..4");
    static constexpr GroupTileFn tails[kGroupTile] = {nullptr, Tile1, Tile2, Tile3};
    const auto* x = static_cast<const uint8_t*>(xq);
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kGroupTile <= n; t += kGroupTile) Tile4(w, nsb, x + t * xq_stride, xq_stride, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nsb, x + t * xq_stride, xq_stride, y + t * y_stride, y_stride, mask);
}

}  // namespace


}  // namespace avx512

void fill_kquant_avx512(KQuantKernels& k) {
    using namespace avx512;
    k.quantize_act_q8_K = x86_shared::quantize_act_q8_K<Tag>;
    k.dot_q4_K_q8_K = x86_shared::dot_rows<block_q4_K, Unpacked, unpack, scaled_sum>;
    k.dot_q5_K_q8_K = x86_shared::dot_rows<block_q5_K, Unpacked, unpack, scaled_sum>;
    k.dot_q6_K_q8_K = x86_shared::dot_rows<block_q6_K, Unpacked, unpack, scaled_sum>;
    k.gemm_q4_K_groups = gemm_groups<one_group<group_tile<false, 1>>, one_group<group_tile<false, 2>>,
                                     one_group<group_tile<false, 3>>, one_group<group_tile<false, 4>>>;
    k.gemm_q5_K_groups = gemm_groups<one_group<group_tile<true, 1>>, one_group<group_tile<true, 2>>,
                                     one_group<group_tile<true, 3>>, one_group<group_tile<true, 4>>>;
    k.q5_K_layout = Q5KLayout::nibbles;  // its own layout, not AVX2's
    k.gemm_q6_K_groups = gemm_groups<one_group<q6_group_tile<1>>, one_group<q6_group_tile<2>>, one_group<q6_group_tile<3>>,
                                     one_group<q6_group_tile<4>>>;
    k.gemv_pair_q4_K = gemv_pair<group_tile<false, 1, 2>>;
    k.gemv_pair_q5_K = gemv_pair<group_tile<true, 1, 2>>;
    k.gemv_pair_q6_K = gemv_pair<q6_group_tile<1, 2>>;
}

}  // namespace llamix
