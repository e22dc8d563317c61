// Q2_K, Q3_K and IQ4_XS super-blocks unpacked for the shared row-dot loop
// (kquant_dot_rows.h), written once with 256-bit AVX2 intrinsics and compiled by each x86 ISA
// folder that includes it (internal linkage: each folder gets its own copy, built with its flags).
// Everything is a template of the including ISA's tag type (avx2::Tag, avx512::Tag), so each
// copy carries its ISA in its name, as the build-hygiene check of the linked module expects.
// Integer sums are exact and combined as kernels/ref/lowbit_ref.cpp does: bit-identical.
#pragma once
#if !defined(__AVX2__)
#error "kernels/x86_shared/ is ISA code: include it only from an x86 ISA folder"
#endif
#include <immintrin.h>

#include <cstdint>

#include "common/fp16.h"
#include "common/formats.h"
#include "kernels/x86_shared/kquant_dot_rows.h"

namespace llamix {
namespace x86_shared {
namespace {

// A super-block unpacked once for up to kMaxTokens activation rows: q[c] holds the 32 quants
// that meet activations 32c..32c+31 (unsigned for Q2_K / Q3_K, signed levels for IQ4_XS), s[c]
// the int16 scale of each maddubs pair, bsum_mul the multiplier of each 16-sum (mins; Q3_K scales).
template <class Isa>
struct LowbitUnpacked {
    __m256i q[8], s[8];
    __m256i bsum_mul;
    float d, dmin;
};

template <class Isa>
inline __m256i lb_load(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// (scale of sub-block 2c) in the low 128 bits, (2c + 1) in the high: the two 16-element halves.
template <class Isa>
inline __m256i pair_scales(int lo, int hi) { return _mm256_set_m128i(_mm_set1_epi16(int16_t(hi)), _mm_set1_epi16(int16_t(lo))); }

// Element 128 h + 32 s + l's 2 bits are bits 2s of qs[32 h + l]: chunk c = 4 h + s.
template <class Isa>
inline void two_bit_chunks(const uint8_t* qs, __m256i* q) {
    const __m256i m3 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; ++h) {
        const __m256i v = lb_load<Isa>(qs + 32 * h);
        for (int s = 0; s < 4; ++s) q[4 * h + s] = _mm256_and_si256(_mm256_srli_epi16(v, 2 * s), m3);
    }
}

template <class Isa>
inline void unpack_q2_K(const block_q2_K& x, LowbitUnpacked<Isa>& u) {
    two_bit_chunks<Isa>(x.qs, u.q);
    for (int c = 0; c < 8; ++c) u.s[c] = pair_scales<Isa>(x.scales[2 * c] & 0xF, x.scales[2 * c + 1] & 0xF);
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.scales));
    u.bsum_mul = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0F)));  // mins
    u.d = fp16_to_fp32(x.d);
    u.dmin = fp16_to_fp32(x.dmin);
}

template <class Isa>
inline void unpack_q3_K(const block_q3_K& x, LowbitUnpacked<Isa>& u) {
    two_bit_chunks<Isa>(x.qs, u.q);
    const __m256i hm = lb_load<Isa>(x.hmask), one = _mm256_set1_epi8(1);
    for (int c = 0; c < 8; ++c)  // bit c of hmask[l] adds 4 to element 32c + l
        u.q[c] = _mm256_or_si256(u.q[c], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, c), one), 2));
    alignas(32) int16_t sc[16];
    for (int j = 0; j < 16; ++j) {
        const int lo = (x.scales[j % 8] >> (4 * (j / 8))) & 0xF, hi = (x.scales[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = int16_t((lo | (hi << 4)) - 32);
    }
    for (int c = 0; c < 8; ++c) u.s[c] = pair_scales<Isa>(sc[2 * c], sc[2 * c + 1]);
    u.bsum_mul = _mm256_load_si256(reinterpret_cast<const __m256i*>(sc));
    u.d = fp16_to_fp32(x.d);
    u.dmin = 0.0f;
}

template <class Isa>
inline void unpack_iq4_xs(const block_iq4_xs& x, LowbitUnpacked<Isa>& u) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl)));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    for (int j = 0; j < 8; ++j) {  // sub-block j: low nibbles are elements 0..15, high nibbles 16..31
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.qs + 16 * j));
        const __m256i idx = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
        u.q[j] = _mm256_shuffle_epi8(table, idx);
        const int ls = ((x.scales_l[j / 2] >> (4 * (j % 2))) & 0xF) | (((x.scales_h >> (2 * j)) & 3) << 4);
        u.s[j] = _mm256_set1_epi16(int16_t(ls - 32));
    }
    u.bsum_mul = _mm256_setzero_si256();
    u.d = fp16_to_fp32(x.d);
    u.dmin = 0.0f;
}

// Unsigned quants: maddubs pairs (at most 2 * 7 * 127), then madd by the scales (exact).
template <class Isa>
inline __m256i scaled_sum_unsigned(const LowbitUnpacked<Isa>& u, const int8_t* a) {
    __m256i acc = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c)
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u.q[c], lb_load<Isa>(a + 32 * c)), u.s[c]));
    return acc;
}

// Signed levels (|v| <= 127): |v| times the activation with v's sign, pairs at most 2 * 127 * 127.
template <class Isa>
inline __m256i scaled_sum_signed(const LowbitUnpacked<Isa>& u, const int8_t* a) {
    __m256i acc = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
        const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(u.q[c], u.q[c]), _mm256_sign_epi8(lb_load<Isa>(a + 32 * c), u.q[c]));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, u.s[c]));
    }
    return acc;
}

template <class Isa>
inline void fill_lowbit_kquant_dots(KQuantKernels& k) {
    using U = LowbitUnpacked<Isa>;
    k.dot_q2_K_q8_K = dot_rows<block_q2_K, U, unpack_q2_K<Isa>, scaled_sum_unsigned<Isa>>;
    k.dot_q3_K_q8_K = dot_rows<block_q3_K, U, unpack_q3_K<Isa>, scaled_sum_unsigned<Isa>>;
    k.dot_iq4_xs_q8_K = dot_rows<block_iq4_xs, U, unpack_iq4_xs<Isa>, scaled_sum_signed<Isa>>;
}

}  // namespace
}  // namespace x86_shared
}  // namespace llamix
