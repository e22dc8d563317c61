// The bf16 attention products (kernels/ops.h, attn_bf16_*) on AVX-512: the packing, and an exact
// emulation of TDPBF16PS (kernels/ref/tdpbf16.h): each pair block's even and odd chains are
// float32 FMAs under MXCSR DAZ + FTZ (x86 flushes after rounding, as the instruction does), then
// c + (even + odd). A pair of bf16 (one dword of a packed block) widens to two float32 vectors
// with one shift and one mask. The AMX entries come from attn_amx.cpp where the CPU has tiles.
// GCC 12 warns inside its own headers about _mm512_undefined_*() (GCC bug 105593): a false
// positive, silenced for this file only (as in ops.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "common/cpu_features.h"
#include "kernels/ops.h"
#include "kernels/x86_shared/denormals_as_zero.h"

namespace llamix {
namespace avx512 {

void fill_attn_amx(OpsKernels& k);  // attn_amx.cpp

namespace {

inline float bf16_scalar(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

inline __m512 even_of(__m512i pairs) { return _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16)); }
inline __m512 odd_of(__m512i pairs) {
    return _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32(int(0xffff0000u))));
}

// 16 float32 rounded to bf16 (nearest even, NaN quiet) in the low halves of 16 dwords.
inline __m512i round_bf16(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    const __mmask16 nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
}

// Two rows of 16 values (elements e = 0, 1 of 16 pairs) as 16 bf16 pairs.
inline void store_pairs(__m512 x0, __m512 x1, uint16_t* dst) {
    _mm512_storeu_si512(dst, _mm512_or_si512(round_bf16(x0), _mm512_slli_epi32(round_bf16(x1), 16)));
}

inline __mmask16 lanes(int64_t left) {
    return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
}
inline __m512 load_f32(const float* x, __mmask16 m) { return _mm512_maskz_loadu_ps(m, x); }
inline __m512 load_f32(const uint16_t* x, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x)); }

// kt (head_dim, kAttnTile) -> kp: rows d, d + 1 of key block n make one 16-pair row of block (d / 32, n).
template <class T>
void pack_keys(const T* kt, int64_t head_dim, uint16_t* kp) {
    const int64_t hd32 = (head_dim + 31) / 32 * 32;
    for (int64_t d = 0; d < hd32; d += 2) {
        const bool real = d < head_dim;  // head_dim is even: a pair is real or padding
        for (int64_t n = 0; n < 4; ++n) {
            uint16_t* dst = kp + (d / 32 * 4 + n) * 512 + d % 32 / 2 * 32;
            if (!real) {
                _mm512_storeu_si512(dst, _mm512_setzero_si512());
                continue;
            }
            store_pairs(load_f32(kt + d * kAttnTile + 16 * n, 0xFFFF), load_f32(kt + (d + 1) * kAttnTile + 16 * n, 0xFFFF),
                        dst);
        }
    }
}

// v (kAttnTile, head_dim) -> vp: keys j, j + 1 of column block c make one row of block (j / 32, c).
template <class T>
void pack_values(const T* v, int64_t head_dim, uint16_t* vp) {
    const int64_t hd32 = (head_dim + 31) / 32 * 32, col_blocks = hd32 / 16;
    for (int64_t j = 0; j < kAttnTile; j += 2)
        for (int64_t c = 0; c < col_blocks; ++c) {
            const __mmask16 m = lanes(head_dim - 16 * c);
            store_pairs(load_f32(v + j * head_dim + 16 * c, m), load_f32(v + (j + 1) * head_dim + 16 * c, m),
                        vp + (j / 32 * col_blocks + c) * 512 + j % 32 / 2 * 32);
        }
}

// Rows r0..r0+NR-1 of s against key block n (16 keys): per d block, two chains per row.
template <int NR>
inline void scores_rows(const uint16_t* q, int64_t r0, int64_t hd32, const uint16_t* kp, float* s) {
    for (int64_t n = 0; n < 4; ++n) {
        __m512 acc[NR];
        for (int i = 0; i < NR; ++i) acc[i] = _mm512_setzero_ps();
        for (int64_t b = 0; b < hd32 / 32; ++b) {
            const uint16_t* blk = kp + (b * 4 + n) * 512;
            __m512 e[NR], o[NR];
            for (int i = 0; i < NR; ++i) e[i] = o[i] = _mm512_setzero_ps();
            for (int64_t i2 = 0; i2 < 16; ++i2) {
                const __m512i pairs = _mm512_loadu_si512(blk + 32 * i2);
                const __m512 ke = even_of(pairs), ko = odd_of(pairs);
                for (int i = 0; i < NR; ++i) {
                    const uint16_t* qr = q + (r0 + i) * hd32 + 32 * b + 2 * i2;
                    e[i] = _mm512_fmadd_ps(_mm512_set1_ps(bf16_scalar(qr[0])), ke, e[i]);
                    o[i] = _mm512_fmadd_ps(_mm512_set1_ps(bf16_scalar(qr[1])), ko, o[i]);
                }
            }
            for (int i = 0; i < NR; ++i) acc[i] = _mm512_add_ps(acc[i], _mm512_add_ps(e[i], o[i]));
        }
        for (int i = 0; i < NR; ++i) _mm512_storeu_ps(s + (r0 + i) * kAttnTile + 16 * n, acc[i]);
    }
}

