// The AVX-512 VNNI kernels of Q4_1 and IQ4_NL on the packed 16-row groups (kernels/matmul.h) and
// of the packed Q2_K, Q3_K and IQ4_XS groups (kernels/kquant.h), included by lowbit.cpp (AVX-512
// VNNI) and lowbit_vbmi.cpp (the same code with AVX512-VBMI lookups and GFNI, LLAMIX_LOWBIT_VBMI = 1).
// Everything here has internal linkage, so each file keeps its own copy. One zmm holds 4 bytes of
// each of the 16 rows, and vpdpbusd against a broadcast 4-byte piece of one activation block
// accumulates 16 row dots at once, as the Q4_0 kernel of matmul.cpp. IQ4_NL's nibbles are looked
// up as kvalues_iq4nl + 128, unsigned, and 128 * sum_x is removed. Exact integer sums combined in
// float32 as kernels/ref/lowbit_ref.cpp: bit-identical.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "kernels/kquant.h"
#include "kernels/x86_avx512/group_tile_adapters.h"
#include "kernels/lowbit.h"

#ifndef LLAMIX_LOWBIT_VBMI
#define LLAMIX_LOWBIT_VBMI 0
#endif

namespace llamix {
namespace avx512 {
namespace {

// Decode: lines in flight ahead of the unpack. 1 KiB, not Q4_0's 4 KiB: measured at 1 thread on
// 128 MiB streams (13 GB/s probe), Q4_1 / IQ4_NL 12.2 / 12.8 GB/s against 9.4 / 9.3 at 4 KiB and
// 10.4 / 10.0 without; Q2_K 10.9 against 7.7 at 4 KiB and 8.6 without (Q3_K, IQ4_XS alike).
constexpr int64_t kPrefetchBytes = 1024;

// G streams (decode pairs) each advance G times slower: the same lead in time is 1 / G the bytes.
template <int G>
inline void prefetch_block(const uint8_t* blk, int64_t bytes) {
    for (int64_t o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes / G + o), _MM_HINT_T0);
}

constexpr int kTile = 8;  // tokens per register tile

inline __m512i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __m512 half_scales(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
// 16 bytes in every 128-bit lane: a vpshufb table, and for vpermb (which indexes all 64 bytes
// by the low 6 bits) the same table whatever bits 4-5 of the index hold.
inline __m512i table16(const uint8_t* t) { return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t))); }

// table[n] for the low / high nibble n of each byte. With VBMI, vpermb ignores the other nibble
// (table16's copies) and needs no AND: two instructions fewer per 64 bytes, the unpack being
// what decode waits on. vpshufb zeroes bytes whose index has bit 7 set, hence its AND.
inline __m512i lookup_low(__m512i raw, __m512i table) {
#if LLAMIX_LOWBIT_VBMI
    return _mm512_permutexvar_epi8(raw, table);
#else
    return _mm512_shuffle_epi8(table, _mm512_and_si512(raw, _mm512_set1_epi8(0x0F)));
#endif
}
inline __m512i lookup_high(__m512i raw, __m512i table) {
#if LLAMIX_LOWBIT_VBMI
    return _mm512_permutexvar_epi8(_mm512_srli_epi16(raw, 4), table);
#else
    return _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(raw, 4), _mm512_set1_epi8(0x0F)));
#endif
}

// The four 2-bit fields of each byte (bits 2s..2s+1 -> q[s]), as bytes 0..3.
#if LLAMIX_LOWBIT_VBMI
// vpermb looks up the low 6 bits of each byte in a 64-byte table, so fields 1 and 2 come out in one
// operation each, and field 3 (bits 6, 7, out of its reach) by one GF(2) affine map (GFNI): four
// operations for four fields, no shift (decode waits on this unpack).
alignas(64) constexpr uint8_t kField1[64] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0, 0, 0, 0, 1, 1, 1, 1,
                                             2, 2, 2, 2, 3, 3, 3, 3, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                             0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};  // (n >> 2) & 3
alignas(64) constexpr uint8_t kField2[64] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                             1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
                                             3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3};  // (n >> 4) & 3
