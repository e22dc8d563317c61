// AVX2 + FMA transformer ops. Same math as kernels/ref/ops_ref.cpp; exp is a Cephes-style
// polynomial (range reduction by ln 2, degree-6 minimax, |rel err| < 2e-7) instead of libm.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/ops.h"
#include "kernels/x86_shared/exp2_taylor.h"

namespace llamix {
namespace avx2 {

namespace {

inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// e^x for x in float32 range; inputs are clamped to [-87.3, 88.7] (the result stays finite).
inline __m256 exp_ps(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    const __m256 y = _mm256_add_ps(_mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r), _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// Scalar tail with the same polynomial, so every element of a row gets the same rounding.
inline float exp_scalar(float x) {
    alignas(32) float buf[8] = {x};
    _mm256_store_ps(buf, exp_ps(_mm256_load_ps(buf)));
    return buf[0];
}

}  // namespace

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = hsum(acc);
    for (; i < n; ++i) ss += x[i] * x[i];
    const float scale = 1.0f / std::sqrt(ss / float(n) + eps);
    const __m256 s = _mm256_set1_ps(scale);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), s), _mm256_loadu_ps(w + i)));
    for (; i < n; ++i) y[i] = x[i] * scale * w[i];
}

void swiglu(const float* g, const float* u, float* y, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        const __m256 s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) y[i] = g[i] / (1.0f + exp_scalar(-g[i])) * u[i];
}

// The same float32 operations as the reference for z (no FMA: the build sets -ffp-contract=off),
// so only exp's polynomial differs from it.
void geglu(const float* g, const float* u, float* y, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), c = _mm256_set1_ps(kGeluCubic);
    const __m256 s2 = _mm256_set1_ps(kGeluTwoSqrt2OverPi);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        const __m256 z = _mm256_mul_ps(s2, _mm256_add_ps(x, _mm256_mul_ps(c, x3)));
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), z));
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; ++i) {
        const float x = g[i];
        const float z = kGeluTwoSqrt2OverPi * (x + kGeluCubic * (x * x * x));
        y[i] = x / (1.0f + exp_scalar(-z)) * u[i];
    }
}

void add(float* y, const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; ++i) y[i] += x[i];
}

// Loads of 8 / 1 cache elements as float32, for float32 and fp16 caches.
struct F32Cache {
    using T = float;
    static __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
    static float load1(const float* p) { return *p; }
};
struct F16Cache {
    using T = uint16_t;
    static __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
    static float load1(const uint16_t* p) { return _cvtsh_ss(*p); }
};

// Sums of four vectors' lanes, returned as lanes 0..3 of one 128-bit vector.
inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);  // pairwise sums
    const __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

