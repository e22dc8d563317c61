// AVX-512 attention (16 lanes): the same algorithm as the AVX2 kernel (kernels/x86_avx2/ops.cpp),
// twice as wide; the element-wise ops stay AVX2 (they are memory-bound at these sizes).
// GCC 12 warns inside its own headers about _mm512_undefined_*() (GCC bug 105593), e.g. in the
// _mm512_reduce_* helpers: a false positive, silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/ops.h"
#include "kernels/x86_shared/exp2_taylor.h"

namespace llamix {
namespace avx2 {
void attn_tile_transpose(const float* k, int64_t head_dim, float* kt);  // x86_avx2/ops.cpp
}  // namespace avx2
namespace avx512 {

namespace {

// e^x, Cephes-style polynomial as in the AVX2 kernel (inputs clamped to [-87.3, 88.7]).
inline __m512 exp_ps(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

inline __m256 fold(__m512 a) { return _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1)); }

// Lane sums of four vectors as lanes 0..3 of one 128-bit vector.
inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m256 ab = _mm256_hadd_ps(fold(a), fold(b)), cd = _mm256_hadd_ps(fold(c), fold(d));
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Replaces s[0..n) by exp(s - max) and returns their sum: softmax's numerators, with a masked
// tail so every element goes through the same exp.
inline float softmax_numerators(float* s, int64_t n) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
        vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, s + j));
    }
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        const __mmask16 m = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
        const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, s + j), mx));
        _mm512_mask_storeu_ps(s + j, m, e);
        vsum = _mm512_add_ps(vsum, _mm512_maskz_mov_ps(m, e));
    }
    return _mm512_reduce_add_ps(vsum);
}

struct F32Cache {
    using T = float;
    static __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
    static __m512 load_n(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
};
struct F16Cache {
    using T = uint16_t;
    static __m512 load16(const uint16_t* p) {
        return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    }
    static __m512 load_n(const uint16_t* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
};

// Scores four keys at a time (independent FMA chains), a masked tail for head_dim % 16; the
// values' weighted sum keeps 128 output lanes in 8 registers per pass.
template <class C>
void attention_impl(const float* q, const typename C::T* k, const typename C::T* v, int64_t stride, int64_t n_keys,
                    int64_t head_dim, float scale, float* out, float* scratch) {
    using T = typename C::T;
    const int64_t nfull = head_dim / 16;
    const int rem = int(head_dim % 16);
    const __mmask16 tail = __mmask16((1u << rem) - 1);
    const __m512 q_tail = _mm512_maskz_loadu_ps(tail, q + nfull * 16);
    int64_t j = 0;
    for (; j + 4 <= n_keys; j += 4) {
        const T* k0 = k + j * stride;
        const T* k1 = k0 + stride;
        const T* k2 = k1 + stride;
        const T* k3 = k2 + stride;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
        for (int64_t b = 0; b < nfull; ++b) {
            const __m512 qv = _mm512_loadu_ps(q + 16 * b);
            a0 = _mm512_fmadd_ps(qv, C::load16(k0 + 16 * b), a0);
            a1 = _mm512_fmadd_ps(qv, C::load16(k1 + 16 * b), a1);
            a2 = _mm512_fmadd_ps(qv, C::load16(k2 + 16 * b), a2);
            a3 = _mm512_fmadd_ps(qv, C::load16(k3 + 16 * b), a3);
        }
        if (rem) {
            const int64_t o = nfull * 16;
            a0 = _mm512_fmadd_ps(q_tail, C::load_n(k0 + o, tail), a0);
            a1 = _mm512_fmadd_ps(q_tail, C::load_n(k1 + o, tail), a1);
            a2 = _mm512_fmadd_ps(q_tail, C::load_n(k2 + o, tail), a2);
            a3 = _mm512_fmadd_ps(q_tail, C::load_n(k3 + o, tail), a3);
        }
        _mm_storeu_ps(scratch + j, _mm_mul_ps(hsum4(a0, a1, a2, a3), _mm_set1_ps(scale)));
    }
    for (; j < n_keys; ++j) {
        const T* kj = k + j * stride;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t b = 0; b < nfull; ++b) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * b), C::load16(kj + 16 * b), acc);
        if (rem) acc = _mm512_fmadd_ps(q_tail, C::load_n(kj + nfull * 16, tail), acc);
        scratch[j] = _mm512_reduce_add_ps(acc) * scale;
    }
    const float inv = 1.0f / softmax_numerators(scratch, n_keys);
    // out (head_dim) = sum_j p_j v_j
    const int64_t nvec = nfull + (rem ? 1 : 0);
    for (int64_t c0 = 0; c0 < nvec; c0 += 8) {
        const int64_t nc = std::min<int64_t>(8, nvec - c0);
        __m512 acc[8];
        for (int c = 0; c < 8; ++c) acc[c] = _mm512_setzero_ps();
        auto load = [&](const T* vj, int64_t c) {
            return rem && c0 + c == nfull ? C::load_n(vj + 16 * c, tail) : C::load16(vj + 16 * c);
        };
        int64_t jj = 0;
        if (nc <= 4) {  // short heads: even and odd keys in separate accumulators (8 chains)
            for (; jj + 2 <= n_keys; jj += 2) {
                const __m512 p0 = _mm512_set1_ps(scratch[jj] * inv), p1 = _mm512_set1_ps(scratch[jj + 1] * inv);
                const T* v0 = v + jj * stride + c0 * 16;
                const T* v1 = v0 + stride;
                for (int64_t c = 0; c < nc; ++c) {
                    acc[c] = _mm512_fmadd_ps(p0, load(v0, c), acc[c]);
                    acc[c + 4] = _mm512_fmadd_ps(p1, load(v1, c), acc[c + 4]);
                }
            }
        }
        for (; jj < n_keys; ++jj) {
            const __m512 p = _mm512_set1_ps(scratch[jj] * inv);
            const T* vj = v + jj * stride + c0 * 16;
            for (int64_t c = 0; c < nc; ++c) acc[c] = _mm512_fmadd_ps(p, load(vj, c), acc[c]);
        }
        if (nc <= 4)
            for (int64_t c = 0; c < nc; ++c) acc[c] = _mm512_add_ps(acc[c], acc[c + 4]);
        for (int64_t c = 0; c < nc; ++c) {
            const bool partial = rem && c0 + c == nfull;
            if (partial) _mm512_mask_storeu_ps(out + (c0 + c) * 16, tail, acc[c]);
            else _mm512_storeu_ps(out + (c0 + c) * 16, acc[c]);
        }
    }
}


