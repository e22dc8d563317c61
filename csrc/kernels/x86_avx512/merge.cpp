// AVX-512 merge primitives: 16 floats per step with mask registers, bit-identical to
// ref/merge_ref.cpp (same rounding of every operation, same reduction lanes); tails go to the
// reference. Primitives not listed here come from the AVX2 table.
// GCC 12 reports the _mm512_undefined_* pass-through operands inside the unmasked conversion
// intrinsics (cvtps_pd, cvtph_ps, extractf64x4, ...) as maybe-uninitialized once they are inlined.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "kernels/ref/merge_ref.h"

namespace llamix {
namespace avx512 {

namespace {

inline __m512 load16(const void* src, QType type, int64_t i) {
    switch (type) {
        case QType::F16:
            return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i)));
        case QType::BF16: {
            const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(src) + i));
            return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        }
        default: return _mm512_loadu_ps(static_cast<const float*>(src) + i);
    }
}

// float32 -> bfloat16, round to nearest even, NaN kept quiet (as fp32_to_bf16)
inline __m256i to_bf16(__m512 v) {
    const __m512i x = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    const __mmask16 is_nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, is_nan, _mm512_or_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40)));
    return _mm512_cvtepi32_epi16(r);
}

inline __mmask16 mask16(const uint8_t* mask, int64_t i) {
    return __mmask16(mask[i >> 3] | (unsigned(mask[(i >> 3) + 1]) << 8));
}

inline __m512i fmix32(__m512i h) {
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32(int(0x85ebca6bu)));
    h = _mm512_xor_si512(h, _mm512_srli_epi32(h, 13));
    h = _mm512_mullo_epi32(h, _mm512_set1_epi32(int(0xc2b2ae35u)));
    return _mm512_xor_si512(h, _mm512_srli_epi32(h, 16));
}

// -1, 0, +1, or the NaN itself (the reference's sign_of)
inline __m512 sign16(__m512 x) {
    const __m512 zero = _mm512_setzero_ps();
    __m512 s = _mm512_mask_mov_ps(zero, _mm512_cmp_ps_mask(x, zero, _CMP_GT_OQ), _mm512_set1_ps(1.0f));
    s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), _mm512_set1_ps(-1.0f));
    return _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

}  // namespace

void load(const void* src, QType type, float* dst, int64_t n) {
    if (type == QType::F32) return ref::load(src, type, dst, n);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load16(src, type, i));
    if (i < n) ref::load(static_cast<const uint16_t*>(src) + i, type, dst + i, n - i);
}

void store(const float* src, void* dst, QType type, int64_t n) {
    int64_t i = 0;
    if (type == QType::F16) {
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(dst) + i),
                                _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else if (type == QType::BF16) {
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(static_cast<uint16_t*>(dst) + i), to_bf16(_mm512_loadu_ps(src + i)));
    } else {
        return ref::store(src, dst, type, n);
    }
    if (i < n) ref::store(src + i, static_cast<uint16_t*>(dst) + i, type, n - i);
}

void fma_acc(float* acc, const float* x, float w, int64_t n) {
    const __m512 vw = _mm512_set1_ps(w);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(_mm512_loadu_ps(x + i), vw, _mm512_loadu_ps(acc + i)));
    if (i < n) ref::fma_acc(acc + i, x + i, w, n - i);
}

void task_sum(float* out, const void* base, QType tb, const void* const* x, const QType* type, const float* w, int k,
              float d, float lambda, int64_t n) {
    const __m512 vd = _mm512_set1_ps(d), vl = _mm512_set1_ps(lambda);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 b = load16(base, tb, i);
        __m512 acc = _mm512_mul_ps(_mm512_sub_ps(load16(x[0], type[0], i), b), _mm512_set1_ps(w[0]));
        for (int m = 1; m < k; ++m)
            acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_sub_ps(load16(x[m], type[m], i), b), _mm512_set1_ps(w[m])));
        if (d != 1.0f) acc = _mm512_div_ps(acc, vd);
        if (lambda != 1.0f) acc = _mm512_mul_ps(acc, vl);
        _mm512_storeu_ps(out + i, _mm512_add_ps(acc, b));
    }
    ref::task_sum_from(out, base, tb, x, type, w, k, d, lambda, i, n);
}

void stock_mix(float* out, const void* base, QType tb, const void* const* x, const QType* type, int k, float ca,
               float cb, int64_t n) {
    const __m512 vk = _mm512_set1_ps(float(k)), va = _mm512_set1_ps(ca), vb = _mm512_set1_ps(cb);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 acc = load16(x[0], type[0], i);
        for (int m = 1; m < k; ++m) acc = _mm512_add_ps(acc, load16(x[m], type[m], i));
        acc = _mm512_div_ps(acc, vk);
        _mm512_storeu_ps(out + i, _mm512_add_ps(_mm512_mul_ps(va, acc), _mm512_mul_ps(vb, load16(base, tb, i))));
    }
    ref::stock_mix_from(out, base, tb, x, type, k, ca, cb, i, n);
}