// Scores use four keys at a time (four independent FMA chains instead of one latency-bound
// chain); the weighted sum of values keeps up to 64 output lanes in registers per pass.
template <class C>
void attention_impl(const float* q, const typename C::T* k, const typename C::T* v, int64_t stride, int64_t n_keys,
                    int64_t head_dim, float scale, float* out, float* scratch) {
    using T = typename C::T;
    const int64_t hd8 = head_dim & ~int64_t(7);
    // scores (n_keys)
    int64_t j = 0;
    for (; j + 4 <= n_keys; j += 4) {
        const T* k0 = k + j * stride;
        const T* k1 = k0 + stride;
        const T* k2 = k1 + stride;
        const T* k3 = k2 + stride;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        for (int64_t d = 0; d < hd8; d += 8) {
            const __m256 qv = _mm256_loadu_ps(q + d);
            a0 = _mm256_fmadd_ps(qv, C::load8(k0 + d), a0);
            a1 = _mm256_fmadd_ps(qv, C::load8(k1 + d), a1);
            a2 = _mm256_fmadd_ps(qv, C::load8(k2 + d), a2);
            a3 = _mm256_fmadd_ps(qv, C::load8(k3 + d), a3);
        }
        alignas(16) float s4[4];
        _mm_store_ps(s4, hsum4(a0, a1, a2, a3));
        for (int64_t d = hd8; d < head_dim; ++d) {
            s4[0] += q[d] * C::load1(k0 + d);
            s4[1] += q[d] * C::load1(k1 + d);
            s4[2] += q[d] * C::load1(k2 + d);
            s4[3] += q[d] * C::load1(k3 + d);
        }
        for (int i = 0; i < 4; ++i) scratch[j + i] = s4[i] * scale;
    }
    for (; j < n_keys; ++j) {
        const T* kj = k + j * stride;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t d = 0; d < hd8; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), C::load8(kj + d), acc);
        float s = hsum(acc);
        for (int64_t d = hd8; d < head_dim; ++d) s += q[d] * C::load1(kj + d);
        scratch[j] = s * scale;
    }
    // softmax numerators and their sum
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (j = 0; j + 8 <= n_keys; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(scratch + j));
    float mx = hmax(vmax);
    for (; j < n_keys; ++j) mx = std::max(mx, scratch[j]);
    const __m256 m = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n_keys; j += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(scratch + j), m));
        _mm256_storeu_ps(scratch + j, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum(vsum);
    for (; j < n_keys; ++j) {
        scratch[j] = exp_scalar(scratch[j] - mx);
        sum += scratch[j];
    }
    const float inv = 1.0f / sum;
    // out (head_dim) = sum_j p_j v_j, 64 lanes per pass in 8 independent accumulators
    for (int64_t d0 = 0; d0 < hd8; d0 += 64) {
        const int64_t nv = std::min<int64_t>(64, hd8 - d0) / 8;
        __m256 acc[8];
        for (int64_t c = 0; c < 8; ++c) acc[c] = _mm256_setzero_ps();
        for (int64_t jj = 0; jj < n_keys; ++jj) {
            const __m256 p = _mm256_set1_ps(scratch[jj] * inv);
            const T* vj = v + jj * stride + d0;
            if (nv == 8) {
                for (int c = 0; c < 8; ++c) acc[c] = _mm256_fmadd_ps(p, C::load8(vj + 8 * c), acc[c]);
            } else {
                for (int64_t c = 0; c < nv; ++c) acc[c] = _mm256_fmadd_ps(p, C::load8(vj + 8 * c), acc[c]);
            }
        }
        for (int64_t c = 0; c < nv; ++c) _mm256_storeu_ps(out + d0 + 8 * c, acc[c]);
    }
    for (int64_t d = hd8; d < head_dim; ++d) {
        float acc = 0.0f;
        for (int64_t jj = 0; jj < n_keys; ++jj) acc += scratch[jj] * inv * C::load1(v + jj * stride + d);
        out[d] = acc;
    }
}

void attention(const float* q, const float* k, const float* v, int64_t stride, int64_t n_keys, int64_t head_dim,
               float scale, float* out, float* scratch) {
    attention_impl<F32Cache>(q, k, v, stride, n_keys, head_dim, scale, out, scratch);
}

void attention_f16(const float* q, const uint16_t* k, const uint16_t* v, int64_t stride, int64_t n_keys,
                   int64_t head_dim, float scale, float* out, float* scratch) {
    attention_impl<F16Cache>(q, k, v, stride, n_keys, head_dim, scale, out, scratch);
}