// Grouped-query attention for head_dim a multiple of 16 (up to 256): every block of four keys is
// read from the cache once and used by all heads of the group (two heads at a time from L1);
// values are applied in blocks of 32 keys that stay in L1 while each head accumulates.
template <class C>
void attention_group_impl(const float* q, int64_t q_stride, int64_t n_q, const typename C::T* k,
                          const typename C::T* v, int64_t stride, int64_t n_keys, int64_t head_dim, float scale,
                          float* out, int64_t out_stride, float* scratch) {
    using T = typename C::T;
    if (head_dim % 16 || head_dim > 256) {
        for (int64_t h = 0; h < n_q; ++h)
            attention_impl<C>(q + h * q_stride, k, v, stride, n_keys, head_dim, scale, out + h * out_stride, scratch);
        return;
    }
    const int64_t nv = head_dim / 16;
    const __m128 vscale = _mm_set1_ps(scale);
    // scores: scratch[h * n_keys + j]
    int64_t j = 0;
    for (; j + 4 <= n_keys; j += 4) {
        const T* k0 = k + j * stride;
        const T* k1 = k0 + stride;
        const T* k2 = k1 + stride;
        const T* k3 = k2 + stride;
        for (int64_t h = 0; h < n_q; h += 2) {
            const bool two = h + 1 < n_q;
            const float* qa = q + h * q_stride;
            const float* qb = two ? qa + q_stride : qa;
            __m512 a[8];
            for (int i = 0; i < 8; ++i) a[i] = _mm512_setzero_ps();
            for (int64_t b = 0; b < nv; ++b) {
                const __m512 x0 = C::load16(k0 + 16 * b), x1 = C::load16(k1 + 16 * b);
                const __m512 x2 = C::load16(k2 + 16 * b), x3 = C::load16(k3 + 16 * b);
                const __m512 q0 = _mm512_loadu_ps(qa + 16 * b), q1 = _mm512_loadu_ps(qb + 16 * b);
                a[0] = _mm512_fmadd_ps(q0, x0, a[0]);
                a[1] = _mm512_fmadd_ps(q0, x1, a[1]);
                a[2] = _mm512_fmadd_ps(q0, x2, a[2]);
                a[3] = _mm512_fmadd_ps(q0, x3, a[3]);
                a[4] = _mm512_fmadd_ps(q1, x0, a[4]);
                a[5] = _mm512_fmadd_ps(q1, x1, a[5]);
                a[6] = _mm512_fmadd_ps(q1, x2, a[6]);
                a[7] = _mm512_fmadd_ps(q1, x3, a[7]);
            }
            _mm_storeu_ps(scratch + h * n_keys + j, _mm_mul_ps(hsum4(a[0], a[1], a[2], a[3]), vscale));
            if (two) _mm_storeu_ps(scratch + (h + 1) * n_keys + j, _mm_mul_ps(hsum4(a[4], a[5], a[6], a[7]), vscale));
        }
    }
    for (; j < n_keys; ++j) {
        const T* kj = k + j * stride;
        for (int64_t h = 0; h < n_q; ++h) {
            __m512 acc = _mm512_setzero_ps();
            for (int64_t b = 0; b < nv; ++b)
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + h * q_stride + 16 * b), C::load16(kj + 16 * b), acc);
            scratch[h * n_keys + j] = _mm512_reduce_add_ps(acc) * scale;
        }
    }
    // softmax of each head's row, normalised in place
    for (int64_t h = 0; h < n_q; ++h) {
        float* s = scratch + h * n_keys;
        const __m512 inv = _mm512_set1_ps(1.0f / softmax_numerators(s, n_keys));
        for (j = 0; j < n_keys; j += 16) {
            const __mmask16 m = n_keys - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n_keys - j)) - 1);
            _mm512_mask_storeu_ps(s + j, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + j), inv));
        }
    }
    // out[h] = sum_j p[h][j] v_j, key blocks of 32 (8-16 KB of values, L1-resident for the group)
    for (int64_t h = 0; h < n_q; ++h) std::fill(out + h * out_stride, out + h * out_stride + head_dim, 0.0f);
    constexpr int64_t kBlock = 32;
    for (int64_t j0 = 0; j0 < n_keys; j0 += kBlock) {
        const int64_t j1 = std::min(n_keys, j0 + kBlock);
        for (int64_t h = 0; h < n_q; ++h) {
            const float* p = scratch + h * n_keys;
            float* o = out + h * out_stride;
            __m512 acc[16], acc2[4];
            for (int64_t c = 0; c < nv; ++c) acc[c] = _mm512_loadu_ps(o + 16 * c);
            for (int c = 0; c < 4; ++c) acc2[c] = _mm512_setzero_ps();
            int64_t jj = j0;
            if (nv <= 4) {  // short heads: even and odd keys in separate chains
                for (; jj + 2 <= j1; jj += 2) {
                    const __m512 p0 = _mm512_set1_ps(p[jj]), p1 = _mm512_set1_ps(p[jj + 1]);
                    const T* v0 = v + jj * stride;
                    const T* v1 = v0 + stride;
                    for (int64_t c = 0; c < nv; ++c) {
                        acc[c] = _mm512_fmadd_ps(p0, C::load16(v0 + 16 * c), acc[c]);
                        acc2[c] = _mm512_fmadd_ps(p1, C::load16(v1 + 16 * c), acc2[c]);
                    }
                }
            }
            for (; jj < j1; ++jj) {
                const __m512 pj = _mm512_set1_ps(p[jj]);
                const T* vj = v + jj * stride;
                for (int64_t c = 0; c < nv; ++c) acc[c] = _mm512_fmadd_ps(pj, C::load16(vj + 16 * c), acc[c]);
            }
            for (int64_t c = 0; c < nv; ++c)
                _mm512_storeu_ps(o + 16 * c, c < 4 ? _mm512_add_ps(acc[c], acc2[c]) : acc[c]);
        }
    }
}

}  // namespace