__attribute__((noinline)) void scores_daz(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp, float* s) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) scores_rows<4>(q, r, hd32, kp, s);
    for (; r < n_rows; ++r) scores_rows<1>(q, r, hd32, kp, s);
}

// Output columns 16 c .. 16 c + 15 of rows r0..r0+NR-1: both 32-key blocks in order.
template <int NR>
inline void accumulate_rows(const uint16_t* p, int64_t r0, int64_t hd32, const uint16_t* vp, float* o) {
    const int64_t col_blocks = hd32 / 16;
    for (int64_t c = 0; c < col_blocks; ++c) {
        __m512 acc[NR];
        for (int i = 0; i < NR; ++i) acc[i] = _mm512_loadu_ps(o + (r0 + i) * hd32 + 16 * c);
        for (int64_t b = 0; b < 2; ++b) {
            const uint16_t* blk = vp + (b * col_blocks + c) * 512;
            __m512 e[NR], od[NR];
            for (int i = 0; i < NR; ++i) e[i] = od[i] = _mm512_setzero_ps();
            for (int64_t i2 = 0; i2 < 16; ++i2) {
                const __m512i pairs = _mm512_loadu_si512(blk + 32 * i2);
                const __m512 ve = even_of(pairs), vo = odd_of(pairs);
                for (int i = 0; i < NR; ++i) {
                    const uint16_t* pr = p + (r0 + i) * kAttnTile + 32 * b + 2 * i2;
                    e[i] = _mm512_fmadd_ps(_mm512_set1_ps(bf16_scalar(pr[0])), ve, e[i]);
                    od[i] = _mm512_fmadd_ps(_mm512_set1_ps(bf16_scalar(pr[1])), vo, od[i]);
                }
            }
            for (int i = 0; i < NR; ++i) acc[i] = _mm512_add_ps(acc[i], _mm512_add_ps(e[i], od[i]));
        }
        for (int i = 0; i < NR; ++i) _mm512_storeu_ps(o + (r0 + i) * hd32 + 16 * c, acc[i]);
    }
}

__attribute__((noinline)) void accumulate_daz(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp,
                                              float* o) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) accumulate_rows<4>(p, r, hd32, vp, o);
    for (; r < n_rows; ++r) accumulate_rows<1>(p, r, hd32, vp, o);
}

}  // namespace

// o rows times alpha (float32, under the caller's MXCSR), rows whose alpha is 1 left alone.
__attribute__((noinline)) void attn_bf16_scale_rows(int64_t n_rows, int64_t hd32, const float* alpha, float* o) {
    for (int64_t r = 0; r < n_rows; ++r) {
        if (alpha[r] == 1.0f) continue;
        const __m512 a = _mm512_set1_ps(alpha[r]);
        for (int64_t c = 0; c < hd32; c += 16)
            _mm512_storeu_ps(o + r * hd32 + c, _mm512_mul_ps(a, _mm512_loadu_ps(o + r * hd32 + c)));
    }
}

void attn_bf16_scores(const uint16_t* q, int64_t n_rows, int64_t hd32, const uint16_t* kp, float* s) {
    DenormalsAsZero daz;
    scores_daz(q, n_rows, hd32, kp, s);
}

void attn_bf16_accumulate(const uint16_t* p, int64_t n_rows, int64_t hd32, const uint16_t* vp, const float* alpha,
                          float* o) {
    attn_bf16_scale_rows(n_rows, hd32, alpha, o);
    DenormalsAsZero daz;
    accumulate_daz(p, n_rows, hd32, vp, o);
}

void attn_bf16_pack_keys(const float* kt, int64_t head_dim, uint16_t* kp) { pack_keys(kt, head_dim, kp); }
void attn_bf16_pack_keys_f16(const uint16_t* kt, int64_t head_dim, uint16_t* kp) { pack_keys(kt, head_dim, kp); }
void attn_bf16_pack_values(const float* v, int64_t head_dim, uint16_t* vp) { pack_values(v, head_dim, vp); }
void attn_bf16_pack_values_f16(const uint16_t* v, int64_t head_dim, uint16_t* vp) { pack_values(v, head_dim, vp); }

}  // namespace avx512

void fill_attn_bf16_tiles_avx512(OpsKernels& k) {
    k.attn_bf16_scores = avx512::attn_bf16_scores;
    k.attn_bf16_accumulate = avx512::attn_bf16_accumulate;
    k.attn_bf16_pack_keys = avx512::attn_bf16_pack_keys;
    k.attn_bf16_pack_keys_f16 = avx512::attn_bf16_pack_keys_f16;
    k.attn_bf16_pack_values = avx512::attn_bf16_pack_values;
    k.attn_bf16_pack_values_f16 = avx512::attn_bf16_pack_values_f16;
    if (cpu_features().amx_bf16) avx512::fill_attn_amx(k);
}

}  // namespace llamix
