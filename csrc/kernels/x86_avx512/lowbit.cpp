// AVX-512 VNNI kernels of Q4_1 and IQ4_NL on the packed 16-row groups (kernels/matmul.h): one zmm
// holds 4 bytes of each of the 16 rows, vpdpbusd against a broadcast 4-byte piece of one
// activation block accumulates 16 row dots at once, as the Q4_0 kernel of matmul.cpp. IQ4_NL's
// nibbles are looked up (vpshufb) as kvalues_iq4nl + 128, unsigned, and 128 * sum_x is removed.
// Q2_K, Q3_K, IQ4_XS row dots: kernels/x86_shared/lowbit_kquant.h compiled with this folder's
// flags. Exact integer sums combined in float32 as kernels/ref/lowbit_ref.cpp: bit-identical.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <cstring>

#include "kernels/kquant.h"
#include "kernels/lowbit.h"
#include "kernels/x86_shared/lowbit_kquant.h"

namespace llamix {
namespace avx512 {

struct Tag {};  // names this ISA's copies of kernels/x86_shared code

namespace {

constexpr int64_t kPrefetchBytes = 4096;  // decode: lines in flight ahead of the unpack (as Q4_0)
constexpr int kTile = 8;                  // tokens per register tile

inline __m512i bcast4(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

inline __m512 half_scales(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }

// Q41: Q4_1 groups (d, m, nibbles); otherwise IQ4_NL groups (d, nibbles as Q4_0's).
template <bool Q41, int T>
void tile(const uint8_t* w, int64_t nb, const block_q8a* x, float* y, int64_t y_stride, __mmask16 rows) {
    constexpr int64_t kBlockBytes = Q41 ? kQ41GroupBlockBytes : kQ4GroupBlockBytes;
    constexpr int64_t kQs = Q41 ? 4 * kGroupRows : 2 * kGroupRows;
    constexpr int kOffset = Q41 ? 0 : 128;
    __m512 acc[T];
    for (int i = 0; i < T; ++i) acc[i] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    alignas(16) uint8_t levels[16];  // kvalues_iq4nl + 128
    for (int i = 0; i < 16; ++i) levels[i] = uint8_t(kvalues_iq4nl[i] + 128);
    const __m512i table = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(levels)));
    for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w + b * kBlockBytes;
        if constexpr (T <= 2) {
            for (int64_t o = 0; o < kBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes + o), _MM_HINT_T0);
        }
        __m512i v[8];  // low nibbles of chunks 0..3 (elements 4c..), then high nibbles (16 + 4c..)
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
            const __m512i raw = _mm512_loadu_si512(blk + kQs + 64 * c);
            v[c] = _mm512_and_si512(raw, m4);
            v[c + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4);
            if constexpr (!Q41) {
                v[c] = _mm512_shuffle_epi8(table, v[c]);
                v[c + 4] = _mm512_shuffle_epi8(table, v[c + 4]);
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
            __m512 t = _mm512_mul_ps(_mm512_mul_ps(dw, _mm512_set1_ps(xb.d)), _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)));
            if constexpr (Q41) t = _mm512_add_ps(t, _mm512_mul_ps(half_scales(blk + 2 * kGroupRows), _mm512_set1_ps(xb.d * float(xb.sum))));
            acc[i] = _mm512_add_ps(acc[i], t);
        }
    }
    for (int i = 0; i < T; ++i) _mm512_mask_storeu_ps(y + i * y_stride, rows, acc[i]);
}

using TileFn = void (*)(const uint8_t*, int64_t, const block_q8a*, float*, int64_t, __mmask16);

template <bool Q41>
void run_tiles(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static constexpr TileFn tails[kTile] = {nullptr, tile<Q41, 1>, tile<Q41, 2>, tile<Q41, 3>,
                                            tile<Q41, 4>, tile<Q41, 5>, tile<Q41, 6>, tile<Q41, 7>};
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kTile <= n; t += kTile) tile<Q41, kTile>(w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nb, x + t * nb, y + t * y_stride, y_stride, mask);
}

// Packed Q2_K / Q3_K / IQ4_XS groups (layouts in kernels/kquant.h): 16 rows per vector, so
// vpdpbusd against a broadcast 4-byte piece of the activations gives 16 row dots at once. Per
// sub-block the exact int32 dot is multiplied by its scale; mins and unsigned offsets go through
// the activations' 16-sums (vpdpwssd on (scale, scale) int16 pairs). Then the reference's float
// operations, in its order: bit-identical.
constexpr int kGroupTile = 4;

inline __m512i bcast32(const void* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}
inline __m512i ld(const uint8_t* p) { return _mm512_loadu_si512(p); }
// (lo, hi) int32 lanes -> one int16 pair per lane, for vpdpwssd against two 16-sums
inline __m512i pair16(__m512i lo, __m512i hi) {
    return _mm512_or_si512(_mm512_and_si512(lo, _mm512_set1_epi32(0xffff)), _mm512_slli_epi32(hi, 16));
}