// Flash-attention tiles (kernels/ops.h): keys along the 8 lanes, rows two at a time.
void attn_tile_transpose(const float* k, int64_t head_dim, float* kt) {
    if (head_dim % 8) {
        for (int64_t j = 0; j < kAttnTile; ++j)
            for (int64_t d = 0; d < head_dim; ++d) kt[d * kAttnTile + j] = k[j * head_dim + d];
        return;
    }
    for (int64_t j0 = 0; j0 < kAttnTile; j0 += 8)
        for (int64_t d0 = 0; d0 < head_dim; d0 += 8) {  // one 8x8 block
            __m256 r[8], t[8];
            for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(k + (j0 + i) * head_dim + d0);
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
                r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            for (int i = 0; i < 4; ++i) {
                _mm256_storeu_ps(kt + (d0 + i) * kAttnTile + j0, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
                _mm256_storeu_ps(kt + (d0 + i + 4) * kAttnTile + j0, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
            }
        }
}

namespace {

// Scores of rows r0..r0+NR-1 against keys [c0, c0 + 8 NV): one FMA chain per key over d in order.
// NR x NV accumulators (6 x 2: 12 of the 16 registers, with two key vectors and a broadcast).
template <int NR, int NV>
inline void scores_block(const float* q, int64_t r0, int64_t head_dim, const float* kt, float* s, int64_t c0) {
    __m256 a[NR * NV];  // one flat array (GCC keeps a two-dimensional one in memory)
    _Pragma("GCC unroll 16") for (int i = 0; i < NR * NV; ++i) a[i] = _mm256_setzero_ps();
    const float* qr = q + r0 * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) {
        const float* kd = kt + d * kAttnTile + c0;
        __m256 kv[NV];
        _Pragma("GCC unroll 16") for (int c = 0; c < NV; ++c) kv[c] = _mm256_loadu_ps(kd + 8 * c);
        _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i) {
            const __m256 b = _mm256_broadcast_ss(qr + i * head_dim + d);
            _Pragma("GCC unroll 16") for (int c = 0; c < NV; ++c)
                a[i * NV + c] = _mm256_fmadd_ps(b, kv[c], a[i * NV + c]);
        }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i)
        _Pragma("GCC unroll 16") for (int c = 0; c < NV; ++c)
            _mm256_storeu_ps(s + (r0 + i) * kAttnTile + c0 + 8 * c, a[i * NV + c]);
}

// NR rows against the tile's keys, NV vectors of keys per block: at least 8 accumulators (the FMA
// latency x 2 pipes) whatever the rows, so a task's last 1-3 rows take wider blocks (1 x 64,
// 2 x 32, 3 x 32 keys) instead of running latency-bound at 2-6 chains (a 128-row task ends with 2).
template <int NR, int NV>
inline void scores_rows(const float* q, int64_t r0, int64_t head_dim, const float* kt, float* s) {
    for (int64_t c0 = 0; c0 < kAttnTile; c0 += 8 * NV) scores_block<NR, NV>(q, r0, head_dim, kt, s, c0);
}

}  // namespace

// Every row's scores are one FMA chain per key over d in order, whatever the row blocking.
void attn_tile_scores(const float* q, int64_t n_rows, int64_t head_dim, const float* kt, float* s) {
    static_assert(kAttnTile % 64 == 0, "the blocks below tile 64 keys");
    int64_t r = 0;
    for (; r + 6 <= n_rows; r += 6) scores_rows<6, 2>(q, r, head_dim, kt, s);
    switch (n_rows - r) {
        case 5: scores_rows<5, 2>(q, r, head_dim, kt, s); break;
        case 4: scores_rows<4, 2>(q, r, head_dim, kt, s); break;
        case 3: scores_rows<3, 4>(q, r, head_dim, kt, s); break;
        case 2: scores_rows<2, 4>(q, r, head_dim, kt, s); break;
        case 1: scores_rows<1, 8>(q, r, head_dim, kt, s); break;
        default: break;
    }
}

namespace {

// exp(x - mx) as 2^t, t = x log2(e) - mx log2(e) (one fused multiply-add), t clamped at -127;
// 2^t = 2^n 2^f, n = round(t), f in [-1/2, 1/2], 2^f by its Taylor polynomial of degree 6
// (relative error below 2e-7), 2^n built in the exponent field: n = -127 gives the bits of +0, so
// a masked score (-inf) and anything below 2^-126.5 come out exactly 0, with no compare.
inline __m256 exp_shifted(__m256 x, __m256 mx_log2e) {
    __m256 t = _mm256_fmsub_ps(x, _mm256_set1_ps(1.44269504088896341f), mx_log2e);
    t = _mm256_max_ps(t, _mm256_set1_ps(-127.0f));
    const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 f = _mm256_sub_ps(t, n);
    __m256 p = _mm256_set1_ps(x86_shared::kExp2Taylor6[0]);
#pragma GCC unroll 6
    for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(x86_shared::kExp2Taylor6[i]));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

}  // namespace