// Bit i of the result is the parity of x AND byte 7 - i of the matrix: bits 6, 7 of x to bits 0, 1.
constexpr int64_t kField3Matrix = int64_t(0x4080000000000000ull);
struct TwoBitTables {
    __m512i field1, field2;
};
inline TwoBitTables two_bit_tables() { return {_mm512_load_si512(kField1), _mm512_load_si512(kField2)}; }
inline void two_bit_fields(__m512i raw, const TwoBitTables& tb, __m512i* q) {
    q[0] = _mm512_and_si512(raw, _mm512_set1_epi8(3));
    q[1] = _mm512_permutexvar_epi8(raw, tb.field1);
    q[2] = _mm512_permutexvar_epi8(raw, tb.field2);
    q[3] = _mm512_gf2p8affine_epi64_epi8(raw, _mm512_set1_epi64(kField3Matrix), 0);
}
#else
// 2-bit fields out of nibbles by vpshufb: high_pair[n] = n >> 2.
alignas(16) constexpr uint8_t kHighPair[16] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};
struct TwoBitTables {
    __m512i high_pair;
};
inline TwoBitTables two_bit_tables() { return {table16(kHighPair)}; }
inline void two_bit_fields(__m512i raw, const TwoBitTables& tb, __m512i* q) {
    const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(0x0F);
    const __m512i hi = _mm512_srli_epi16(raw, 4);  // byte b: its high nibble in bits 0..3
    const __m512i lo4 = _mm512_and_si512(raw, m4), hi4 = _mm512_and_si512(hi, m4);
    q[0] = _mm512_and_si512(raw, m3);
    q[1] = _mm512_shuffle_epi8(tb.high_pair, lo4);
    q[2] = _mm512_and_si512(hi4, m3);
    q[3] = _mm512_shuffle_epi8(tb.high_pair, hi4);
}
#endif

// Q41: Q4_1 groups (d, m, nibbles); otherwise IQ4_NL groups (d, nibbles as Q4_0's).
template <bool Q41, int T, int G = 1>
void tile(const uint8_t* const* w, int64_t nb, const block_q8a* x, float* const* y, int64_t y_stride, const __mmask16* rows) {
    constexpr int64_t kBlockBytes = Q41 ? kQ41GroupBlockBytes : kQ4GroupBlockBytes;
    constexpr int64_t kQs = Q41 ? 4 * kGroupRows : 2 * kGroupRows;
    constexpr int kOffset = Q41 ? 0 : 128;
    // Q4_1 decode keeps the high nibbles in place (16 * n: one AND, no shift) and shifts their
    // dot back per token (exact, a multiple of 16): decode is bound by the unpacking.
    constexpr bool kHigh16 = Q41 && T <= 2;
    __m512 acc_[G][T];
    for (int s = 0; s < G; ++s)
        for (int i = 0; i < T; ++i) acc_[s][i] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    alignas(16) uint8_t levels[16];  // kvalues_iq4nl + 128
    for (int i = 0; i < 16; ++i) levels[i] = uint8_t(kvalues_iq4nl[i] + 128);
    const __m512i table = table16(levels);
    for (int64_t b = 0; b < nb; ++b) {
#pragma GCC unroll 2
        for (int s = 0; s < G; ++s) {
            const uint8_t* blk = w[s] + b * kBlockBytes;
            __m512* acc = acc_[s];
            if constexpr (T <= 2) prefetch_block<G>(blk, kBlockBytes);
            __m512i v[8];  // low nibbles of chunks 0..3 (elements 4c..), then high nibbles (16 + 4c..)
#pragma GCC unroll 4
            for (int c = 0; c < 4; ++c) {
                const __m512i raw = _mm512_loadu_si512(blk + kQs + 64 * c);
                if constexpr (Q41) {
                    v[c] = _mm512_and_si512(raw, m4);
                    v[c + 4] = kHigh16 ? _mm512_and_si512(raw, _mm512_set1_epi8(char(0xf0))) : _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
                } else {
                    v[c] = lookup_low(raw, table);
                    v[c + 4] = lookup_high(raw, table);
                }
            }
            const __m512 dw = half_scales(blk);
#pragma GCC unroll 8
            for (int i = 0; i < T; ++i) {
                const block_q8a& xb = x[i * nb + b];
                __m512i s0 = _mm512_set1_epi32(-kOffset * xb.sum), s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
                for (int c = 0; c < 4; ++c) {
                    s0 = _mm512_dpbusd_epi32(s0, v[c], bcast4(xb.qs + 4 * c));
                    s1 = _mm512_dpbusd_epi32(s1, v[c + 4], bcast4(xb.qs + 16 + 4 * c));
                }
                const __m512i isum = _mm512_add_epi32(s0, kHigh16 ? _mm512_srai_epi32(s1, 4) : s1);
                __m512 t = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xb.d)), _mm512_cvtepi32_ps(isum));
                if constexpr (Q41) t = _mm512_add_ps(t, _mm512_mul_ps(half_scales(blk + 2 * kGroupRows), _mm512_set1_ps(xb.d * float(xb.sum))));
                acc[i] = _mm512_add_ps(acc[i], t);
            }
        }
    }
    for (int s = 0; s < G; ++s)
        for (int i = 0; i < T; ++i) _mm512_mask_storeu_ps(y[s] + i * y_stride, rows[s], acc_[s][i]);
}