void attention(const float* q, const float* k, const float* v, int64_t stride, int64_t n_keys, int64_t head_dim,
               float scale, float* out, float* scratch) {
    attention_impl<F32Cache>(q, k, v, stride, n_keys, head_dim, scale, out, scratch);
}

void attention_f16(const float* q, const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n_keys,
                   int64_t head_dim, float scale, float* out, float* scratch) {
    attention_impl<F16Cache>(q, k, v, stride, n_keys, head_dim, scale, out, scratch);
}

void attention_group(const float* q, int64_t q_stride, int64_t n_q, const float* k, const float* v, int64_t stride,
                     int64_t n_keys, int64_t head_dim, float scale, float* out, int64_t out_stride, float* scratch) {
    attention_group_impl<F32Cache>(q, q_stride, n_q, k, v, stride, n_keys, head_dim, scale, out, out_stride, scratch);
}

void attention_group_f16(const float* q, int64_t q_stride, int64_t n_q, const uint16_t* k, const uint16_t* v,
                         int64_t stride, int64_t n_keys, int64_t head_dim, float scale, float* out, int64_t out_stride,
                         float* scratch) {
    attention_group_impl<F16Cache>(q, q_stride, n_q, k, v, stride, n_keys, head_dim, scale, out, out_stride, scratch);
}

