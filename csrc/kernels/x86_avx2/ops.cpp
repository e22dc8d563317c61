// AVX2 + FMA transformer ops. Same math as kernels/ref/ops_ref.cpp; exp is a Cephes-style
// polynomial (range reduction by ln 2, degree-6 minimax, |rel err| < 2e-7) instead of libm.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/ops.h"

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

// Every row's scores are one FMA chain per key over d in order, whatever the row blocking.
void attn_tile_scores(const float* q, int64_t n_rows, int64_t head_dim, const float* kt, float* s) {
    for (int64_t c0 = 0; c0 < kAttnTile; c0 += 32) {  // 32 keys = 4 vectors
        int64_t r = 0;
        for (; r + 2 <= n_rows; r += 2) {
            const float* q0 = q + r * head_dim;
            const float* q1 = q0 + head_dim;
            __m256 a[8];
            for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
            for (int64_t d = 0; d < head_dim; ++d) {
                const float* kd = kt + d * kAttnTile + c0;
                const __m256 b0 = _mm256_broadcast_ss(q0 + d), b1 = _mm256_broadcast_ss(q1 + d);
                for (int c = 0; c < 4; ++c) {
                    const __m256 kv = _mm256_loadu_ps(kd + 8 * c);
                    a[c] = _mm256_fmadd_ps(b0, kv, a[c]);
                    a[c + 4] = _mm256_fmadd_ps(b1, kv, a[c + 4]);
                }
            }
            for (int c = 0; c < 4; ++c) {
                _mm256_storeu_ps(s + r * kAttnTile + c0 + 8 * c, a[c]);
                _mm256_storeu_ps(s + (r + 1) * kAttnTile + c0 + 8 * c, a[c + 4]);
            }
        }
        for (; r < n_rows; ++r) {
            __m256 a[4];
            for (int i = 0; i < 4; ++i) a[i] = _mm256_setzero_ps();
            for (int64_t d = 0; d < head_dim; ++d) {
                const __m256 b = _mm256_broadcast_ss(q + r * head_dim + d);
                for (int c = 0; c < 4; ++c) a[c] = _mm256_fmadd_ps(b, _mm256_loadu_ps(kt + d * kAttnTile + c0 + 8 * c), a[c]);
            }
            for (int c = 0; c < 4; ++c) _mm256_storeu_ps(s + r * kAttnTile + c0 + 8 * c, a[c]);
        }
    }
}

void attn_tile_softmax(float* s, int64_t n_rows, float* m, float* l, float* alpha) {
    const __m256 neg_inf = _mm256_set1_ps(-INFINITY);
    for (int64_t r = 0; r < n_rows; ++r) {
        float* sr = s + r * kAttnTile;
        __m256 vmax = _mm256_set1_ps(m[r]);
        for (int64_t j = 0; j < kAttnTile; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(sr + j));
        const float mx = hmax(vmax);
        if (mx == -INFINITY) {
            for (int64_t j = 0; j < kAttnTile; j += 8) _mm256_storeu_ps(sr + j, _mm256_setzero_ps());
            alpha[r] = 1.0f;
            continue;
        }
        const __m256 vmx = _mm256_set1_ps(mx);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < kAttnTile; j += 8) {
            const __m256 x = _mm256_loadu_ps(sr + j);
            const __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(x, neg_inf, _CMP_EQ_OQ), exp_ps(_mm256_sub_ps(x, vmx)));
            _mm256_storeu_ps(sr + j, e);
            sum = _mm256_add_ps(sum, e);
        }
        alpha[r] = std::exp(m[r] - mx);
        l[r] = alpha[r] * l[r] + hsum(sum);
        m[r] = mx;
    }
}

namespace {

// Output columns [c0, c0 + 8 NV) of rows r0 (and r0 + 1 when two): o = alpha o + p . v.
template <int NV, bool Two>
inline void accumulate_block(const float* p, int64_t r0, const float* v, int64_t head_dim, const float* alpha, float* o,
                             int64_t c0) {
    __m256 a[2][NV];
    for (int i = 0; i < (Two ? 2 : 1); ++i) {
        const __m256 al = _mm256_set1_ps(alpha[r0 + i]);
        for (int c = 0; c < NV; ++c) a[i][c] = _mm256_mul_ps(al, _mm256_loadu_ps(o + (r0 + i) * head_dim + c0 + 8 * c));
    }
    for (int64_t j = 0; j < kAttnTile; ++j) {
        const __m256 p0 = _mm256_broadcast_ss(p + r0 * kAttnTile + j);
        const __m256 p1 = Two ? _mm256_broadcast_ss(p + (r0 + 1) * kAttnTile + j) : p0;
        for (int c = 0; c < NV; ++c) {
            const __m256 vv = _mm256_loadu_ps(v + j * head_dim + c0 + 8 * c);
            a[0][c] = _mm256_fmadd_ps(p0, vv, a[0][c]);
            if (Two) a[1][c] = _mm256_fmadd_ps(p1, vv, a[1][c]);
        }
    }
    for (int i = 0; i < (Two ? 2 : 1); ++i)
        for (int c = 0; c < NV; ++c) _mm256_storeu_ps(o + (r0 + i) * head_dim + c0 + 8 * c, a[i][c]);
}

}  // namespace

void attn_tile_accumulate(const float* p, int64_t n_rows, const float* v, int64_t head_dim, const float* alpha,
                          float* o) {
    const int64_t wide = head_dim / 32 * 32, narrow = head_dim / 8 * 8;
    int64_t r = 0;
    auto row_block = [&](auto two) {
        constexpr bool Two = decltype(two)::value;
        for (int64_t c0 = 0; c0 < wide; c0 += 32) accumulate_block<4, Two>(p, r, v, head_dim, alpha, o, c0);
        for (int64_t c0 = wide; c0 < narrow; c0 += 8) accumulate_block<1, Two>(p, r, v, head_dim, alpha, o, c0);
        for (int64_t i = 0; i < (Two ? 2 : 1); ++i)  // columns past the last vector
            for (int64_t d = narrow; d < head_dim; ++d) {
                float acc = alpha[r + i] * o[(r + i) * head_dim + d];
                for (int64_t j = 0; j < kAttnTile; ++j) acc = std::fma(p[(r + i) * kAttnTile + j], v[j * head_dim + d], acc);
                o[(r + i) * head_dim + d] = acc;
            }
    };
    for (; r + 2 <= n_rows; r += 2) row_block(std::true_type{});
    for (; r < n_rows; ++r) row_block(std::false_type{});
}

}  // namespace avx2

void fill_ops_avx2(OpsKernels& k) {
    k.attn_tile_transpose = avx2::attn_tile_transpose;
    k.attn_tile_scores = avx2::attn_tile_scores;
    k.attn_tile_softmax = avx2::attn_tile_softmax;
    k.attn_tile_accumulate = avx2::attn_tile_accumulate;
    fill_attn_bf16_tiles_avx2(k);
    k.rmsnorm = avx2::rmsnorm;
    k.swiglu = avx2::swiglu;
    k.geglu = avx2::geglu;
    k.add = avx2::add;
    k.attention = avx2::attention;
    k.attention_f16 = avx2::attention_f16;
}

}  // namespace llamix