// One group, T tokens.
template <bool Q41, int T>
void tile1(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t y_stride, __mmask16 rows) {
    tile<Q41, T>(&w, nb, x, &y, y_stride, &rows);
}

using TileFn = void (*)(const uint8_t*, int64_t, const block_q8a*, float*, int64_t, __mmask16);

template <bool Q41>
void run_tiles(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static constexpr TileFn tails[kTile] = {nullptr, tile1<Q41, 1>, tile1<Q41, 2>, tile1<Q41, 3>,
                                            tile1<Q41, 4>, tile1<Q41, 5>, tile1<Q41, 6>, tile1<Q41, 7>};
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kTile <= n; t += kTile) tile1<Q41, kTile>(w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
}

// Packed Q2_K / Q3_K / IQ4_XS groups (layouts in kernels/kquant.h): 16 rows per vector, so
// vpdpbusd against a broadcast 4-byte piece of the activations gives 16 row dots at once. The
// exact integer sums of the reference are formed with few vector operations (decode is bound by
// the unpack): a sub-block's dot (|dot| < 2^15) is packed as an int16 with its neighbour's and
// multiplied by both scales in one vpdpwssd. Then the reference's float operations, in its order:
// bit-identical.
constexpr int kGroupTile = 4;

inline __m512i bcast32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}
inline __m512i ld(const uint8_t* p) { return _mm512_loadu_si512(p); }
// lo16 of a (sub-block j's dot) and lo16 of b (sub-block j + 1's) as one int16 pair per lane
inline __m512i pack_dots(__m512i a, __m512i b) { return _mm512_mask_blend_epi16(0xAAAAAAAA, a, _mm512_slli_epi32(b, 16)); }

// Bytes 2p, 2p + 1 of every row's word zero-extended to the row's int16 pair (vpshufb: -1 zeroes)
inline __m512i byte_pair(__m512i words, int p) {
    const int8_t a = int8_t(2 * p), b = int8_t(2 * p + 1), z = -1;
    return _mm512_shuffle_epi8(words, _mm512_set_epi8(z, b + 12, z, a + 12, z, b + 8, z, a + 8, z, b + 4, z, a + 4, z, b, z, a,
                                                      z, b + 12, z, a + 12, z, b + 8, z, a + 8, z, b + 4, z, a + 4, z, b, z, a,
                                                      z, b + 12, z, a + 12, z, b + 8, z, a + 8, z, b + 4, z, a + 4, z, b, z, a,
                                                      z, b + 12, z, a + 12, z, b + 8, z, a + 8, z, b + 4, z, a + 4, z, b, z, a));
}