// Flash-attention tiles (kernels/ops.h): a tile's 64 keys are 4 vectors, rows four at a time.
// Each row's arithmetic is the same whatever its block.

namespace {

template <int NR>
inline void scores_rows(const float* q, int64_t r0, int64_t head_dim, const float* kt, float* s) {
    __m512 a[NR][4];
    for (int i = 0; i < NR; ++i)
        for (int c = 0; c < 4; ++c) a[i][c] = _mm512_setzero_ps();
    for (int64_t d = 0; d < head_dim; ++d) {
        const float* kd = kt + d * kAttnTile;
        const __m512 k0 = _mm512_loadu_ps(kd), k1 = _mm512_loadu_ps(kd + 16);
        const __m512 k2 = _mm512_loadu_ps(kd + 32), k3 = _mm512_loadu_ps(kd + 48);
        for (int i = 0; i < NR; ++i) {
            const __m512 b = _mm512_set1_ps(q[(r0 + i) * head_dim + d]);
            a[i][0] = _mm512_fmadd_ps(b, k0, a[i][0]);
            a[i][1] = _mm512_fmadd_ps(b, k1, a[i][1]);
            a[i][2] = _mm512_fmadd_ps(b, k2, a[i][2]);
            a[i][3] = _mm512_fmadd_ps(b, k3, a[i][3]);
        }
    }
    for (int i = 0; i < NR; ++i)
        for (int c = 0; c < 4; ++c) _mm512_storeu_ps(s + (r0 + i) * kAttnTile + 16 * c, a[i][c]);
}

// Output columns [c0, c0 + 16 NV) of rows r0..r0+NR-1 (mask: the last vector's lanes).
template <int NR, int NV>
inline void accumulate_rows(const float* p, int64_t r0, const float* v, int64_t head_dim, const float* alpha, float* o,
                            int64_t c0, __mmask16 last) {
    __m512 a[NR][NV];
    auto mask = [&](int c) { return c == NV - 1 ? last : __mmask16(0xFFFF); };
    for (int i = 0; i < NR; ++i) {
        const __m512 al = _mm512_set1_ps(alpha[r0 + i]);
        for (int c = 0; c < NV; ++c)
            a[i][c] = _mm512_mul_ps(al, _mm512_maskz_loadu_ps(mask(c), o + (r0 + i) * head_dim + c0 + 16 * c));
    }
    for (int64_t j = 0; j < kAttnTile; ++j) {
        __m512 vv[NV];
        for (int c = 0; c < NV; ++c) vv[c] = _mm512_maskz_loadu_ps(mask(c), v + j * head_dim + c0 + 16 * c);
        for (int i = 0; i < NR; ++i) {
            const __m512 b = _mm512_set1_ps(p[(r0 + i) * kAttnTile + j]);
            for (int c = 0; c < NV; ++c) a[i][c] = _mm512_fmadd_ps(b, vv[c], a[i][c]);
        }
    }
    for (int i = 0; i < NR; ++i)
        for (int c = 0; c < NV; ++c) _mm512_mask_storeu_ps(o + (r0 + i) * head_dim + c0 + 16 * c, mask(c), a[i][c]);
}

template <int NR>
inline void accumulate_row_block(const float* p, int64_t r0, const float* v, int64_t head_dim, const float* alpha,
                                 float* o) {
    int64_t c0 = 0;
    for (; c0 + 64 <= head_dim; c0 += 64) accumulate_rows<NR, 4>(p, r0, v, head_dim, alpha, o, c0, 0xFFFF);
    for (; c0 < head_dim; c0 += 16) {
        const int64_t left = head_dim - c0;
        accumulate_rows<NR, 1>(p, r0, v, head_dim, alpha, o, c0,
                               left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1));
    }
}

}  // namespace

