// AVX2 primitives of nearswap, RAM, SCE and arcee_fusion: 8 floats per step, bit-identical to
// ref/merge_more_ref.cpp (same rounding of every operation, same reduction lanes, the same exp/log
// steps as kernels/merge_math.h); tails go to the reference.
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "kernels/merge_math.h"
#include "kernels/ref/merge_ref.h"
#include "kernels/x86_shared/karcher_lanes.h"
#include "kernels/x86_shared/multislerp_lanes.h"

namespace llamix {
namespace avx2 {

namespace {

namespace mm = merge_math;

inline __m256 abs8(__m256 x) { return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }

// a where mask, else b
inline __m256 select(__m256 mask, __m256 a, __m256 b) { return _mm256_blendv_ps(b, a, mask); }

inline __m256 isnan8(__m256 x) { return _mm256_cmp_ps(x, x, _CMP_UNORD_Q); }

// merge_math::exp_f32, lane by lane
inline __m256 exp8(__m256 x) {
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(mm::kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(k, _mm256_set1_ps(-mm::kLn2Hi), x);
    r = _mm256_fmadd_ps(k, _mm256_set1_ps(-mm::kLn2Lo), r);
    __m256 p = _mm256_set1_ps(mm::kExpP[0]);
    for (int j = 1; j < 6; ++j) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(mm::kExpP[j]));
    const __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(p, r2, r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    // k is clamped only for the bit construction: lanes outside [kExpLo, kExpHi] are replaced below
    const __m256 kc = _mm256_min_ps(_mm256_max_ps(k, _mm256_set1_ps(-126.0f)), _mm256_set1_ps(127.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kc), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    y = select(_mm256_cmp_ps(x, _mm256_set1_ps(mm::kExpLo), _CMP_LT_OQ), _mm256_setzero_ps(), y);
    y = select(_mm256_cmp_ps(x, _mm256_set1_ps(mm::kExpHi), _CMP_GT_OQ), _mm256_set1_ps(INFINITY), y);
    return select(isnan8(x), x, y);
}

// merge_math::log_f32, lane by lane
inline __m256 log8(__m256 x) {
    const __m256i bits = _mm256_castps_si256(x);
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(126));
    __m256 m = _mm256_castsi256_ps(
        _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f000000)));
    const __m256 small = _mm256_cmp_ps(m, _mm256_set1_ps(mm::kSqrtHalf), _CMP_LT_OQ);
    e = _mm256_add_epi32(e, _mm256_castps_si256(small));  // all ones: e - 1
    m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(small, m)), _mm256_set1_ps(1.0f));
    const __m256 z = _mm256_mul_ps(m, m);
    __m256 y = _mm256_set1_ps(mm::kLogP[0]);
    for (int j = 1; j < 9; ++j) y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(mm::kLogP[j]));
    y = _mm256_mul_ps(y, m);
    y = _mm256_mul_ps(y, z);
    const __m256 fe = _mm256_cvtepi32_ps(e);
    y = _mm256_fmadd_ps(fe, _mm256_set1_ps(mm::kLn2Lo), y);
    y = _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), y);
    __m256 r = _mm256_add_ps(m, y);
    r = _mm256_fmadd_ps(fe, _mm256_set1_ps(mm::kLn2Hi), r);
    const __m256 zero = _mm256_setzero_ps();
    r = select(_mm256_cmp_ps(x, _mm256_set1_ps(INFINITY), _CMP_EQ_OQ), _mm256_set1_ps(INFINITY), r);
    r = select(_mm256_cmp_ps(x, zero, _CMP_EQ_OQ), _mm256_set1_ps(-INFINITY), r);
    r = select(_mm256_cmp_ps(x, zero, _CMP_LT_OQ), _mm256_castsi256_ps(_mm256_set1_epi32(int(mm::kQuietNan))), r);
    return select(isnan8(x), x, r);
}

// -1, 0, +1, or the NaN itself (the reference's sign_of)
inline __m256 sign8(__m256 x) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 pos = _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_GT_OQ), _mm256_set1_ps(1.0f));
    const __m256 neg = _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_LT_OQ), _mm256_set1_ps(-1.0f));
    return select(isnan8(x), x, _mm256_or_ps(pos, neg));
}

// 8 floats into the 8 double lanes (lane j gets element j)
inline void add_lanes(__m256d& lo, __m256d& hi, __m256 v) {
    lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

inline void store_lanes(__m256d lo, __m256d hi, double l[8]) {
    _mm256_storeu_pd(l, lo);
    _mm256_storeu_pd(l + 4, hi);
}

}  // namespace