// Q2_K (Q3 false) or Q3_K: sumi = sum_j s_j * dot_j with the quants unsigned, off = sum_j
// (Q2_K: m_j, Q3_K: s_j) * bsums_j; s_j is Q3_K's scale minus 32. Sub-blocks are paired (j, j + 1),
// so each off step multiplies two adjacent bsums read straight from the activation block.
template <bool Q3, int T, int G = 1>
void q23_group_tile(const uint8_t* const* w, int64_t nsb, const uint8_t* xq, int64_t xq_stride, float* const* y, int64_t y_stride,
                    const __mmask16* rows) {
    constexpr int64_t kBlockBytes = Q3 ? kQ3KGroupBlockBytes : kQ2KGroupBlockBytes;
    constexpr int64_t kScales = Q3 ? 32 : 64, kQs = Q3 ? 32 + 192 : 64 + 256, kHmask = kQs + 1024;
    const __m512i four = _mm512_set1_epi8(4);
    const TwoBitTables tables = two_bit_tables();
    __m512 fsum_[G][T];
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) fsum_[s][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; ++b) {
#pragma GCC unroll 2
        for (int s = 0; s < G; ++s) {
            const uint8_t* g = w[s] + b * kBlockBytes;
            __m512* fsum = fsum_[s];
            if constexpr (T <= 2) prefetch_block<G>(g, kBlockBytes);  // decode (as the Q4_1 tiles)
            const block_q8_K* a[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const block_q8_K*>(xq + t * xq_stride) + b;
            // byte b of words[i]: sub-block 4i + b's scale byte (Q2_K: scale | min << 4; Q3_K: the
            // 6-bit scale decoded from the three words of the source's field)
            __m512i words[4];
            if constexpr (!Q3) {
#pragma GCC unroll 4
                for (int i = 0; i < 4; ++i) words[i] = ld(g + kScales + 64 * i);
            } else {
                const __m512i w0 = ld(g + 32), w1 = ld(g + 96), w2 = ld(g + 160);
                const __m512i lo4 = _mm512_set1_epi32(0x0F0F0F0F), hi2 = _mm512_set1_epi32(0x30303030);
                // ternlog 0xF8: a | (b & c)
                words[0] = _mm512_ternarylogic_epi32(_mm512_and_si512(w0, lo4), _mm512_slli_epi32(w2, 4), hi2, 0xF8);
                words[1] = _mm512_ternarylogic_epi32(_mm512_and_si512(w1, lo4), _mm512_slli_epi32(w2, 2), hi2, 0xF8);
                words[2] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi32(w0, 4), lo4), w2, hi2, 0xF8);
                words[3] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi32(w1, 4), lo4), _mm512_srli_epi32(w2, 2), hi2, 0xF8);
            }
            __m512i sumi[T], off[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) sumi[t] = off[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int i = 0; i < 4; ++i) {
#pragma GCC unroll 2
                for (int p = 0; p < 2; ++p) {  // sub-blocks 4i + 2p and 4i + 2p + 1
                    // their scales as an int16 pair per row; Q2_K's mins likewise
                    const __m512i pair = byte_pair(words[i], p);
                    __m512i sp, mp;
                    if constexpr (!Q3) {
                        sp = _mm512_and_si512(pair, _mm512_set1_epi16(0x0F));
                        mp = _mm512_srli_epi16(pair, 4);
                    } else {
                        sp = mp = _mm512_sub_epi16(pair, _mm512_set1_epi16(32));
                    }
                    __m512i acc[2][T];
#pragma GCC unroll 2
                    for (int e = 0; e < 2; ++e) {
                        const int j = 4 * i + 2 * p + e;
                        __m512i q[4];
                        two_bit_fields(ld(g + kQs + 64 * j), tables, q);
                        if constexpr (Q3) {  // the (j, s) byte mask of high bits adds 4 to field s
#pragma GCC unroll 4
                            for (int s = 0; s < 4; ++s)
                                q[s] = _mm512_mask_add_epi8(q[s], _load_mask64(reinterpret_cast<__mmask64*>(const_cast<uint8_t*>(g + kHmask + 8 * (4 * j + s)))),
                                                            q[s], four);
                        }
#pragma GCC unroll 4
                        for (int t = 0; t < T; ++t) {
                            const int8_t* av = a[t]->qs + 16 * j;
                            __m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[0], bcast32(av));
                            s0 = _mm512_dpbusd_epi32(s0, q[1], bcast32(av + 4));
                            s0 = _mm512_dpbusd_epi32(s0, q[2], bcast32(av + 8));
                            acc[e][t] = _mm512_dpbusd_epi32(s0, q[3], bcast32(av + 12));
                        }
                    }
#pragma GCC unroll 4
                    for (int t = 0; t < T; ++t) {
                        sumi[t] = _mm512_dpwssd_epi32(sumi[t], pack_dots(acc[0][t], acc[1][t]), sp);
                        off[t] = _mm512_dpwssd_epi32(off[t], mp, bcast32(a[t]->bsums + 4 * i + 2 * p));
                    }
                }
            }
            const __m512 d = half_scales(g);
            if constexpr (!Q3) {  // a.d * (d * sumi - dmin * summ)
                const __m512 dmin = half_scales(g + 32);
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    const __m512 v = _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi[t])), _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(off[t])));
                    fsum[t] = _mm512_add_ps(fsum[t], _mm512_mul_ps(_mm512_set1_ps(a[t]->d), v));
                }
            } else {  // a.d * (d * (sumi - 4 off))
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    const __m512i s = _mm512_sub_epi32(sumi[t], _mm512_slli_epi32(off[t], 2));
                    fsum[t] = _mm512_add_ps(fsum[t], _mm512_mul_ps(_mm512_set1_ps(a[t]->d), _mm512_mul_ps(d, _mm512_cvtepi32_ps(s))));
                }
            }
        }
    }
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[s] + t * y_stride, rows[s], fsum_[s][t]);
}