// Online softmax of a tile (kernels/ops.h): a row's 8 vectors held in registers through both
// passes; the rescale factor computed only when the row's maximum moves (alpha is exactly 1
// otherwise, as the contract says).
void attn_tile_softmax(float* s, int64_t n_rows, float* m, float* l, float* alpha) {
    for (int64_t r = 0; r < n_rows; ++r) {
        float* sr = s + r * kAttnTile;
        __m256 x[8];
        for (int c = 0; c < 8; ++c) x[c] = _mm256_loadu_ps(sr + 8 * c);
        const __m256 m01 = _mm256_max_ps(x[0], x[1]), m23 = _mm256_max_ps(x[2], x[3]);
        const __m256 m45 = _mm256_max_ps(x[4], x[5]), m67 = _mm256_max_ps(x[6], x[7]);
        const float mx = std::max(m[r], hmax(_mm256_max_ps(_mm256_max_ps(m01, m23), _mm256_max_ps(m45, m67))));
        if (mx == -INFINITY) {
            for (int c = 0; c < 8; ++c) _mm256_storeu_ps(sr + 8 * c, _mm256_setzero_ps());
            alpha[r] = 1.0f;
            continue;
        }
        const __m256 shift = _mm256_set1_ps(mx * 1.44269504088896341f);
        __m256 sum[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int c = 0; c < 8; ++c) {
            const __m256 e = exp_shifted(x[c], shift);
            _mm256_storeu_ps(sr + 8 * c, e);
            sum[c & 1] = _mm256_add_ps(sum[c & 1], e);
        }
        alpha[r] = mx == m[r] ? 1.0f : std::exp(m[r] - mx);
        l[r] = alpha[r] * l[r] + hsum(_mm256_add_ps(sum[0], sum[1]));
        m[r] = mx;
    }
}

namespace {

// Output columns [c0, c0 + 8 NV) of rows r0..r0+NR-1: o = alpha o, then + p_j v_j over j in order.
template <int NR, int NV>
inline void accumulate_block(const float* p, int64_t r0, const float* v, int64_t head_dim, const float* alpha, float* o,
                             int64_t c0) {
    __m256 a[NR * NV];
    _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i) {
        const __m256 al = _mm256_set1_ps(alpha[r0 + i]);
        _Pragma("GCC unroll 16") for (int c = 0; c < NV; ++c)
            a[i * NV + c] = _mm256_mul_ps(al, _mm256_loadu_ps(o + (r0 + i) * head_dim + c0 + 8 * c));
    }
    const float* pr = p + r0 * kAttnTile;
    for (int64_t j = 0; j < kAttnTile; ++j) {
        __m256 vv[NV];
        _Pragma("GCC unroll 16") for (int c = 0; c < NV; ++c) vv[c] = _mm256_loadu_ps(v + j * head_dim + c0 + 8 * c);
        _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i) {
            const __m256 b = _mm256_broadcast_ss(pr + i * kAttnTile + j);
            _Pragma("GCC unroll 16") for (int c = 0; c < NV; ++c)
                a[i * NV + c] = _mm256_fmadd_ps(b, vv[c], a[i * NV + c]);
        }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i)
        _Pragma("GCC unroll 16") for (int c = 0; c < NV; ++c)
            _mm256_storeu_ps(o + (r0 + i) * head_dim + c0 + 8 * c, a[i * NV + c]);
}

// Columns past the last whole vector, one scalar FMA chain each (the same order).
template <class LoadV>
inline void accumulate_tail_columns(const float* p, int64_t r0, int64_t nr, LoadV load_v, int64_t head_dim,
                                    const float* alpha, float* o) {
    for (int64_t i = r0; i < r0 + nr; ++i)
        for (int64_t d = head_dim / 8 * 8; d < head_dim; ++d) {
            float acc = alpha[i] * o[i * head_dim + d];
            for (int64_t j = 0; j < kAttnTile; ++j)
                acc = std::fma(p[i * kAttnTile + j], load_v(j * head_dim + d), acc);
            o[i * head_dim + d] = acc;
        }
}

