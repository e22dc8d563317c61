// AVX-512 primitives of nearswap, RAM, SCE and arcee_fusion: 16 floats per step with mask
// registers, bit-identical to ref/merge_more_ref.cpp (same rounding of every operation, same
// reduction lanes, the exp/log steps of kernels/merge_math.h); tails go to the reference.
// Primitives not listed here come from the AVX2 table (variance, ram_counts, and the 8-lane
// torch-order reductions sq_lanes8 and sum_groups32, whose lane structure is 8 floats wide).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // see merge.cpp
#endif
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "kernels/merge_math.h"
#include "kernels/ref/merge_ref.h"
#include "kernels/x86_shared/karcher_lanes.h"
#include "kernels/x86_shared/multislerp_lanes.h"

namespace llamix {
namespace avx512 {

namespace {

namespace mm = merge_math;

inline __m512 abs16(__m512 x) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff))); }

inline __mmask16 isnan16(__m512 x) { return _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q); }

// merge_math::exp_f32, lane by lane
inline __m512 exp16(__m512 x) {
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(mm::kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fmadd_ps(k, _mm512_set1_ps(-mm::kLn2Hi), x);
    r = _mm512_fmadd_ps(k, _mm512_set1_ps(-mm::kLn2Lo), r);
    __m512 p = _mm512_set1_ps(mm::kExpP[0]);
    for (int j = 1; j < 6; ++j) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(mm::kExpP[j]));
    const __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(p, r2, r);
    y = _mm512_add_ps(y, _mm512_set1_ps(1.0f));
    const __m512 kc = _mm512_min_ps(_mm512_max_ps(k, _mm512_set1_ps(-126.0f)), _mm512_set1_ps(127.0f));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(kc), _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(e));
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(mm::kExpLo), _CMP_LT_OQ), _mm512_setzero_ps());
    y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, _mm512_set1_ps(mm::kExpHi), _CMP_GT_OQ), _mm512_set1_ps(INFINITY));
    return _mm512_mask_mov_ps(y, isnan16(x), x);
}

// merge_math::log_f32, lane by lane
inline __m512 log16(__m512 x) {
    const __m512i bits = _mm512_castps_si512(x);
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(126));
    __m512 m = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x3f000000)));
    const __mmask16 small = _mm512_cmp_ps_mask(m, _mm512_set1_ps(mm::kSqrtHalf), _CMP_LT_OQ);
    e = _mm512_mask_sub_epi32(e, small, e, _mm512_set1_epi32(1));
    m = _mm512_sub_ps(_mm512_mask_add_ps(m, small, m, m), _mm512_set1_ps(1.0f));
    const __m512 z = _mm512_mul_ps(m, m);
    __m512 y = _mm512_set1_ps(mm::kLogP[0]);
    for (int j = 1; j < 9; ++j) y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(mm::kLogP[j]));
    y = _mm512_mul_ps(y, m);
    y = _mm512_mul_ps(y, z);
    const __m512 fe = _mm512_cvtepi32_ps(e);
    y = _mm512_fmadd_ps(fe, _mm512_set1_ps(mm::kLn2Lo), y);
    y = _mm512_fmadd_ps(z, _mm512_set1_ps(-0.5f), y);
    __m512 r = _mm512_add_ps(m, y);
    r = _mm512_fmadd_ps(fe, _mm512_set1_ps(mm::kLn2Hi), r);
    const __m512 zero = _mm512_setzero_ps();
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), _mm512_set1_ps(INFINITY));
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, zero, _CMP_EQ_OQ), _mm512_set1_ps(-INFINITY));
    r = _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ),
                           _mm512_castsi512_ps(_mm512_set1_epi32(int(mm::kQuietNan))));
    return _mm512_mask_mov_ps(r, isnan16(x), x);
}

// -1, 0, +1, or the NaN itself (the reference's sign_of)
inline __m512 sign16(__m512 x) {
    const __m512 zero = _mm512_setzero_ps();
    __m512 s = _mm512_mask_mov_ps(zero, _mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), _mm512_set1_ps(1.0f));
    s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), _mm512_set1_ps(-1.0f));
    return _mm512_mask_mov_ps(s, isnan16(x), x);
}

// elements 0..7 then 8..15 of v into the 8 double lanes, in that order (the reference's lane order)
inline __m512d add_lanes(__m512d acc, __m512 v) {
    const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return _mm512_add_pd(_mm512_add_pd(acc, lo), hi);
}