// IQ4_XS: levels looked up as kvalues_iq4nl + 128 (unsigned), so sumi = sum_j ls_j * dot_j and
// off = sum_j ls_j * (bsums_2j + bsums_2j+1) removes 128 * off; ls_j = 6-bit scale minus 32.
template <int T, int G = 1>
void iq4_xs_group_tile(const uint8_t* const* w, int64_t nsb, const uint8_t* xq, int64_t xq_stride, float* const* y,
                       int64_t y_stride, const __mmask16* rows) {
    const __m512i lo4 = _mm512_set1_epi32(0x0F0F0F0F), hi2 = _mm512_set1_epi32(0x30303030);
    const __m512i v32 = _mm512_set1_epi16(32);
    // vpshufb indexes within 128-bit lanes: the byte offset of each row's dword there, in both halves
    const __m512i lane_rows = _mm512_set4_epi32(0x000C000C, 0x00080008, 0x00040004, 0);
    alignas(16) uint8_t levels[16];
    for (int i = 0; i < 16; ++i) levels[i] = uint8_t(kvalues_iq4nl[i] + 128);
    const __m512i table = table16(levels);
    __m512 fsum_[G][T];
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) fsum_[s][t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; ++b) {
#pragma GCC unroll 2
        for (int s = 0; s < G; ++s) {
            const uint8_t* g = w[s] + b * kIQ4XSGroupBlockBytes;
            __m512* fsum = fsum_[s];
            if constexpr (T <= 2) prefetch_block<G>(g, kIQ4XSGroupBlockBytes);  // decode (as the Q4_1 tiles)
            const block_q8_K* a[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const block_q8_K*>(xq + t * xq_stride) + b;
            // 6-bit scales as bytes: even[row] byte k = scale 2k, odd[row] byte k = scale 2k + 1. The
            // high bits: nibble k of scales_h (bits of scales 2k, 2k + 1) spread to byte k first.
            const __m512i sl = ld(g + 64);
            __m512i sh = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32)));
            sh = _mm512_and_si512(_mm512_or_si512(sh, _mm512_slli_epi32(sh, 8)), _mm512_set1_epi32(0x00FF00FF));
            sh = _mm512_and_si512(_mm512_or_si512(sh, _mm512_slli_epi32(sh, 4)), lo4);
            const __m512i scale_bytes[2] = {
                _mm512_ternarylogic_epi32(_mm512_and_si512(sl, lo4), _mm512_slli_epi32(sh, 4), hi2, 0xF8),
                _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi32(sl, 4), lo4), _mm512_slli_epi32(sh, 2), hi2, 0xF8)};
            __m512i sumi[T], off[T];
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) sumi[t] = off[t] = _mm512_setzero_si512();
            const uint8_t* qs = g + 128;