// weighted_sum of K bfloat16 inputs: the arrays and weights in locals (read through x and w, the
// compiler would load them again after every store), no type switch in the loop
template <int K, bool kDivide>
int64_t weighted_sum_bf16(float* out, const void* const* x, const float* w, float d, int64_t n) {
    const uint16_t* p[K];
    __m512 vw[K];
    for (int m = 0; m < K; ++m) p[m] = static_cast<const uint16_t*>(x[m]), vw[m] = _mm512_set1_ps(w[m]);
    const __m512 vd = _mm512_set1_ps(d);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int m = 0; m < K; ++m) acc = _mm512_fmadd_ps(load16(p[m], QType::BF16, i), vw[m], acc);
        _mm512_storeu_ps(out + i, kDivide ? _mm512_div_ps(acc, vd) : acc);
    }
    return i;
}

void weighted_sum(float* out, const void* const* x, const QType* type, const float* w, int k, float d, int64_t n) {
    bool bf16 = true;
    for (int m = 0; m < k; ++m) bf16 = bf16 && type[m] == QType::BF16;
    if (bf16 && (k == 2 || k == 3)) {
        int64_t i;
        if (k == 2) i = d != 1.0f ? weighted_sum_bf16<2, true>(out, x, w, d, n) : weighted_sum_bf16<2, false>(out, x, w, d, n);
        else i = d != 1.0f ? weighted_sum_bf16<3, true>(out, x, w, d, n) : weighted_sum_bf16<3, false>(out, x, w, d, n);
        return ref::weighted_sum_from(out, x, type, w, k, d, i, n);
    }
    const __m512 vd = _mm512_set1_ps(d);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (int m = 0; m < k; ++m) acc = _mm512_fmadd_ps(load16(x[m], type[m], i), _mm512_set1_ps(w[m]), acc);
        _mm512_storeu_ps(out + i, d != 1.0f ? _mm512_div_ps(acc, vd) : acc);
    }
    ref::weighted_sum_from(out, x, type, w, k, d, i, n);
}

void fma_acc_typed(float* acc, const void* x, QType type, float w, int64_t n) {
    const __m512 vw = _mm512_set1_ps(w);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(load16(x, type, i), vw, _mm512_loadu_ps(acc + i)));
    if (i < n) ref::fma_acc_typed(acc + i, static_cast<const uint8_t*>(x) + i * (type == QType::F32 ? 4 : 2), type, w, n - i);
}

void div(float* x, float d, int64_t n) {
    const __m512 vd = _mm512_set1_ps(d);
    const float r = exact_reciprocal(d);
    int64_t i = 0;
    if (r != 0.0f) {  // the same bits as / d
        const __m512 vr = _mm512_set1_ps(r);
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), vr));
    }
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_div_ps(_mm512_loadu_ps(x + i), vd));
    if (i < n) ref::div(x + i, d, n - i);
}

void lincomb2(float* out, const float* a, float ca, const float* b, float cb, float d, int64_t n) {
    const __m512 va = _mm512_set1_ps(ca), vb = _mm512_set1_ps(cb), vd = _mm512_set1_ps(d);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 pa = _mm512_mul_ps(va, _mm512_loadu_ps(a + i));
        const __m512 pb = _mm512_mul_ps(vb, _mm512_loadu_ps(b + i));
        const __m512 sum = _mm512_add_ps(pa, pb);
        _mm512_storeu_ps(out + i, d == 1.0f ? sum : _mm512_div_ps(sum, vd));  // as the reference: / 1 skipped
    }
    if (i < n) ref::lincomb2(out + i, a + i, ca, b + i, cb, d, n - i);
}

void sub(float* out, const float* a, const float* b, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
    if (i < n) ref::sub(out + i, a + i, b + i, n - i);
}

// x*x, y*y and x*y of 16 floats added in double to 8-lane sums: elements 0..7 then 8..15 go to
// lanes 0..7 in that order (the reference's per-lane order); dot3 and delta_dot3 share it.
static inline void add_products16(__m512 x, __m512 y, __m512d& aa, __m512d& bb, __m512d& ab) {
    const __m512d xl = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    const __m512d xh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    const __m512d yl = _mm512_cvtps_pd(_mm512_castps512_ps256(y));
    const __m512d yh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(y), 1)));
    aa = _mm512_add_pd(_mm512_add_pd(aa, _mm512_mul_pd(xl, xl)), _mm512_mul_pd(xh, xh));
    bb = _mm512_add_pd(_mm512_add_pd(bb, _mm512_mul_pd(yl, yl)), _mm512_mul_pd(yh, yh));
    ab = _mm512_add_pd(_mm512_add_pd(ab, _mm512_mul_pd(xl, yl)), _mm512_mul_pd(xh, yh));
}