inline __m512 mask_one(__mmask16 k) { return _mm512_maskz_mov_ps(k, _mm512_set1_ps(1.0f)); }

}  // namespace

void nearswap(const float* a, const float* b, float t, float* out, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), tiny = _mm512_set1_ps(1e-6f), zero = _mm512_setzero_ps(), vt = _mm512_set1_ps(t);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 va = _mm512_loadu_ps(a + i), vb = _mm512_loadu_ps(b + i);
        const __m512 d = abs16(_mm512_sub_ps(va, vb));
        const __m512 c = _mm512_max_ps(tiny, d);  // the second operand when NaN: NaN stays
        __m512 w = _mm512_mul_ps(_mm512_div_ps(one, c), vt);
        w = _mm512_max_ps(zero, w);
        w = _mm512_min_ps(one, w);
        const __m512 pb = _mm512_mul_ps(w, vb);
        const __m512 pa = _mm512_mul_ps(_mm512_sub_ps(one, w), va);
        _mm512_storeu_ps(out + i, _mm512_add_ps(pb, pa));
    }
    if (i < n) ref::nearswap(a + i, b + i, t, out + i, n - i);
}

void ram(const float* const* d, const float* lambda, int n_models, float eps, float* out, int64_t n) {
    const __m512 veps = _mm512_set1_ps(eps);
    const __m512i ione = _mm512_set1_epi32(1);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i c = _mm512_setzero_si512();
        for (int m = 0; m < n_models; ++m)
            c = _mm512_mask_add_epi32(c, _mm512_cmp_ps_mask(abs16(_mm512_loadu_ps(d[m] + i)), veps, _CMP_GT_OQ), c, ione);
        const __m512 uniq = mask_one(_mm512_cmpeq_epi32_mask(c, ione));
        const __m512 over = mask_one(_mm512_cmpgt_epi32_mask(c, ione));
        const __m512 cnt = _mm512_cvtepi32_ps(_mm512_max_epi32(c, ione));
        __m512 acc = _mm512_setzero_ps();
        for (int m = 0; m < n_models; ++m) {
            const __m512 v = _mm512_loadu_ps(d[m] + i);
            const __m512 z = _mm512_mul_ps(v, mask_one(_mm512_cmp_ps_mask(abs16(v), veps, _CMP_GT_OQ)));
            const __m512 u = _mm512_mul_ps(_mm512_mul_ps(z, uniq), _mm512_set1_ps(lambda[m]));
            const __m512 o = _mm512_div_ps(_mm512_mul_ps(z, over), cnt);
            const __m512 term = _mm512_add_ps(u, o);
            acc = m == 0 ? term : _mm512_add_ps(acc, term);
        }
        _mm512_storeu_ps(out + i, acc);
    }
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::ram(tail.data(), lambda, n_models, eps, out + i, n - i);
    }
}

void sce(const float* const* d, const float* w, int n_models, float* out, int64_t n) {
    const __m512 zero = _mm512_setzero_ps(), tiny = _mm512_set1_ps(1e-6f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 vote = _mm512_loadu_ps(d[0] + i);
        for (int m = 1; m < n_models; ++m) vote = _mm512_add_ps(vote, _mm512_loadu_ps(d[m] + i));
        const __m512 sigma = _mm512_mask_mov_ps(_mm512_set1_ps(-1.0f), _mm512_cmp_ps_mask(vote, zero, _CMP_GE_OQ),
                                                _mm512_set1_ps(1.0f));
        __m512 acc = zero, den = zero;
        for (int m = 0; m < n_models; ++m) {
            const __m512 v = _mm512_loadu_ps(d[m] + i);
            const __m512 agree = mask_one(_mm512_cmp_ps_mask(sign16(v), sigma, _CMP_EQ_OQ));
            const __m512 e = _mm512_mul_ps(_mm512_set1_ps(w[m]), agree);
            const __m512 term = _mm512_mul_ps(v, e);
            acc = m == 0 ? term : _mm512_add_ps(acc, term);
            den = m == 0 ? e : _mm512_add_ps(den, e);
        }
        _mm512_storeu_ps(out + i, _mm512_div_ps(acc, _mm512_max_ps(tiny, den)));
    }
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::sce(tail.data(), w, n_models, out + i, n - i);
    }
}

float max(const float* x, int64_t n) {
    __m512 acc = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) acc = _mm512_max_ps(_mm512_loadu_ps(x + i), acc);  // NaN lanes keep acc
    float l[16];
    _mm512_storeu_ps(l, acc);
    float m = ref::max(x + i, n - i);
    for (int j = 0; j < 16; ++j)
        if (l[j] > m) m = l[j];
    return m;
}