// kt (head_dim, 64) = k (64, head_dim) transposed, in 16x16 blocks (four shuffle stages);
// head_dim not a multiple of 16 goes through the AVX2 8x8 kernel.
void attn_tile_transpose(const float* k, int64_t head_dim, float* kt) {
    if (head_dim % 16) {
        avx2::attn_tile_transpose(k, head_dim, kt);
        return;
    }
    for (int64_t j0 = 0; j0 < kAttnTile; j0 += 16)
        for (int64_t d0 = 0; d0 < head_dim; d0 += 16) {
            __m512 r[16], t[16];
            for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(k + (j0 + i) * head_dim + d0);
            for (int i = 0; i < 16; i += 2) {
                t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 16; i += 4) {
                r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
                r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
                r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
                r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
            }
            for (int i = 0; i < 16; i += 8)
                for (int c = 0; c < 4; ++c) {
                    t[i + c] = _mm512_shuffle_f32x4(r[i + c], r[i + 4 + c], 0x88);
                    t[i + 4 + c] = _mm512_shuffle_f32x4(r[i + c], r[i + 4 + c], 0xDD);
                }
            for (int c = 0; c < 8; ++c) {
                _mm512_storeu_ps(kt + (d0 + c) * kAttnTile + j0, _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88));
                _mm512_storeu_ps(kt + (d0 + 8 + c) * kAttnTile + j0, _mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD));
            }
        }
}

void attn_tile_scores(const float* q, int64_t n_rows, int64_t head_dim, const float* kt, float* s) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) scores_rows<4>(q, r, head_dim, kt, s);
    for (; r < n_rows; ++r) scores_rows<1>(q, r, head_dim, kt, s);
}

namespace {

// exp(x - mx) for a row's scores as 2^t, t = x log2(e) - mx log2(e) (one fused multiply-add),
// t clamped at -150 so a masked score (-inf) gives exactly 0 (2^-150 rounds to 0); 2^t = 2^n 2^f,
// n = round(t), f in [-1/2, 1/2], 2^f by its Taylor polynomial of degree 6 (relative error below
// 2e-7), 2^n applied by vscalefps: 11 instructions, no compare.
inline __m512 exp_shifted(__m512 x, __m512 mx_log2e) {
    __m512 t = _mm512_fmsub_ps(x, _mm512_set1_ps(1.44269504088896341f), mx_log2e);
    t = _mm512_max_ps(t, _mm512_set1_ps(-150.0f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(x86_shared::kExp2Taylor6[0]);
#pragma GCC unroll 6
    for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(x86_shared::kExp2Taylor6[i]));
    return _mm512_scalef_ps(p, n);
}

}  // namespace

// Online softmax of a tile (kernels/ops.h). The rescale factor is computed only when the row's
// maximum moves (alpha is exactly 1 otherwise, as the contract says).
void attn_tile_softmax(float* s, int64_t n_rows, float* m, float* l, float* alpha) {
    for (int64_t r = 0; r < n_rows; ++r) {
        float* sr = s + r * kAttnTile;
        __m512 x[4];
        for (int c = 0; c < 4; ++c) x[c] = _mm512_loadu_ps(sr + 16 * c);
        const float mx = std::max(m[r], _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(x[0], x[1]),
                                                                          _mm512_max_ps(x[2], x[3]))));
        if (mx == -INFINITY) {
            for (int c = 0; c < 4; ++c) _mm512_storeu_ps(sr + 16 * c, _mm512_setzero_ps());
            alpha[r] = 1.0f;
            continue;
        }
        const __m512 shift = _mm512_set1_ps(mx * 1.44269504088896341f);
        __m512 sum = _mm512_setzero_ps();
        for (int c = 0; c < 4; ++c) {
            const __m512 e = exp_shifted(x[c], shift);
            _mm512_storeu_ps(sr + 16 * c, e);
            sum = _mm512_add_ps(sum, e);
        }
        alpha[r] = mx == m[r] ? 1.0f : std::exp(m[r] - mx);
        l[r] = alpha[r] * l[r] + _mm512_reduce_add_ps(sum);
        m[r] = mx;
    }
}