// Output columns in blocks of 8 NV (the rows' counts as in attn_tile_scores), then 16, then 8,
// then scalar.
template <int NR, int NV = 2>
inline void accumulate_rows(const float* p, int64_t r0, const float* v, int64_t head_dim, const float* alpha,
                            float* o) {
    const int64_t wide = head_dim / (8 * NV) * (8 * NV), pairs = head_dim / 16 * 16, narrow = head_dim / 8 * 8;
    for (int64_t c0 = 0; c0 < wide; c0 += 8 * NV) accumulate_block<NR, NV>(p, r0, v, head_dim, alpha, o, c0);
    for (int64_t c0 = wide; c0 < pairs; c0 += 16) accumulate_block<NR, 2>(p, r0, v, head_dim, alpha, o, c0);
    for (int64_t c0 = pairs; c0 < narrow; c0 += 8) accumulate_block<NR, 1>(p, r0, v, head_dim, alpha, o, c0);
    accumulate_tail_columns(p, r0, NR, [v](int64_t i) { return v[i]; }, head_dim, alpha, o);
}

}  // namespace

void attn_tile_accumulate(const float* p, int64_t n_rows, const float* v, int64_t head_dim, const float* alpha,
                          float* o) {
    int64_t r = 0;
    for (; r + 6 <= n_rows; r += 6) accumulate_rows<6>(p, r, v, head_dim, alpha, o);
    switch (n_rows - r) {
        case 5: accumulate_rows<5>(p, r, v, head_dim, alpha, o); break;
        case 4: accumulate_rows<4>(p, r, v, head_dim, alpha, o); break;
        case 3: accumulate_rows<3, 4>(p, r, v, head_dim, alpha, o); break;
        case 2: accumulate_rows<2, 4>(p, r, v, head_dim, alpha, o); break;
        case 1: accumulate_rows<1, 8>(p, r, v, head_dim, alpha, o); break;
        default: break;
    }
}

namespace {

// The F16 tiles read in place (a decoding step's few rows), widened in registers by vcvtph2ps:
// each element of s or o gets the same FMA chain as in attn_tile_scores / attn_tile_accumulate
// above, so the same bits. Up to 8 rows against one vector (8 keys, or 8 output columns) at a
// time, so every element is widened once per 8 rows. Every line of the next tile is asked for
// along the way (on Zen 3 one line in four left decoding at depth 11% slower than widening each
// tile first with the whole next tile prefetched).
inline __m256 load8_f16(const uint16_t* x) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
}

// Pass `pass` of `passes` over a tile asks for its share of the next tile's lines (a tile is
// 2 head_dim lines: kAttnTile x head_dim halves), spread over the passes rather than in one burst.
inline void prefetch_share(const uint16_t* next, int64_t pass, int64_t passes, int64_t head_dim) {
    if (!next) return;
    const int64_t lines = 2 * head_dim, per = (lines + passes - 1) / passes;
    for (int64_t ln = pass * per; ln < std::min(lines, pass * per + per); ++ln)
        _mm_prefetch(reinterpret_cast<const char*>(next) + 64 * ln, _MM_HINT_T0);
}

template <int NR>
inline void scores_rows_f16(const float* q, int64_t r0, int64_t head_dim, const uint16_t* kt, float* s,
                            const uint16_t* next) {
    for (int64_t c0 = 0; c0 < kAttnTile; c0 += 8) {
        __m256 a[NR];
        _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i) a[i] = _mm256_setzero_ps();
        for (int64_t d = 0; d < head_dim; ++d) {
            const __m256 kv = load8_f16(kt + d * kAttnTile + c0);
            _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i)
                a[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + (r0 + i) * head_dim + d), kv, a[i]);
        }
        prefetch_share(next, c0 / 8, kAttnTile / 8, head_dim);
        _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i) _mm256_storeu_ps(s + (r0 + i) * kAttnTile + c0, a[i]);
    }
}