#pragma GCC unroll 8
            for (int j = 0; j < 8; ++j) {
                // (ls_j, ls_j) as an int16 pair per row: byte j / 2 of scale_bytes[j % 2] into both halves
                const __m512i pick = _mm512_add_epi32(_mm512_set1_epi32(int32_t(0x80008000u | uint32_t(j / 2) | (uint32_t(j / 2) << 16))),
                                                      lane_rows);
                const __m512i pair = _mm512_sub_epi16(_mm512_shuffle_epi8(scale_bytes[j % 2], pick), v32);
                const __m512i ls = _mm512_srai_epi32(pair, 16);
                __m512i acc[T];
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
                for (int c = 0; c < 4; ++c) {  // low nibbles: elements 4c.., high: 16 + 4c..
                    const __m512i raw = ld(qs + 64 * (4 * j + c));
                    const __m512i lo = lookup_low(raw, table), hi = lookup_high(raw, table);
#pragma GCC unroll 4
                    for (int t = 0; t < T; ++t) {
                        acc[t] = _mm512_dpbusd_epi32(acc[t], lo, bcast32(a[t]->qs + 32 * j + 4 * c));
                        acc[t] = _mm512_dpbusd_epi32(acc[t], hi, bcast32(a[t]->qs + 32 * j + 16 + 4 * c));
                    }
                }
#pragma GCC unroll 4
                for (int t = 0; t < T; ++t) {
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(acc[t], ls));
                    off[t] = _mm512_dpwssd_epi32(off[t], pair, bcast32(a[t]->bsums + 2 * j));
                }
            }
            const __m512 d = half_scales(g);
#pragma GCC unroll 4
            for (int t = 0; t < T; ++t) {  // a.d * (d * (sumi - 128 off)): levels were taken + 128
                const __m512 v = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi[t], _mm512_slli_epi32(off[t], 7))));
                fsum[t] = _mm512_add_ps(fsum[t], _mm512_mul_ps(_mm512_set1_ps(a[t]->d), v));
            }
        }
    }
#pragma GCC unroll 4
    for (int s = 0; s < G; ++s)
        for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y[s] + t * y_stride, rows[s], fsum_[s][t]);
}

// Q4_1 / IQ4_NL (block_q8a activations) in the same form.
template <bool Q41>
void gemv_pair_blocks(const uint8_t* w0, const uint8_t* w1, int64_t nb, const void* x, float* y0, float* y1, int rows0,
                      int rows1) {
    const uint8_t* const w[2] = {w0, w1};
    float* const y[2] = {y0, y1};
    const __mmask16 rows[2] = {__mmask16((1u << rows0) - 1), __mmask16((1u << rows1) - 1)};
    tile<Q41, 1, 2>(w, nb, static_cast<const block_q8a*>(x), y, 0, rows);
}

// Tiles of kGroupTile tokens, then one smaller tile for the rest.
template <template <int> class Tile>
void lowbit_groups(const uint8_t* w, int64_t nsb, const void* xq, int64_t xq_stride, int64_t n, float* y, int64_t y_stride,
                   int rows) {
    static_assert(kGroupTile == 4, "one tile function per token count 1..4");
    static constexpr GroupTileFn tails[kGroupTile] = {nullptr, Tile<1>::f, Tile<2>::f, Tile<3>::f};
    const auto* x = static_cast<const uint8_t*>(xq);
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kGroupTile <= n; t += kGroupTile) Tile<kGroupTile>::f(w, nsb, x + t * xq_stride, xq_stride, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nsb, x + t * xq_stride, xq_stride, y + t * y_stride, y_stride, mask);
}

template <int T> struct Q2Tile { static constexpr GroupTileFn f = one_group<q23_group_tile<false, T>>; };
template <int T> struct Q3Tile { static constexpr GroupTileFn f = one_group<q23_group_tile<true, T>>; };
template <int T> struct IQ4XSTile { static constexpr GroupTileFn f = one_group<iq4_xs_group_tile<T>>; };

// The decode pairs of this file's kernels.
inline void fill_gemv_pairs(MatmulKernels& m, KQuantKernels& k) {
    m.gemv_pair_q4_1 = gemv_pair_blocks<true>;
    m.gemv_pair_iq4_nl = gemv_pair_blocks<false>;
    k.gemv_pair_q2_K = gemv_pair<q23_group_tile<false, 1, 2>>;
    k.gemv_pair_q3_K = gemv_pair<q23_group_tile<true, 1, 2>>;
    k.gemv_pair_iq4_xs = gemv_pair<iq4_xs_group_tile<1, 2>>;
}

}  // namespace
}  // namespace avx512
}  // namespace llamix