void nearswap(const float* a, const float* b, float t, float* out, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), tiny = _mm256_set1_ps(1e-6f), zero = _mm256_setzero_ps(), vt = _mm256_set1_ps(t);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
        const __m256 d = abs8(_mm256_sub_ps(va, vb));
        const __m256 c = _mm256_max_ps(tiny, d);  // the second operand when NaN: NaN stays
        __m256 w = _mm256_mul_ps(_mm256_div_ps(one, c), vt);
        w = _mm256_max_ps(zero, w);
        w = _mm256_min_ps(one, w);
        const __m256 pb = _mm256_mul_ps(w, vb);
        const __m256 pa = _mm256_mul_ps(_mm256_sub_ps(one, w), va);
        _mm256_storeu_ps(out + i, _mm256_add_ps(pb, pa));
    }
    if (i < n) ref::nearswap(a + i, b + i, t, out + i, n - i);
}

namespace {

// Per lane: the number of models with |d| > eps, as an integer vector.
inline __m256i nonzero_count(const float* const* d, int n_models, __m256 veps, int64_t i) {
    __m256i c = _mm256_setzero_si256();
    for (int m = 0; m < n_models; ++m) {
        const __m256 nz = _mm256_cmp_ps(abs8(_mm256_loadu_ps(d[m] + i)), veps, _CMP_GT_OQ);
        c = _mm256_sub_epi32(c, _mm256_castps_si256(nz));  // all ones = -1
    }
    return c;
}

}  // namespace

void ram(const float* const* d, const float* lambda, int n_models, float eps, float* out, int64_t n) {
    const __m256 veps = _mm256_set1_ps(eps), one = _mm256_set1_ps(1.0f);
    const __m256i ione = _mm256_set1_epi32(1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i c = nonzero_count(d, n_models, veps, i);
        const __m256 uniq = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(c, ione)), one);
        const __m256 over = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(c, ione)), one);
        const __m256 cnt = _mm256_cvtepi32_ps(_mm256_max_epi32(c, ione));
        __m256 acc = _mm256_setzero_ps();
        for (int m = 0; m < n_models; ++m) {
            const __m256 v = _mm256_loadu_ps(d[m] + i);
            const __m256 z = _mm256_mul_ps(v, _mm256_and_ps(_mm256_cmp_ps(abs8(v), veps, _CMP_GT_OQ), one));
            const __m256 u = _mm256_mul_ps(_mm256_mul_ps(z, uniq), _mm256_set1_ps(lambda[m]));
            const __m256 o = _mm256_div_ps(_mm256_mul_ps(z, over), cnt);
            const __m256 term = _mm256_add_ps(u, o);
            acc = m == 0 ? term : _mm256_add_ps(acc, term);
        }
        _mm256_storeu_ps(out + i, acc);
    }
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::ram(tail.data(), lambda, n_models, eps, out + i, n - i);
    }
}

void ram_counts(const float* const* d, int n_models, float eps, int64_t* shared, int64_t* unique, int64_t n) {
    const __m256 veps = _mm256_set1_ps(eps);
    const __m256i ione = _mm256_set1_epi32(1);
    std::vector<int64_t> sh(static_cast<size_t>(n_models), 0), un(static_cast<size_t>(n_models), 0);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i c = nonzero_count(d, n_models, veps, i);
        const int uniq = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(c, ione)));
        const int over = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(c, ione)));
        for (int m = 0; m < n_models; ++m) {
            const int nz = _mm256_movemask_ps(_mm256_cmp_ps(abs8(_mm256_loadu_ps(d[m] + i)), veps, _CMP_GT_OQ));
            sh[m] += __builtin_popcount(unsigned(nz & over));
            un[m] += __builtin_popcount(unsigned(nz & uniq));
        }
    }
    for (int m = 0; m < n_models; ++m) shared[m] += sh[m], unique[m] += un[m];
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::ram_counts(tail.data(), n_models, eps, shared, unique, n - i);
    }
}

void variance(const float* const* d, int n_models, float* out, int64_t n) {
    const __m256d inv_n = _mm256_set1_pd(double(n_models));
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d s = _mm256_cvtps_pd(_mm_loadu_ps(d[0] + i));
        for (int m = 1; m < n_models; ++m) s = _mm256_add_pd(s, _mm256_cvtps_pd(_mm_loadu_ps(d[m] + i)));
        const __m256d mean = _mm256_div_pd(s, inv_n);
        __m256d q = _mm256_setzero_pd();
        for (int m = 0; m < n_models; ++m) {
            const __m256d e = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(d[m] + i)), mean);
            const __m256d e2 = _mm256_mul_pd(e, e);
            q = m == 0 ? e2 : _mm256_add_pd(q, e2);
        }
        _mm_storeu_ps(out + i, _mm256_cvtpd_ps(_mm256_div_pd(q, inv_n)));
    }
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::variance(tail.data(), n_models, out + i, n - i);
    }
}