enum class Kind { q2_K, q3_K, iq4_xs };

template <Kind K, int T>
void lowbit_group_tile(const uint8_t* w, int64_t nsb, const uint8_t* xq, int64_t xq_stride, float* y, int64_t y_stride,
                       __mmask16 rows) {
    constexpr int64_t kBlockBytes = K == Kind::q2_K ? kQ2KGroupBlockBytes : K == Kind::q3_K ? kQ3KGroupBlockBytes
                                                                                            : kIQ4XSGroupBlockBytes;
    const __m512i m3 = _mm512_set1_epi8(3), m4 = _mm512_set1_epi8(0x0F);
    const __m512i nib = _mm512_set1_epi32(0xF);
    alignas(16) uint8_t levels[16];  // kvalues_iq4nl + 128
    for (int i = 0; i < 16; ++i) levels[i] = uint8_t(kvalues_iq4nl[i] + 128);
    const __m512i table = _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(levels)));
    __m512 fsum[T];
    for (int t = 0; t < T; ++t) fsum[t] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; ++b) {
        const uint8_t* g = w + b * kBlockBytes;
        if constexpr (T == 1) {
            for (int64_t o = 0; o < kBlockBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(g + kPrefetchBytes + o), _MM_HINT_T0);
        }
        const block_q8_K* a[T];
        for (int t = 0; t < T; ++t) a[t] = reinterpret_cast<const block_q8_K*>(xq + t * xq_stride) + b;
        __m512i sumi[T], off[T];
        for (int t = 0; t < T; ++t) sumi[t] = off[t] = _mm512_setzero_si512();
        const __m512 d = half_scales(g);
        __m512 v[T];
        if constexpr (K == Kind::q2_K || K == Kind::q3_K) {
            // 16 sub-blocks of 16, four per word: byte b of word i holds sub-block 4i + b's
            // scale (Q2_K: scale | min << 4; Q3_K: the 6-bit scale, decoded from 3 words)
            __m512i words[4];
            if constexpr (K == Kind::q2_K) {
                for (int i = 0; i < 4; ++i) words[i] = ld(g + 64 + 64 * i);
            } else {
                const __m512i w0 = ld(g + 32), w1 = ld(g + 96), w2 = ld(g + 160);
                const __m512i lo4 = _mm512_set1_epi32(0x0F0F0F0F), lo2 = _mm512_set1_epi32(0x03030303);
                words[0] = _mm512_or_si512(_mm512_and_si512(w0, lo4), _mm512_slli_epi32(_mm512_and_si512(w2, lo2), 4));
                words[1] = _mm512_or_si512(_mm512_and_si512(w1, lo4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w2, 2), lo2), 4));
                words[2] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(w0, 4), lo4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w2, 4), lo2), 4));
                words[3] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(w1, 4), lo4), _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(w2, 6), lo2), 4));
            }
            // int32 scale (and Q2_K min) of sub-block j per row
            auto scale_of = [&](int j) {
                const __m512i byte = _mm512_srli_epi32(words[j / 4], 8 * (j % 4));
                return K == Kind::q2_K ? _mm512_and_si512(byte, nib)
                                       : _mm512_sub_epi32(_mm512_and_si512(byte, _mm512_set1_epi32(0x3F)), _mm512_set1_epi32(32));
            };
            const uint8_t* qs = g + (K == Kind::q2_K ? 64 + 256 : 32 + 192);
            const uint8_t* hm = qs + 1024;
            const __m512i four = _mm512_set1_epi8(4);
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j) {
                const __m512i raw = ld(qs + 64 * j);
                __m512i hbits = _mm512_setzero_si512();
                if constexpr (K == Kind::q3_K) hbits = ld(hm + 64 * (j / 2));
                __m512i acc[T];
                for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
                for (int s = 0; s < 4; ++s) {
                    __m512i q = _mm512_and_si512(_mm512_srli_epi16(raw, 2 * s), m3);
                    if constexpr (K == Kind::q3_K)  // bit k = 4 (j % 2) + s of each hmask byte adds 4
                        q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(hbits, _mm512_set1_epi8(char(1 << (4 * (j % 2) + s)))), q, four);
                    for (int t = 0; t < T; ++t) acc[t] = _mm512_dpbusd_epi32(acc[t], q, bcast32(a[t]->qs + 16 * j + 4 * s));
                }
                const __m512i scale = scale_of(j);
                for (int t = 0; t < T; ++t) sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(acc[t], scale));
            }
            // Q2_K: summ = sum_j m_j * bsums_j; Q3_K: off = sum_j sc_j * bsums_j
            for (int i = 0; i < 8; ++i) {
                const __m512i pr = K == Kind::q2_K
                                       ? pair16(_mm512_and_si512(_mm512_srli_epi32(words[i / 2], 8 * (2 * i % 4) + 4), nib),
                                                _mm512_and_si512(_mm512_srli_epi32(words[i / 2], 8 * ((2 * i + 1) % 4) + 4), nib))
                                       : pair16(scale_of(2 * i), scale_of(2 * i + 1));
                for (int t = 0; t < T; ++t) off[t] = _mm512_dpwssd_epi32(off[t], pr, bcast32(a[t]->bsums + 2 * i));
            }
            if constexpr (K == Kind::q2_K) {  // a.d * (d * sumi - dmin * summ)
                const __m512 dmin = half_scales(g + 32);
                for (int t = 0; t < T; ++t)
                    v[t] = _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(sumi[t])), _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(off[t])));
            } else {  // a.d * (d * (sumi - 4 off))
                for (int t = 0; t < T; ++t)
                    v[t] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi[t], _mm512_slli_epi32(off[t], 2))));
            }
        } else {
            // 8 sub-blocks of 32: ls_j = (scales_l nibble j) | (scales_h bits 2j) << 4, minus 32
            const __m512i sh = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(g + 32)));
            const __m512i sl = ld(g + 64);
            const uint8_t* qs = g + 128;
            for (int j = 0; j < 8; ++j) {
                const __m512i ls = _mm512_sub_epi32(
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(sl, 4 * j), nib),
                                    _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(sh, 2 * j), _mm512_set1_epi32(3)), 4)),
                    _mm512_set1_epi32(32));
                __m512i acc[T];
                for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
                for (int c = 0; c < 4; ++c) {  // low nibbles: elements 4c.., high: 16 + 4c..
                    const __m512i raw = ld(qs + 64 * (4 * j + c));
                    const __m512i lo = _mm512_shuffle_epi8(table, _mm512_and_si512(raw, m4));
                    const __m512i hi = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(raw, 4), m4));
                    for (int t = 0; t < T; ++t) {
                        acc[t] = _mm512_dpbusd_epi32(acc[t], lo, bcast32(a[t]->qs + 32 * j + 4 * c));
                        acc[t] = _mm512_dpbusd_epi32(acc[t], hi, bcast32(a[t]->qs + 32 * j + 16 + 4 * c));
                    }
                }
                for (int t = 0; t < T; ++t) {
                    sumi[t] = _mm512_add_epi32(sumi[t], _mm512_mullo_epi32(acc[t], ls));
                    off[t] = _mm512_dpwssd_epi32(off[t], pair16(ls, ls), bcast32(a[t]->bsums + 2 * j));
                }
            }
            for (int t = 0; t < T; ++t)  // a.d * (d * (sumi - 128 off)): levels were taken + 128
                v[t] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(sumi[t], _mm512_slli_epi32(off[t], 7))));
        }
        for (int t = 0; t < T; ++t) fsum[t] = _mm512_add_ps(fsum[t], _mm512_mul_ps(_mm512_set1_ps(a[t]->d), v[t]));
    }
    for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + t * y_stride, rows, fsum[t]);
}

using GroupTileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, float*, int64_t, __mmask16);

template <Kind K>
void lowbit_groups(const uint8_t* w, int64_t nsb, const void* xq, int64_t xq_stride, int64_t n, float* y, int64_t y_stride,
                   int rows) {
    static constexpr GroupTileFn tails[kGroupTile] = {nullptr, lowbit_group_tile<K, 1>, lowbit_group_tile<K, 2>,
                                                      lowbit_group_tile<K, 3>};
    const auto* x = static_cast<const uint8_t*>(xq);
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    int64_t t = 0;
    for (; t + kGroupTile <= n; t += kGroupTile)
        lowbit_group_tile<K, kGroupTile>(w, nsb, x + t * xq_stride, xq_stride, y + t * y_stride, y_stride, mask);
    if (t < n) tails[n - t](w, nsb, x + t * xq_stride, xq_stride, y + t * y_stride, y_stride, mask);
}

}  // namespace

}  // namespace avx512

void fill_lowbit_avx512(QuantKernels&, MatmulKernels& m, KQuantKernels& k) {
    m.gemm_q4_1 = avx512::run_tiles<true>;
    m.gemm_iq4_nl = avx512::run_tiles<false>;
    x86_shared::fill_lowbit_kquant_dots<avx512::Tag>(k);
    k.gemm_q2_K_groups = avx512::lowbit_groups<avx512::Kind::q2_K>;
    k.gemm_q3_K_groups = avx512::lowbit_groups<avx512::Kind::q3_K>;
    k.gemm_iq4_xs_groups = avx512::lowbit_groups<avx512::Kind::iq4_xs>;
}

}  // namespace llamix