double exp_sum(const float* x, float m, float* e, int64_t n) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512d acc = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(e + i, v);
        acc = add_lanes(acc, v);
    }
    double l[8];
    _mm512_storeu_pd(l, acc);
    for (; i < n; ++i) {
        e[i] = merge_math::exp_f32(x[i] - m);
        l[i % 8] += double(e[i]);
    }
    return combine_lanes(l);
}

double kl_sum(const float* ex, float sx, const float* ey, float sy, float eps, int64_t n) {
    const __m512 vsx = _mm512_set1_ps(sx), vsy = _mm512_set1_ps(sy), veps = _mm512_set1_ps(eps);
    __m512d acc = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 p = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(ex + i), vsx), veps);
        const __m512 q = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(ey + i), vsy), veps);
        acc = add_lanes(acc, _mm512_mul_ps(p, log16(_mm512_div_ps(p, q))));
    }
    double l[8];
    _mm512_storeu_pd(l, acc);
    for (; i < n; ++i) {
        const float p = ex[i] * sx + eps;
        const float q = ey[i] * sy + eps;
        l[i % 8] += double(p * merge_math::log_f32(p / q));
    }
    return combine_lanes(l);
}

void abs_scale(float* x, float s, int64_t n) {
    const __m512 vs = _mm512_set1_ps(s);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(abs16(_mm512_loadu_ps(x + i)), vs));
    if (i < n) ref::abs_scale(x + i, s, n - i);
}

void keep_ge(float* x, const float* key, float th, int64_t n) {
    const __m512 vth = _mm512_set1_ps(th);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 keep = mask_one(_mm512_cmp_ps_mask(_mm512_loadu_ps(key + i), vth, _CMP_GE_OQ));
        _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), keep));
    }
    if (i < n) ref::keep_ge(x + i, key + i, th, n - i);
}

void mul(float* out, const float* a, const float* b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) ref::mul(out + i, a + i, b + i, n - i);
}

// 16 floats of an F32 / F16 / BF16 array (x86::multislerp_lanes's lane type)
struct Lanes16 {
    using V = __m512;
    static constexpr int kWidth = 16;
    static V load(const void* p, QType type, int64_t i) {
        const auto* h = static_cast<const uint16_t*>(p) + i;
        switch (type) {
            case QType::F16: return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h)));
            case QType::BF16:
                return _mm512_castsi512_ps(
                    _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h))), 16));
            default: return _mm512_loadu_ps(static_cast<const float*>(p) + i);
        }
    }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V set(float x) { return _mm512_set1_ps(x); }
    static V fmsub(V a, V b, V c) { return _mm512_fmsub_ps(a, b, c); }
    static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
    // |v|'s bits as unsigned integers, their lane-wise min and max, and whether every lane of lo
    // is >= a and every lane of hi <= b
    using I = __m512i;
    static I abs_bits(V v) { return _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)); }
    static I umin(I a, I b) { return _mm512_min_epu32(a, b); }
    static I umax(I a, I b) { return _mm512_max_epu32(a, b); }
    static bool inside(I lo, I hi, uint32_t a, uint32_t b) {
        return (_mm512_cmplt_epu32_mask(lo, _mm512_set1_epi32(int32_t(a))) |
                _mm512_cmpgt_epu32_mask(hi, _mm512_set1_epi32(int32_t(b)))) == 0;
    }
};

void multislerp(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t n) {
    x86::multislerp_lanes<Lanes16>(a, stage, out, n);
}

bool karcher_step(const KarcherArgs& a, float* m, int64_t off, int64_t n) { return x86::karcher_lanes<Lanes16>(a, m, off, n); }

float karcher_recip(float d, QType t) { return x86::karcher_recip_check<Lanes16>(d, t); }

}  // namespace avx512

void fill_merge_more_avx512(MergeKernels& k) {
    k.karcher_step = avx512::karcher_step;
    k.karcher_recip = avx512::karcher_recip;
    k.nearswap = avx512::nearswap;
    k.ram = avx512::ram;
    k.sce = avx512::sce;
    k.max = avx512::max;
    k.exp_sum = avx512::exp_sum;
    k.kl_sum = avx512::kl_sum;
    k.abs_scale = avx512::abs_scale;
    k.keep_ge = avx512::keep_ge;
    k.mul = avx512::mul;
    k.multislerp = avx512::multislerp;
}

}  // namespace llamix