void sce(const float* const* d, const float* w, int n_models, float* out, int64_t n) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f);
    const __m256 tiny = _mm256_set1_ps(1e-6f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vote = _mm256_loadu_ps(d[0] + i);
        for (int m = 1; m < n_models; ++m) vote = _mm256_add_ps(vote, _mm256_loadu_ps(d[m] + i));
        const __m256 sigma = select(_mm256_cmp_ps(vote, zero, _CMP_GE_OQ), one, minus_one);
        __m256 acc = zero, den = zero;
        for (int m = 0; m < n_models; ++m) {
            const __m256 v = _mm256_loadu_ps(d[m] + i);
            const __m256 agree = _mm256_and_ps(_mm256_cmp_ps(sign8(v), sigma, _CMP_EQ_OQ), one);
            const __m256 e = _mm256_mul_ps(_mm256_set1_ps(w[m]), agree);
            const __m256 term = _mm256_mul_ps(v, e);
            acc = m == 0 ? term : _mm256_add_ps(acc, term);
            den = m == 0 ? e : _mm256_add_ps(den, e);
        }
        _mm256_storeu_ps(out + i, _mm256_div_ps(acc, _mm256_max_ps(tiny, den)));
    }
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::sce(tail.data(), w, n_models, out + i, n - i);
    }
}

float max(const float* x, int64_t n) {
    __m256 acc = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_max_ps(_mm256_loadu_ps(x + i), acc);  // NaN lanes keep acc
    float l[8];
    _mm256_storeu_ps(l, acc);
    float m = ref::max(x + i, n - i);
    for (int j = 0; j < 8; ++j)
        if (l[j] > m) m = l[j];
    return m;
}

double exp_sum(const float* x, float m, float* e, int64_t n) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256d lo = _mm256_setzero_pd(), hi = lo;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(e + i, v);
        add_lanes(lo, hi, v);
    }
    double l[8];
    store_lanes(lo, hi, l);
    for (; i < n; ++i) {
        e[i] = merge_math::exp_f32(x[i] - m);
        l[i % 8] += double(e[i]);
    }
    return combine_lanes(l);
}

double kl_sum(const float* ex, float sx, const float* ey, float sy, float eps, int64_t n) {
    const __m256 vsx = _mm256_set1_ps(sx), vsy = _mm256_set1_ps(sy), veps = _mm256_set1_ps(eps);
    __m256d lo = _mm256_setzero_pd(), hi = lo;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 p = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(ex + i), vsx), veps);
        const __m256 q = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(ey + i), vsy), veps);
        add_lanes(lo, hi, _mm256_mul_ps(p, log8(_mm256_div_ps(p, q))));
    }
    double l[8];
    store_lanes(lo, hi, l);
    for (; i < n; ++i) {
        const float p = ex[i] * sx + eps;
        const float q = ey[i] * sy + eps;
        l[i % 8] += double(p * merge_math::log_f32(p / q));
    }
    return combine_lanes(l);
}

void abs_scale(float* x, float s, int64_t n) {
    const __m256 vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(abs8(_mm256_loadu_ps(x + i)), vs));
    if (i < n) ref::abs_scale(x + i, s, n - i);
}

void keep_ge(float* x, const float* key, float th, int64_t n) {
    const __m256 vth = _mm256_set1_ps(th), one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 keep = _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(key + i), vth, _CMP_GE_OQ), one);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), keep));
    }
    if (i < n) ref::keep_ge(x + i, key + i, th, n - i);
}

void mul(float* out, const float* a, const float* b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i < n) ref::mul(out + i, a + i, b + i, n - i);
}

void sq_lanes8(float* lanes, const float* x, int64_t n) {
    __m256 acc = _mm256_loadu_ps(lanes);
    for (int64_t i = 0; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_add_ps(acc, _mm256_mul_ps(v, v));
    }
    _mm256_storeu_ps(lanes, acc);
}