namespace {

// exp(x - mx) for the bf16 products' softmax, whose probabilities are rounded to bf16 (8 bits)
// next: 2^f by a degree-4 polynomial (a least-squares fit of relative error on [-1/2, 1/2]; at most
// 2.7e-6 from 2^f in float32), two multiply-adds fewer than exp_shifted; otherwise the same steps.
inline __m512 exp_shifted_bf16(__m512 x, __m512 mx_log2e) {
    __m512 t = _mm512_fmsub_ps(x, _mm512_set1_ps(1.44269504088896341f), mx_log2e);
    t = _mm512_max_ps(t, _mm512_set1_ps(-150.0f));
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(0.009570101276040077f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.05591785907745361f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.240247443318367f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931217908859253f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999992847442627f));
    return _mm512_scalef_ps(p, n);
}

// Two vectors of float32 (not NaN) rounded to bf16 (nearest even), as 32 words in lane order:
// x + 0x7fff + (bit 16 of x), the high halves of the two picked by one permute.
inline __m512i round_pair_bf16(__m512 a, __m512 b) {
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i ua = _mm512_castps_si512(a), ub = _mm512_castps_si512(b);
    const __m512i ra = _mm512_add_epi32(_mm512_add_epi32(ua, bias), _mm512_and_si512(_mm512_srli_epi32(ua, 16), one));
    const __m512i rb = _mm512_add_epi32(_mm512_add_epi32(ub, bias), _mm512_and_si512(_mm512_srli_epi32(ub, 16), one));
    const __m512i odd_words = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35, 33, 31, 29,
                                               27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    return _mm512_permutex2var_epi16(ra, odd_words, rb);
}

}  // namespace

// Lanes 0..3: the maximum (sum) of the 16 lanes of a, b, c, d; each lane's result depends on its
// own vector only, in one fixed order (whichever of the four slots a row takes).
template <bool kMax>
inline __m128 reduce4(__m512 a, __m512 b, __m512 c, __m512 d) {
    auto op8 = [](__m256 x, __m256 y) { return kMax ? _mm256_max_ps(x, y) : _mm256_add_ps(x, y); };
    auto half = [&](__m512 x) { return op8(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1)); };
    const __m256 a8 = half(a), b8 = half(b), c8 = half(c), d8 = half(d);
    const __m256 ab = op8(_mm256_unpacklo_ps(a8, b8), _mm256_unpackhi_ps(a8, b8));  // a02 b02 a13 b13 | a46 ..
    const __m256 cd = op8(_mm256_unpacklo_ps(c8, d8), _mm256_unpackhi_ps(c8, d8));
    const __m256 abcd = op8(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m128 lo = _mm256_castps256_ps128(abcd), hi = _mm256_extractf128_ps(abcd, 1);
    return kMax ? _mm_max_ps(lo, hi) : _mm_add_ps(lo, hi);
}

// attn_tile_softmax with its probabilities rounded to bf16 into pb (kernels/ops.h), in one pass,
// four rows at a time (their maxima and sums reduced together; a short group repeats its last
// row, whose result is the same in any slot). A row whose sum is NaN (a NaN or infinite score) is
// rounded again by f32_to_bf16's rule (NaN stays a quiet NaN), which round_pair_bf16 does not handle.
void attn_tile_softmax_bf16(float* s, int64_t n_rows, float* m, float* l, float* alpha, uint16_t* pb) {
    for (int64_t r = 0; r < n_rows; r += 4) {
        const int64_t nr = std::min<int64_t>(4, n_rows - r);
        __m512 x[4][4], rmax[4];
        for (int i = 0; i < 4; ++i) {
            const float* sr = s + (r + std::min<int64_t>(i, nr - 1)) * kAttnTile;
            for (int c = 0; c < 4; ++c) x[i][c] = _mm512_loadu_ps(sr + 16 * c);
            rmax[i] = _mm512_max_ps(_mm512_max_ps(x[i][0], x[i][1]), _mm512_max_ps(x[i][2], x[i][3]));
        }
        alignas(16) float tmax[4], tsum[4];
        _mm_store_ps(tmax, reduce4<true>(rmax[0], rmax[1], rmax[2], rmax[3]));
        __m512 e[4][4], sum[4];
        float mx[4];
        for (int i = 0; i < 4; ++i) {
            mx[i] = std::max(m[r + std::min<int64_t>(i, nr - 1)], tmax[i]);
            const __m512 shift = _mm512_set1_ps(mx[i] == -INFINITY ? 0.0f : mx[i] * 1.44269504088896341f);
            sum[i] = _mm512_setzero_ps();
            for (int c = 0; c < 4; ++c) {
                e[i][c] = exp_shifted_bf16(x[i][c], shift);  // all -inf: exactly 0
                sum[i] = _mm512_add_ps(sum[i], e[i][c]);
            }
        }
        _mm_store_ps(tsum, reduce4<false>(sum[0], sum[1], sum[2], sum[3]));
        for (int i = 0; i < nr; ++i) {
            uint16_t* pr = pb + (r + i) * kAttnTile;
            if (mx[i] == -INFINITY) {  // no key yet: zeros, alpha 1
                _mm512_storeu_si512(pr, _mm512_setzero_si512());
                _mm512_storeu_si512(pr + 32, _mm512_setzero_si512());
                alpha[r + i] = 1.0f;
                continue;
            }
            if (std::isnan(tsum[i])) {
                alignas(64) float wide[kAttnTile];
                for (int c = 0; c < 4; ++c) _mm512_store_ps(wide + 16 * c, e[i][c]);
                for (int64_t j = 0; j < kAttnTile; ++j) {
                    uint32_t u;
                    std::memcpy(&u, wide + j, 4);
                    pr[j] = std::isnan(wide[j]) ? uint16_t((u >> 16) | 0x40)
                                                : uint16_t((u + 0x7fff + ((u >> 16) & 1)) >> 16);
                }
            } else {
                _mm512_storeu_si512(pr, round_pair_bf16(e[i][0], e[i][1]));
                _mm512_storeu_si512(pr + 32, round_pair_bf16(e[i][2], e[i][3]));
            }
            const float a = mx[i] == m[r + i] ? 1.0f : std::exp(m[r + i] - mx[i]);
            alpha[r + i] = a;
            l[r + i] = a * l[r + i] + tsum[i];
            m[r + i] = mx[i];
        }
    }
}

