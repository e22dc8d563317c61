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
};

// Packed Q2_K / Q3_K / IQ4_XS groups (layouts in kernels/kquant.h), one 8-row half at a time: a
// ymm holds 4 bytes of each of 8 rows. Q2_K / Q3_K: unsigned quants (at most 7), pmaddubsw against
// a broadcast 4-byte piece, the 4 pieces of a 16-element sub-block summed in int16 (at most
// 4 * 2 * 7 * 127), then pmaddwd by (scale, scale) gives scale * dot in int32. IQ4_XS: levels
// looked up signed, |v| times x with v's sign (pairs at most 2 * 127 * 127), pmaddwd by the
// scale per piece. Mins and Q3_K's offset of 4 through the 16-sums; the reference's float order.
constexpr int kGroupTile = 4;  // tokens per GEMM tile, as the K-quants (kquant.cpp)

inline __m256i bcast32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}
inline __m256i ld(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
// int32 lanes (|v| < 2^15) -> (v, v) int16 pairs
inline __m256i dup16(__m256i v) { return _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0xffff)), _mm256_slli_epi32(v, 16)); }
inline __m256i pair16(__m256i lo, __m256i hi) {
    return _mm256_or_si256(_mm256_and_si256(lo, _mm256_set1_epi32(0xffff)), _mm256_slli_epi32(hi, 16));
}

// 4 in byte 4 r + i where bit 4 r + i of a Q3_K (j, s) high-bit mask half (8 rows, 32 bits) is set
inline __m256i high_fours(const uint8_t* p) {
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x(int64_t(0x8040201008040201));
    const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(bcast32(p), spread), bit);
    return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(4));
}

enum class Kind { q2_K, q3_K, iq4_xs };

template <Kind K>
struct LowbitGroups {
    using Act = block_q8_K;
    static constexpr int64_t kBlockBytes = K == Kind::q2_K ? kQ2KGroupBlockBytes : K == Kind::q3_K ? kQ3KGroupBlockBytes
                                                                                                   : kIQ4XSGroupBlockBytes;
    static constexpr int kTile = kGroupTile;