void sum_groups32(float* acc, const float* x, int64_t groups) {
    __m256 a0 = _mm256_loadu_ps(acc), a1 = _mm256_loadu_ps(acc + 8), a2 = _mm256_loadu_ps(acc + 16),
           a3 = _mm256_loadu_ps(acc + 24);
    for (int64_t g = 0; g < groups; ++g) {
        const float* p = x + g * 32;
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + 24));
    }
    _mm256_storeu_ps(acc, a0);
    _mm256_storeu_ps(acc + 8, a1);
    _mm256_storeu_ps(acc + 16, a2);
    _mm256_storeu_ps(acc + 24, a3);
}

// 8 floats of an F32 / F16 / BF16 array (x86::multislerp_lanes's lane type)
struct Lanes8 {
    using V = __m256;
    static constexpr int kWidth = 8;
    static V load(const void* p, QType type, int64_t i) {
        const auto* h = static_cast<const uint16_t*>(p) + i;
        switch (type) {
            case QType::F16: return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h)));
            case QType::BF16:
                return _mm256_castsi256_ps(
                    _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h))), 16));
            default: return _mm256_loadu_ps(static_cast<const float*>(p) + i);
        }
    }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V set(float x) { return _mm256_set1_ps(x); }
    static V fmsub(V a, V b, V c) { return _mm256_fmsub_ps(a, b, c); }
    static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
    // |v|'s bits as unsigned integers, their lane-wise min and max, and whether every lane of lo
    // is >= a and every lane of hi <= b (a, b < 2^31)
    using I = __m256i;
    static I abs_bits(V v) { return _mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff)); }
    static I umin(I a, I b) { return _mm256_min_epu32(a, b); }
    static I umax(I a, I b) { return _mm256_max_epu32(a, b); }
    static bool inside(I lo, I hi, uint32_t a, uint32_t b) {
        const I out = _mm256_or_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(int32_t(a)), lo),
                                      _mm256_cmpgt_epi32(hi, _mm256_set1_epi32(int32_t(b))));
        return _mm256_testz_si256(out, out) != 0;
    }
};

void multislerp(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t n) {
    x86::multislerp_lanes<Lanes8>(a, stage, out, n);
}

// One 8-lane chain: its add is the loop's only dependency across iterations (3-4 cycles per 8
// elements), so a call is bound by reading x and base, not by the chain.
template <bool kBF16, bool kBase>
void delta_sq_loop(float* lanes, const void* x, QType tx, const void* base, QType tb, int64_t n) {
    if (kBF16) tx = tb = QType::BF16;  // a constant, so the loads' type switch folds away
    __m256 acc = _mm256_loadu_ps(lanes);
    for (int64_t i = 0; i + 8 <= n; i += 8) {
        __m256 d = Lanes8::load(x, tx, i);
        if (kBase) d = _mm256_sub_ps(d, Lanes8::load(base, tb, i));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(d, d));
    }
    _mm256_storeu_ps(lanes, acc);
}

void delta_sq_lanes8(float* lanes, const void* x, QType tx, const void* base, QType tb, int64_t n) {
    const bool bf16 = tx == QType::BF16 && (!base || tb == QType::BF16);
    if (base && bf16) return delta_sq_loop<true, true>(lanes, x, tx, base, tb, n);
    if (base) return delta_sq_loop<false, true>(lanes, x, tx, base, tb, n);
    if (bf16) return delta_sq_loop<true, false>(lanes, x, tx, base, tb, n);
    delta_sq_loop<false, false>(lanes, x, tx, base, tb, n);
}

bool karcher_step(const KarcherArgs& a, float* m, int64_t off, int64_t n) { return x86::karcher_lanes<Lanes8>(a, m, off, n); }

float karcher_recip(float d, QType t) { return x86::karcher_recip_check<Lanes8>(d, t); }

}  // namespace avx2

void fill_merge_more_avx2(MergeKernels& k) {
    k.karcher_step = avx2::karcher_step;
    k.karcher_recip = avx2::karcher_recip;
    k.nearswap = avx2::nearswap;
    k.ram = avx2::ram;
    k.ram_counts = avx2::ram_counts;
    k.variance = avx2::variance;
    k.sce = avx2::sce;
    k.max = avx2::max;
    k.exp_sum = avx2::exp_sum;
    k.kl_sum = avx2::kl_sum;
    k.abs_scale = avx2::abs_scale;
    k.keep_ge = avx2::keep_ge;
    k.mul = avx2::mul;
    k.sq_lanes8 = avx2::sq_lanes8;
    k.delta_sq_lanes8 = avx2::delta_sq_lanes8;
    k.sum_groups32 = avx2::sum_groups32;
    k.multislerp = avx2::multislerp;
}

}  // namespace llamix