void attn_tile_accumulate(const float* p, int64_t n_rows, const float* v, int64_t head_dim, const float* alpha,
                          float* o) {
    int64_t r = 0;
    for (; r + 4 <= n_rows; r += 4) accumulate_row_block<4>(p, r, v, head_dim, alpha, o);
    for (; r < n_rows; ++r) accumulate_row_block<1>(p, r, v, head_dim, alpha, o);
}

namespace {

// The F16 tiles widened in registers (vcvtph2ps), no float32 copy: each element of s or o gets
// the same fma chain as in attn_tile_scores / attn_tile_accumulate above. Rows are taken eight
// at a time against half a tile (32 keys, or 32 output columns), so every half is widened once
// per eight rows.
// The next tile's line `line` (of 2 head_dim: a tile is kAttnTile x head_dim halves) into L1.
inline void prefetch_line(const uint16_t* next, int64_t line, int64_t head_dim) {
    if (next && line < 2 * head_dim)
        _mm_prefetch(reinterpret_cast<const char*>(next) + 64 * line, _MM_HINT_T0);
}

template <int NR>
inline void scores_rows_f16(const float* q, int64_t r0, int64_t head_dim, const uint16_t* kt, float* s,
                            const uint16_t* next) {
    for (int half = 0; half < 2; ++half) {
        __m512 a[NR][2];
        for (int i = 0; i < NR; ++i) a[i][0] = a[i][1] = _mm512_setzero_ps();
        const uint16_t* kh = kt + 32 * half;
        for (int64_t d = 0; d < head_dim; ++d) {
            prefetch_line(next, half * head_dim + d, head_dim);  // one line per step: 2 head_dim lines
            const __m512 k0 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kh + d * kAttnTile)));
            const __m512 k1 = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(kh + d * kAttnTile + 16)));
            for (int i = 0; i < NR; ++i) {
                const __m512 b = _mm512_set1_ps(q[(r0 + i) * head_dim + d]);
                a[i][0] = _mm512_fmadd_ps(b, k0, a[i][0]);
                a[i][1] = _mm512_fmadd_ps(b, k1, a[i][1]);
            }
        }
        for (int i = 0; i < NR; ++i) {
            _mm512_storeu_ps(s + (r0 + i) * kAttnTile + 32 * half, a[i][0]);
            _mm512_storeu_ps(s + (r0 + i) * kAttnTile + 32 * half + 16, a[i][1]);
        }
    }
}

inline __m512 load_f16(const uint16_t* x, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, x));
}