void dot3(const float* a, const float* b, int64_t n, double out[3]) {
    // One 8-lane accumulator each: elements i..i+7 then i+8..i+15 go to lanes 0..7 in that order,
    // exactly the reference's per-lane order.
    __m512d aa = _mm512_setzero_pd(), bb = aa, ab = aa;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        add_products16(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), aa, bb, ab);
    }
    double la[8], lb[8], lab[8];
    _mm512_storeu_pd(la, aa);
    _mm512_storeu_pd(lb, bb);
    _mm512_storeu_pd(lab, ab);
    for (; i < n; ++i) {
        const double x = a[i], y = b[i];
        la[i % 8] += x * x;
        lb[i % 8] += y * y;
        lab[i % 8] += x * y;
    }
    out[0] = combine_lanes(la);
    out[1] = combine_lanes(lb);
    out[2] = combine_lanes(lab);
}

void delta_dot3(const void* x0, QType t0, const void* x1, QType t1, const void* base, QType tb, int64_t n,
                double lanes[24]) {
    // as dot3: elements i..i+7 then i+8..i+15 go to lanes 0..7 in that order
    __m512d aa = _mm512_loadu_pd(lanes), bb = _mm512_loadu_pd(lanes + 8), ab = _mm512_loadu_pd(lanes + 16);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = load16(x0, t0, i), y = load16(x1, t1, i);
        if (base) {
            const __m512 s = load16(base, tb, i);
            x = _mm512_sub_ps(x, s);
            y = _mm512_sub_ps(y, s);
        }
        add_products16(x, y, aa, bb, ab);
    }
    _mm512_storeu_pd(lanes, aa);
    _mm512_storeu_pd(lanes + 8, bb);
    _mm512_storeu_pd(lanes + 16, ab);
    if (i < n) {  // i is a multiple of 16: the tail's lanes are its own indices mod 8
        const auto at = [&](const void* p, QType t) { return static_cast<const uint8_t*>(p) + i * (t == QType::F32 ? 4 : 2); };
        ref::delta_dot3(at(x0, t0), t0, at(x1, t1), t1, base ? at(base, tb) : nullptr, tb, n - i, lanes);
    }
}

void abs_sums(const float* x, const uint8_t* mask, int64_t n, double out[2]) {
    __m512d all = _mm512_setzero_pd(), kept = all;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_abs_ps(_mm512_loadu_ps(x + i));
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        all = _mm512_add_pd(_mm512_add_pd(all, lo), hi);
        if (mask) {
            const __mmask16 m = mask16(mask, i);
            kept = _mm512_add_pd(_mm512_add_pd(kept, _mm512_maskz_mov_pd(__mmask8(m), lo)), _mm512_maskz_mov_pd(__mmask8(m >> 8), hi));
        }
    }
    if (!mask) kept = all;
    double la[8], lk[8];
    _mm512_storeu_pd(la, all);
    _mm512_storeu_pd(lk, kept);
    for (; i < n; ++i) {
        const double v = std::fabs(double(x[i]));
        la[i % 8] += v;
        if (!mask || (mask[i >> 3] >> (i & 7) & 1)) lk[i % 8] += v;
    }
    out[0] = combine_lanes(la);
    out[1] = combine_lanes(lk);
}

void random_mask(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t threshold24, uint8_t* mask, int64_t n) {
    const __m512i vk0 = _mm512_set1_epi32(int(k0)), vk1 = _mm512_set1_epi32(int(k1));
    const __m512i vth = _mm512_set1_epi32(int(threshold24));
    const __m512i step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(int(index0 + uint32_t(i))), step);
        const __m512i h = fmix32(_mm512_add_epi32(fmix32(_mm512_xor_si512(idx, vk0)), vk1));
        const __mmask16 keep = _mm512_cmplt_epu32_mask(_mm512_srli_epi32(h, 8), vth);
        mask[i >> 3] = uint8_t(keep);
        mask[(i >> 3) + 1] = uint8_t(keep >> 8);
    }
    if (i < n) ref::random_mask(k0, k1, index0 + uint32_t(i), threshold24, mask + (i >> 3), n - i);
}

int64_t rank_of(const uint32_t* key, int64_t n, int64_t i) {
    // keys are <= 0x7fffffff, so signed compares order them
    const __m512i k = _mm512_set1_epi32(int(key[i]));
    int64_t r = 0, j = 0;
    for (; j + 16 <= n; j += 16) {
        const __m512i v = _mm512_loadu_si512(key + j);
        __mmask16 m = _mm512_cmplt_epi32_mask(v, k);
        if (j < i) {  // ties before element i count too
            const __mmask16 before = i - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (i - j)) - 1);
            m |= _mm512_mask_cmpeq_epi32_mask(before, v, k);
        }
        r += __builtin_popcount(unsigned(m));
    }
    for (; j < n; ++j) r += key[j] < key[i] || (key[j] == key[i] && j < i);
    return r;
}