template <int NR>
inline void accumulate_rows_f16(const float* p, int64_t r0, const uint16_t* v, int64_t head_dim, const float* alpha,
                                float* o, const uint16_t* next) {
    const int64_t narrow = head_dim / 8 * 8;
    for (int64_t c0 = 0; c0 < narrow; c0 += 8) {
        __m256 a[NR];
        _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i)
            a[i] = _mm256_mul_ps(_mm256_set1_ps(alpha[r0 + i]), _mm256_loadu_ps(o + (r0 + i) * head_dim + c0));
        for (int64_t j = 0; j < kAttnTile; ++j) {
            const __m256 vv = load8_f16(v + j * head_dim + c0);
            _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i)
                a[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(p + (r0 + i) * kAttnTile + j), vv, a[i]);
        }
        prefetch_share(next, c0 / 8, std::max<int64_t>(1, narrow / 8), head_dim);
        _Pragma("GCC unroll 16") for (int i = 0; i < NR; ++i) _mm256_storeu_ps(o + (r0 + i) * head_dim + c0, a[i]);
    }
    accumulate_tail_columns(p, r0, NR, [v](int64_t i) { return _cvtsh_ss(v[i]); }, head_dim, alpha, o);
}

template <class F>
inline void rows_by_8(int64_t n_rows, F&& f) {
    int64_t r = 0;
    for (; r + 8 <= n_rows; r += 8) f(std::integral_constant<int, 8>{}, r);
    switch (n_rows - r) {
        case 7: f(std::integral_constant<int, 7>{}, r); break;
        case 6: f(std::integral_constant<int, 6>{}, r); break;
        case 5: f(std::integral_constant<int, 5>{}, r); break;
        case 4: f(std::integral_constant<int, 4>{}, r); break;
        case 3: f(std::integral_constant<int, 3>{}, r); break;
        case 2: f(std::integral_constant<int, 2>{}, r); break;
        case 1: f(std::integral_constant<int, 1>{}, r); break;
        default: break;
    }
}

}  // namespace

// The next tile is asked for during the first row block only.
void attn_tile_scores_f16(const float* q, int64_t n_rows, int64_t head_dim, const uint16_t* kt, float* s,
                          const uint16_t* next) {
    rows_by_8(n_rows, [&](auto nr, int64_t r) {
        scores_rows_f16<decltype(nr)::value>(q, r, head_dim, kt, s, r == 0 ? next : nullptr);
    });
}

void attn_tile_accumulate_f16(const float* p, int64_t n_rows, const uint16_t* v, int64_t head_dim, const float* alpha,
                              float* o, const uint16_t* next) {
    rows_by_8(n_rows, [&](auto nr, int64_t r) {
        accumulate_rows_f16<decltype(nr)::value>(p, r, v, head_dim, alpha, o, r == 0 ? next : nullptr);
    });
}

}  // namespace avx2

void fill_ops_avx2(OpsKernels& k) {
    k.attn_tile_transpose = avx2::attn_tile_transpose;
    k.attn_tile_scores = avx2::attn_tile_scores;
    k.attn_tile_softmax = avx2::attn_tile_softmax;
    k.attn_tile_accumulate = avx2::attn_tile_accumulate;
    k.attn_tile_scores_f16 = avx2::attn_tile_scores_f16;
    k.attn_tile_accumulate_f16 = avx2::attn_tile_accumulate_f16;
    fill_attn_bf16_tiles_avx2(k);
    k.rmsnorm = avx2::rmsnorm;
    k.swiglu = avx2::swiglu;
    k.geglu = avx2::geglu;
    k.add = avx2::add;
    k.attention = avx2::attention;
    k.attention_f16 = avx2::attention_f16;
}

}  // namespace llamix