    template <int T>
    static inline void step(const uint8_t* g, const block_q8_K* const* a, int h, __m256* fsum) {
        const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0x0F);
        const __m256i nib = _mm256_set1_epi32(0xF);
        const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl)));
        __m256i sumi[T], off[T];
        for (int t = 0; t < T; ++t) sumi[t] = off[t] = _mm256_setzero_si256();
        const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 16 * h)));
        __m256 v[T];
        if constexpr (K == Kind::q2_K || K == Kind::q3_K) {
            __m256i words[4];  // byte b of word i: sub-block 4i + b's scale (Q2_K: | min << 4)
            if constexpr (K == Kind::q2_K) {
                for (int i = 0; i < 4; ++i) words[i] = ld(g + 64 + 64 * i + 32 * h);
            } else {
                const __m256i w0 = ld(g + 32 + 32 * h), w1 = ld(g + 96 + 32 * h), w2 = ld(g + 160 + 32 * h);
                const __m256i lo4 = _mm256_set1_epi32(0x0F0F0F0F), lo2 = _mm256_set1_epi32(0x03030303);
                words[0] = _mm256_or_si256(_mm256_and_si256(w0, lo4), _mm256_slli_epi32(_mm256_and_si256(w2, lo2), 4));
                words[1] = _mm256_or_si256(_mm256_and_si256(w1, lo4), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w2, 2), lo2), 4));
                words[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w0, 4), lo4), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w2, 4), lo2), 4));
                words[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(w1, 4), lo4), _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(w2, 6), lo2), 4));
            }
            auto scale_of = [&](int j) {
                const __m256i byte = _mm256_srli_epi32(words[j / 4], 8 * (j % 4));
                return K == Kind::q2_K ? _mm256_and_si256(byte, nib)
                                       : _mm256_sub_epi32(_mm256_and_si256(byte, _mm256_set1_epi32(0x3F)), _mm256_set1_epi32(32));
            };
            const uint8_t* qs = g + (K == Kind::q2_K ? 64 + 256 : 32 + 192) + 32 * h;
            const uint8_t* hm = g + 32 + 192 + 1024;  // Q3_K: high-bit masks (whole rows: the half picks its word)
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j) {
                const __m256i raw = ld(qs + 64 * j);
                __m256i acc[T];
                for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
                for (int s = 0; s < 4; ++s) {
                    __m256i q = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * s), m3);
                    if constexpr (K == Kind::q3_K) q = _mm256_or_si256(q, high_fours(hm + 8 * (4 * j + s) + 4 * h));
                    for (int t = 0; t < T; ++t) acc[t] = _mm256_add_epi16(acc[t], _mm256_maddubs_epi16(q, bcast32(a[t]->qs + 16 * j + 4 * s)));
                }
                const __m256i scale = dup16(scale_of(j));
                for (int t = 0; t < T; ++t) sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(acc[t], scale));
            }
            for (int i = 0; i < 8; ++i) {  // Q2_K: sum_j m_j * bsums_j; Q3_K: sum_j sc_j * bsums_j
                const __m256i pr = K == Kind::q2_K
                                       ? pair16(_mm256_and_si256(_mm256_srli_epi32(words[i / 2], 8 * (2 * i % 4) + 4), nib),
                                                _mm256_and_si256(_mm256_srli_epi32(words[i / 2], 8 * ((2 * i + 1) % 4) + 4), nib))
                                       : pair16(scale_of(2 * i), scale_of(2 * i + 1));
                for (int t = 0; t < T; ++t) off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(pr, bcast32(a[t]->bsums + 2 * i)));
            }
            if constexpr (K == Kind::q2_K) {
                const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 16 * h)));
                for (int t = 0; t < T; ++t)
                    v[t] = _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[t])), _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(off[t])));
            } else {
                for (int t = 0; t < T; ++t)
                    v[t] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], _mm256_slli_epi32(off[t], 2))));
            }
        } else {
            const __m256i sh = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(g + 32 + 16 * h)));
            const __m256i sl = ld(g + 64 + 32 * h);
            const uint8_t* qs = g + 128 + 32 * h;
            for (int j = 0; j < 8; ++j) {
                const __m256i ls = dup16(_mm256_sub_epi32(
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(sl, 4 * j), nib),
                                    _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(sh, 2 * j), _mm256_set1_epi32(3)), 4)),
                    _mm256_set1_epi32(32)));
#pragma GCC unroll 4
                for (int c = 0; c < 4; ++c) {
                    const __m256i raw = ld(qs + 64 * (4 * j + c));
                    const __m256i lo = _mm256_shuffle_epi8(table, _mm256_and_si256(raw, m4));
                    const __m256i hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4));
                    const __m256i alo = _mm256_sign_epi8(lo, lo), ahi = _mm256_sign_epi8(hi, hi);
                    for (int t = 0; t < T; ++t) {
                        const __m256i plo = _mm256_maddubs_epi16(alo, _mm256_sign_epi8(bcast32(a[t]->qs + 32 * j + 4 * c), lo));
                        const __m256i phi = _mm256_maddubs_epi16(ahi, _mm256_sign_epi8(bcast32(a[t]->qs + 32 * j + 16 + 4 * c), hi));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(plo, ls), _mm256_madd_epi16(phi, ls)));
                    }
                }
            }
            for (int t = 0; t < T; ++t) v[t] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(sumi[t]));
        }
        for (int t = 0; t < T; ++t) fsum[t] = _mm256_add_ps(fsum[t], _mm256_mul_ps(_mm256_set1_ps(a[t]->d), v[t]));
    }
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
    k.gemm_q2_K_groups = gemm_q8K<LowbitGroups<Kind::q2_K>>;
    k.gemm_q3_K_groups = gemm_q8K<LowbitGroups<Kind::q3_K>>;
    k.gemm_iq4_xs_groups = gemm_q8K<LowbitGroups<Kind::iq4_xs>>;
}

}  // namespace llamix