void mask_hash24(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t* h, int64_t n) {
    const __m512i vk0 = _mm512_set1_epi32(int(k0)), vk1 = _mm512_set1_epi32(int(k1));
    const __m512i step = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(int(index0 + uint32_t(i))), step);
        const __m512i v = fmix32(_mm512_add_epi32(fmix32(_mm512_xor_si512(idx, vk0)), vk1));
        _mm512_storeu_si512(reinterpret_cast<__m512i*>(h + i), _mm512_srli_epi32(v, 8));
    }
    if (i < n) ref::mask_hash24(k0, k1, index0 + uint32_t(i), h + i, n - i);
}

void range_mask(const float* x, uint32_t lo, uint32_t hi, uint8_t* mask, int64_t n) {
    const __m512i abs = _mm512_set1_epi32(0x7fffffff);
    const __m512i vlo = _mm512_set1_epi32(int(lo)), vhi = _mm512_set1_epi32(int(hi));
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i k = _mm512_and_si512(_mm512_castps_si512(_mm512_loadu_ps(x + i)), abs);
        const __mmask16 keep = _mm512_cmpge_epu32_mask(k, vlo) & _mm512_cmple_epu32_mask(k, vhi);
        mask[i >> 3] = uint8_t(keep);
        mask[(i >> 3) + 1] = uint8_t(keep >> 8);
    }
    if (i < n) ref::range_mask(x + i, lo, hi, mask + (i >> 3), n - i);
}

void mask_scale(float* x, const uint8_t* mask, float s, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f), vs = _mm512_set1_ps(s);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 m = mask ? _mm512_maskz_mov_ps(mask16(mask, i), one) : one;
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), m);
        if (s != 1.0f) v = _mm512_mul_ps(v, vs);
        _mm512_storeu_ps(x + i, v);
    }
    if (i < n) ref::mask_scale(x + i, mask ? mask + (i >> 3) : nullptr, s, n - i);
}

void consensus(const float* const* d, const float* w, int n_models, Consensus rule, float* out, float* div, int64_t n) {
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), minus_one = _mm512_set1_ps(-1.0f);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 vote = zero;
        for (int m = 0; m < n_models; ++m) {
            const __m512 v = _mm512_loadu_ps(d[m] + i);
            const __m512 term = rule == Consensus::sum ? v : sign16(v);
            vote = m == 0 ? term : _mm512_add_ps(vote, term);
        }
        const __m512 sigma = _mm512_mask_mov_ps(minus_one, _mm512_cmp_ps_mask(vote, zero, _CMP_GE_OQ), one);
        __m512 acc = zero, den = zero;
        for (int m = 0; m < n_models; ++m) {
            const __m512 v = _mm512_loadu_ps(d[m] + i);
            const __m512 agree = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(sign16(v), sigma, _CMP_EQ_OQ), one);
            const __m512 term = _mm512_mul_ps(v, agree);
            const __m512 wt = _mm512_mul_ps(_mm512_set1_ps(w[m]), agree);
            acc = m == 0 ? term : _mm512_add_ps(acc, term);
            den = m == 0 ? wt : _mm512_add_ps(den, wt);
        }
        _mm512_storeu_ps(out + i, acc);
        _mm512_storeu_ps(div + i, _mm512_mask_mov_ps(den, _mm512_cmp_ps_mask(den, zero, _CMP_EQ_OQ), one));
    }
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::consensus(tail.data(), w, n_models, rule, out + i, div + i, n - i);
    }
}

}  // namespace avx512

void fill_merge_avx512(MergeKernels& k) {
    k.load = avx512::load;
    k.store = avx512::store;
    k.fma_acc = avx512::fma_acc;
    k.fma_acc_typed = avx512::fma_acc_typed;
    k.weighted_sum = avx512::weighted_sum;
    k.task_sum = avx512::task_sum;
    k.stock_mix = avx512::stock_mix;
    k.div = avx512::div;
    k.lincomb2 = avx512::lincomb2;
    k.sub = avx512::sub;
    k.dot3 = avx512::dot3;
    k.delta_dot3 = avx512::delta_dot3;
    k.abs_sums = avx512::abs_sums;
    k.random_mask = avx512::random_mask;
    k.mask_hash24 = avx512::mask_hash24;
    k.rank_of = avx512::rank_of;
    k.range_mask = avx512::range_mask;
    k.mask_scale = avx512::mask_scale;
    k.consensus = avx512::consensus;
    fill_merge_more_avx512(k);
}

}  // namespace llamix