// Output columns [c0, c0 + 32) of rows r0..r0+NR-1 (m0, m1: the two vectors' lanes).
template <int NR>
inline void accumulate_rows_f16(const float* p, int64_t r0, const uint16_t* v, int64_t head_dim, const float* alpha,
                                float* o, int64_t c0, __mmask16 m0, __mmask16 m1, const uint16_t* next) {
    __m512 a[NR][2];
    for (int i = 0; i < NR; ++i) {
        const __m512 al = _mm512_set1_ps(alpha[r0 + i]);
        a[i][0] = _mm512_mul_ps(al, _mm512_maskz_loadu_ps(m0, o + (r0 + i) * head_dim + c0));
        a[i][1] = _mm512_mul_ps(al, _mm512_maskz_loadu_ps(m1, o + (r0 + i) * head_dim + c0 + 16));
    }
    for (int64_t j = 0; j < kAttnTile; ++j) {
        prefetch_line(next, c0 / 32 * kAttnTile + j, head_dim);
        const __m512 v0 = load_f16(v + j * head_dim + c0, m0), v1 = load_f16(v + j * head_dim + c0 + 16, m1);
        for (int i = 0; i < NR; ++i) {
            const __m512 b = _mm512_set1_ps(p[(r0 + i) * kAttnTile + j]);
            a[i][0] = _mm512_fmadd_ps(b, v0, a[i][0]);
            a[i][1] = _mm512_fmadd_ps(b, v1, a[i][1]);
        }
    }
    for (int i = 0; i < NR; ++i) {
        _mm512_mask_storeu_ps(o + (r0 + i) * head_dim + c0, m0, a[i][0]);
        _mm512_mask_storeu_ps(o + (r0 + i) * head_dim + c0 + 16, m1, a[i][1]);
    }
}

template <int NR>
inline void accumulate_row_block_f16(const float* p, int64_t r0, const uint16_t* v, int64_t head_dim,
                                     const float* alpha, float* o, const uint16_t* next) {
    auto lanes = [](int64_t left) {
        return left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
    };
    for (int64_t c0 = 0; c0 < head_dim; c0 += 32)
        accumulate_rows_f16<NR>(p, r0, v, head_dim, alpha, o, c0, lanes(head_dim - c0), lanes(head_dim - c0 - 16),
                                next);
}

}  // namespace

// The next tile is prefetched during the first row block only.
void attn_tile_scores_f16(const float* q, int64_t n_rows, int64_t head_dim, const uint16_t* kt, float* s,
                          const uint16_t* next) {
    int64_t r = 0;
    for (; r + 8 <= n_rows; r += 8, next = nullptr) scores_rows_f16<8>(q, r, head_dim, kt, s, next);
    for (; r + 4 <= n_rows; r += 4, next = nullptr) scores_rows_f16<4>(q, r, head_dim, kt, s, next);
    for (; r < n_rows; ++r, next = nullptr) scores_rows_f16<1>(q, r, head_dim, kt, s, next);
}

void attn_tile_accumulate_f16(const float* p, int64_t n_rows, const uint16_t* v, int64_t head_dim, const float* alpha,
                              float* o, const uint16_t* next) {
    int64_t r = 0;
    for (; r + 8 <= n_rows; r += 8, next = nullptr) accumulate_row_block_f16<8>(p, r, v, head_dim, alpha, o, next);
    for (; r + 4 <= n_rows; r += 4, next = nullptr) accumulate_row_block_f16<4>(p, r, v, head_dim, alpha, o, next);
    for (; r < n_rows; ++r, next = nullptr) accumulate_row_block_f16<1>(p, r, v, head_dim, alpha, o, next);
}

}  // namespace avx512

void fill_ops_avx512(OpsKernels& k) {
    k.attn_tile_scores_f16 = avx512::attn_tile_scores_f16;
    k.attn_tile_accumulate_f16 = avx512::attn_tile_accumulate_f16;
    k.attn_tile_transpose = avx512::attn_tile_transpose;
    k.attn_tile_scores = avx512::attn_tile_scores;
    k.attn_tile_softmax = avx512::attn_tile_softmax;
    k.attn_tile_softmax_bf16 = avx512::attn_tile_softmax_bf16;
    k.attn_tile_accumulate = avx512::attn_tile_accumulate;
    fill_attn_bf16_tiles_avx512(k);
    k.attention = avx512::attention;
    k.attention_f16 = avx512::attention_f16;
    k.attention_group = avx512::attention_group;
    k.attention_group_f16 = avx512::attention_group_f16;
}

}  // namespace llamix
