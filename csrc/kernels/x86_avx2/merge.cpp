// AVX2 merge primitives: 8 floats per step, bit-identical to ref/merge_ref.cpp (same rounding of
// every operation, same reduction lanes); tails go to the reference.
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/ref/merge_ref.h"

namespace llamix {
namespace avx2 {

namespace {

inline __m256 load8(const void* src, QType type, int64_t i) {
    switch (type) {
        case QType::F16:
            return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(src) + i)));
        case QType::BF16: {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(src) + i));
            return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        }
        default: return _mm256_loadu_ps(static_cast<const float*>(src) + i);
    }
}

// float32 -> bfloat16, round to nearest even, NaN kept quiet (as fp32_to_bf16)
inline __m128i to_bf16(__m256 v) {
    const __m256i x = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
    const __m256i is_nan =
        _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, nan, is_nan);
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

// 8 mask bits -> 8 lane masks (all ones where the bit is set)
inline __m256 lanes_of(uint8_t byte) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i m = _mm256_and_si256(_mm256_set1_epi32(byte), bit);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, bit));
}

inline __m256i fmix32(__m256i h) {
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32(int(0x85ebca6bu)));
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 13));
    h = _mm256_mullo_epi32(h, _mm256_set1_epi32(int(0xc2b2ae35u)));
    return _mm256_xor_si256(h, _mm256_srli_epi32(h, 16));
}

// -1, 0, +1, or the NaN itself (the reference's sign_of)
inline __m256 sign8(__m256 x) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 pos = _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_GT_OQ), _mm256_set1_ps(1.0f));
    const __m256 neg = _mm256_and_ps(_mm256_cmp_ps(x, zero, _CMP_LT_OQ), _mm256_set1_ps(-1.0f));
    return _mm256_blendv_ps(_mm256_or_ps(pos, neg), x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

void store_lanes(const __m256d lo, const __m256d hi, double l[8]) {
    _mm256_storeu_pd(l, lo);
    _mm256_storeu_pd(l + 4, hi);
}

}  // namespace

void load(const void* src, QType type, float* dst, int64_t n) {
    if (type == QType::F32) return ref::load(src, type, dst, n);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(src, type, i));
    if (i < n) ref::load(static_cast<const uint16_t*>(src) + i, type, dst + i, n - i);
}

void store(const float* src, void* dst, QType type, int64_t n) {
    int64_t i = 0;
    if (type == QType::F16) {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i),
                             _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else if (type == QType::BF16) {
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<uint16_t*>(dst) + i), to_bf16(_mm256_loadu_ps(src + i)));
    } else {
        return ref::store(src, dst, type, n);
    }
    if (i < n) ref::store(src + i, static_cast<uint16_t*>(dst) + i, type, n - i);
}

void fma_acc(float* acc, const float* x, float w, int64_t n) {
    const __m256 vw = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vw, _mm256_loadu_ps(acc + i)));
    if (i < n) ref::fma_acc(acc + i, x + i, w, n - i);
}

void task_sum(float* out, const void* base, QType tb, const void* const* x, const QType* type, const float* w, int k,
              float d, float lambda, int64_t n) {
    const __m256 vd = _mm256_set1_ps(d), vl = _mm256_set1_ps(lambda);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 b = load8(base, tb, i);
        __m256 acc = _mm256_mul_ps(_mm256_sub_ps(load8(x[0], type[0], i), b), _mm256_set1_ps(w[0]));
        for (int m = 1; m < k; ++m)
            acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_sub_ps(load8(x[m], type[m], i), b), _mm256_set1_ps(w[m])));
        if (d != 1.0f) acc = _mm256_div_ps(acc, vd);
        if (lambda != 1.0f) acc = _mm256_mul_ps(acc, vl);
        _mm256_storeu_ps(out + i, _mm256_add_ps(acc, b));
    }
    ref::task_sum_from(out, base, tb, x, type, w, k, d, lambda, i, n);
}

void stock_mix(float* out, const void* base, QType tb, const void* const* x, const QType* type, int k, float ca,
               float cb, int64_t n) {
    const __m256 vk = _mm256_set1_ps(float(k)), va = _mm256_set1_ps(ca), vb = _mm256_set1_ps(cb);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 acc = load8(x[0], type[0], i);
        for (int m = 1; m < k; ++m) acc = _mm256_add_ps(acc, load8(x[m], type[m], i));
        acc = _mm256_div_ps(acc, vk);
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_mul_ps(va, acc), _mm256_mul_ps(vb, load8(base, tb, i))));
    }
    ref::stock_mix_from(out, base, tb, x, type, k, ca, cb, i, n);
}

// weighted_sum of K bfloat16 inputs: the arrays and weights in locals (read through x and w, the
// compiler would load them again after every store), no type switch in the loop
template <int K, bool kDivide>
int64_t weighted_sum_bf16(float* out, const void* const* x, const float* w, float d, int64_t n) {
    const uint16_t* p[K];
    __m256 vw[K];
    for (int m = 0; m < K; ++m) p[m] = static_cast<const uint16_t*>(x[m]), vw[m] = _mm256_set1_ps(w[m]);
    const __m256 vd = _mm256_set1_ps(d);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int m = 0; m < K; ++m) acc = _mm256_fmadd_ps(load8(p[m], QType::BF16, i), vw[m], acc);
        _mm256_storeu_ps(out + i, kDivide ? _mm256_div_ps(acc, vd) : acc);
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
    const __m256 vd = _mm256_set1_ps(d);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 acc = _mm256_setzero_ps();
        for (int m = 0; m < k; ++m) acc = _mm256_fmadd_ps(load8(x[m], type[m], i), _mm256_set1_ps(w[m]), acc);
        _mm256_storeu_ps(out + i, d != 1.0f ? _mm256_div_ps(acc, vd) : acc);
    }
    ref::weighted_sum_from(out, x, type, w, k, d, i, n);
}

void fma_acc_typed(float* acc, const void* x, QType type, float w, int64_t n) {
    const __m256 vw = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(load8(x, type, i), vw, _mm256_loadu_ps(acc + i)));
    if (i < n) ref::fma_acc_typed(acc + i, static_cast<const uint8_t*>(x) + i * (type == QType::F32 ? 4 : 2), type, w, n - i);
}

void div(float* x, float d, int64_t n) {
    const __m256 vd = _mm256_set1_ps(d);
    const float r = exact_reciprocal(d);
    int64_t i = 0;
    if (r != 0.0f) {  // the same bits as / d
        const __m256 vr = _mm256_set1_ps(r);
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vr));
    }
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), vd));
    if (i < n) ref::div(x + i, d, n - i);
}

void lincomb2(float* out, const float* a, float ca, const float* b, float cb, float d, int64_t n) {
    const __m256 va = _mm256_set1_ps(ca), vb = _mm256_set1_ps(cb), vd = _mm256_set1_ps(d);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 pa = _mm256_mul_ps(va, _mm256_loadu_ps(a + i));
        const __m256 pb = _mm256_mul_ps(vb, _mm256_loadu_ps(b + i));
        const __m256 sum = _mm256_add_ps(pa, pb);
        _mm256_storeu_ps(out + i, d == 1.0f ? sum : _mm256_div_ps(sum, vd));  // as the reference: / 1 skipped
    }
    if (i < n) ref::lincomb2(out + i, a + i, ca, b + i, cb, d, n - i);
}

void sub(float* out, const float* a, const float* b, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i < n) ref::sub(out + i, a + i, b + i, n - i);
}

void accumulate(float* acc, const float* x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(acc + i, _mm256_add_ps(_mm256_loadu_ps(acc + i), _mm256_loadu_ps(x + i)));
    if (i < n) ref::accumulate(acc + i, x + i, n - i);
}

void scale(float* x, float w, int64_t n) {
    const __m256 vw = _mm256_set1_ps(w);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vw));
    if (i < n) ref::scale(x + i, w, n - i);
}

void div_elementwise(float* x, const float* d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(d + i)));
    if (i < n) ref::div_elementwise(x + i, d + i, n - i);
}

// x*x, y*y and x*y of 8 floats added in double to 8-lane sums (lanes 0-3 in *_lo, 4-7 in *_hi);
// products are exact in double, so fused or not is the same. dot3 and delta_dot3 share it.
static inline void add_products8(__m256 x, __m256 y, __m256d& aa_lo, __m256d& aa_hi, __m256d& bb_lo, __m256d& bb_hi,
                                 __m256d& ab_lo, __m256d& ab_hi) {
    const __m256d xl = _mm256_cvtps_pd(_mm256_castps256_ps128(x)), xh = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    const __m256d yl = _mm256_cvtps_pd(_mm256_castps256_ps128(y)), yh = _mm256_cvtps_pd(_mm256_extractf128_ps(y, 1));
    aa_lo = _mm256_add_pd(aa_lo, _mm256_mul_pd(xl, xl));
    aa_hi = _mm256_add_pd(aa_hi, _mm256_mul_pd(xh, xh));
    bb_lo = _mm256_add_pd(bb_lo, _mm256_mul_pd(yl, yl));
    bb_hi = _mm256_add_pd(bb_hi, _mm256_mul_pd(yh, yh));
    ab_lo = _mm256_add_pd(ab_lo, _mm256_mul_pd(xl, yl));
    ab_hi = _mm256_add_pd(ab_hi, _mm256_mul_pd(xh, yh));
}

void dot3(const float* a, const float* b, int64_t n, double out[3]) {
    __m256d aa_lo = _mm256_setzero_pd(), aa_hi = aa_lo, bb_lo = aa_lo, bb_hi = aa_lo, ab_lo = aa_lo, ab_hi = aa_lo;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        add_products8(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), aa_lo, aa_hi, bb_lo, bb_hi, ab_lo, ab_hi);
    }
    double aa[8], bb[8], ab[8];
    store_lanes(aa_lo, aa_hi, aa);
    store_lanes(bb_lo, bb_hi, bb);
    store_lanes(ab_lo, ab_hi, ab);
    for (; i < n; ++i) {
        const double x = a[i], y = b[i];
        aa[i % 8] += x * x;
        bb[i % 8] += y * y;
        ab[i % 8] += x * y;
    }
    out[0] = combine_lanes(aa);
    out[1] = combine_lanes(bb);
    out[2] = combine_lanes(ab);
}

// kBF16: both inputs bfloat16 without a base (the type switch folds away)
template <bool kBF16>
void delta_dot3_loop(const void* x0, QType t0, const void* x1, QType t1, const void* base, QType tb, int64_t n,
                     double lanes[24]) {
    if (kBF16) t0 = t1 = QType::BF16, base = nullptr;
    __m256d aa_lo = _mm256_loadu_pd(lanes), aa_hi = _mm256_loadu_pd(lanes + 4);
    __m256d bb_lo = _mm256_loadu_pd(lanes + 8), bb_hi = _mm256_loadu_pd(lanes + 12);
    __m256d ab_lo = _mm256_loadu_pd(lanes + 16), ab_hi = _mm256_loadu_pd(lanes + 20);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = load8(x0, t0, i), y = load8(x1, t1, i);
        if (base) {
            const __m256 s = load8(base, tb, i);
            x = _mm256_sub_ps(x, s);
            y = _mm256_sub_ps(y, s);
        }
        add_products8(x, y, aa_lo, aa_hi, bb_lo, bb_hi, ab_lo, ab_hi);
    }
    store_lanes(aa_lo, aa_hi, lanes);
    store_lanes(bb_lo, bb_hi, lanes + 8);
    store_lanes(ab_lo, ab_hi, lanes + 16);
    if (i < n) {  // i is a multiple of 8: the tail's lanes are its own indices mod 8
        const auto at = [&](const void* p, QType t) { return static_cast<const uint8_t*>(p) + i * (t == QType::F32 ? 4 : 2); };
        ref::delta_dot3(at(x0, t0), t0, at(x1, t1), t1, base ? at(base, tb) : nullptr, tb, n - i, lanes);
    }
}

void delta_dot3(const void* x0, QType t0, const void* x1, QType t1, const void* base, QType tb, int64_t n,
                double lanes[24]) {
    if (!base && t0 == QType::BF16 && t1 == QType::BF16) return delta_dot3_loop<true>(x0, t0, x1, t1, base, tb, n, lanes);
    delta_dot3_loop<false>(x0, t0, x1, t1, base, tb, n, lanes);
}

void abs_sums(const float* x, const uint8_t* mask, int64_t n, double out[2]) {
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256d all_lo = _mm256_setzero_pd(), all_hi = all_lo, kept_lo = all_lo, kept_hi = all_lo;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_and_ps(_mm256_loadu_ps(x + i), abs_mask);
        const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        all_lo = _mm256_add_pd(all_lo, lo);
        all_hi = _mm256_add_pd(all_hi, hi);
        if (mask) {
            const __m256i m = _mm256_castps_si256(lanes_of(mask[i >> 3]));
            const __m256d ml = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)));
            const __m256d mh = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)));
            kept_lo = _mm256_add_pd(kept_lo, _mm256_and_pd(lo, ml));
            kept_hi = _mm256_add_pd(kept_hi, _mm256_and_pd(hi, mh));
        }
    }
    if (!mask) kept_lo = all_lo, kept_hi = all_hi;
    double all[8], kept[8];
    store_lanes(all_lo, all_hi, all);
    store_lanes(kept_lo, kept_hi, kept);
    for (; i < n; ++i) {
        const double v = std::fabs(double(x[i]));
        all[i % 8] += v;
        if (!mask || (mask[i >> 3] >> (i & 7) & 1)) kept[i % 8] += v;
    }
    out[0] = combine_lanes(all);
    out[1] = combine_lanes(kept);
}

void random_mask(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t threshold24, uint8_t* mask, int64_t n) {
    const __m256i vk0 = _mm256_set1_epi32(int(k0)), vk1 = _mm256_set1_epi32(int(k1));
    const __m256i vth = _mm256_set1_epi32(int(threshold24));
    const __m256i step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(int(index0 + uint32_t(i))), step);
        const __m256i h = fmix32(_mm256_add_epi32(fmix32(_mm256_xor_si256(idx, vk0)), vk1));
        const __m256i keep = _mm256_cmpgt_epi32(vth, _mm256_srli_epi32(h, 8));  // both < 2^25: signed compare is fine
        mask[i >> 3] = uint8_t(_mm256_movemask_ps(_mm256_castsi256_ps(keep)));
    }
    if (i < n) ref::random_mask(k0, k1, index0 + uint32_t(i), threshold24, mask + (i >> 3), n - i);
}

int64_t rank_of(const uint32_t* key, int64_t n, int64_t i) {
    // keys are <= 0x7fffffff, so signed compares order them
    const __m256i k = _mm256_set1_epi32(int(key[i]));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t r = 0, j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(key + j));
        __m256i m = _mm256_cmpgt_epi32(k, v);
        if (j < i) {  // ties before element i count too
            const __m256i before = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::min<int64_t>(i - j, 8))), lane);
            m = _mm256_or_si256(m, _mm256_and_si256(before, _mm256_cmpeq_epi32(v, k)));
        }
        r += __builtin_popcount(unsigned(_mm256_movemask_ps(_mm256_castsi256_ps(m))));
    }
    for (; j < n; ++j) r += key[j] < key[i] || (key[j] == key[i] && j < i);
    return r;
}

void mask_hash24(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t* h, int64_t n) {
    const __m256i vk0 = _mm256_set1_epi32(int(k0)), vk1 = _mm256_set1_epi32(int(k1));
    const __m256i step = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(int(index0 + uint32_t(i))), step);
        const __m256i v = fmix32(_mm256_add_epi32(fmix32(_mm256_xor_si256(idx, vk0)), vk1));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i), _mm256_srli_epi32(v, 8));
    }
    if (i < n) ref::mask_hash24(k0, k1, index0 + uint32_t(i), h + i, n - i);
}

void range_mask(const float* x, uint32_t lo, uint32_t hi, uint8_t* mask, int64_t n) {
    // keys and bounds are <= 0x7fffffff, so signed compares order them correctly
    const __m256i abs = _mm256_set1_epi32(0x7fffffff);
    const __m256i vlo = _mm256_set1_epi32(int(lo) - 1), vhi = _mm256_set1_epi32(int(hi));
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i k = _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(x + i)), abs);
        const __m256i out = _mm256_or_si256(_mm256_cmpgt_epi32(vlo, k), _mm256_cmpgt_epi32(k, vhi));
        mask[i >> 3] = uint8_t(~_mm256_movemask_ps(_mm256_castsi256_ps(out)));
    }
    if (i < n) ref::range_mask(x + i, lo, hi, mask + (i >> 3), n - i);
}

void mask_scale(float* x, const uint8_t* mask, float s, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        if (mask) v = _mm256_mul_ps(v, _mm256_and_ps(lanes_of(mask[i >> 3]), one));
        else v = _mm256_mul_ps(v, one);
        if (s != 1.0f) v = _mm256_mul_ps(v, vs);
        _mm256_storeu_ps(x + i, v);
    }
    if (i < n) ref::mask_scale(x + i, mask ? mask + (i >> 3) : nullptr, s, n - i);
}

void consensus(const float* const* d, const float* w, int n_models, Consensus rule, float* out, float* div, int64_t n) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f), minus_one = _mm256_set1_ps(-1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 vote = zero;
        for (int m = 0; m < n_models; ++m) {
            const __m256 v = _mm256_loadu_ps(d[m] + i);
            const __m256 term = rule == Consensus::sum ? v : sign8(v);
            vote = m == 0 ? term : _mm256_add_ps(vote, term);
        }
        const __m256 sigma = _mm256_blendv_ps(minus_one, one, _mm256_cmp_ps(vote, zero, _CMP_GE_OQ));
        __m256 acc = zero, den = zero;
        for (int m = 0; m < n_models; ++m) {
            const __m256 v = _mm256_loadu_ps(d[m] + i);
            const __m256 agree = _mm256_and_ps(_mm256_cmp_ps(sign8(v), sigma, _CMP_EQ_OQ), one);
            const __m256 term = _mm256_mul_ps(v, agree);
            const __m256 wt = _mm256_mul_ps(_mm256_set1_ps(w[m]), agree);
            acc = m == 0 ? term : _mm256_add_ps(acc, term);
            den = m == 0 ? wt : _mm256_add_ps(den, wt);
        }
        _mm256_storeu_ps(out + i, acc);
        _mm256_storeu_ps(div + i, _mm256_blendv_ps(den, one, _mm256_cmp_ps(den, zero, _CMP_EQ_OQ)));
    }
    if (i < n) {
        std::vector<const float*> tail(static_cast<size_t>(n_models));
        for (int m = 0; m < n_models; ++m) tail[m] = d[m] + i;
        ref::consensus(tail.data(), w, n_models, rule, out + i, div + i, n - i);
    }
}

}  // namespace avx2

void fill_merge_avx2(MergeKernels& k) {
    k.load = avx2::load;
    k.store = avx2::store;
    k.fma_acc = avx2::fma_acc;
    k.fma_acc_typed = avx2::fma_acc_typed;
    k.task_sum = avx2::task_sum;
    k.stock_mix = avx2::stock_mix;
    k.weighted_sum = avx2::weighted_sum;
    k.div = avx2::div;
    k.lincomb2 = avx2::lincomb2;
    k.sub = avx2::sub;
    k.add = avx2::accumulate;
    k.scale = avx2::scale;
    k.div_elementwise = avx2::div_elementwise;
    k.dot3 = avx2::dot3;
    k.delta_dot3 = avx2::delta_dot3;
    k.abs_sums = avx2::abs_sums;
    k.random_mask = avx2::random_mask;
    k.mask_hash24 = avx2::mask_hash24;
    k.rank_of = avx2::rank_of;
    k.range_mask = avx2::range_mask;
    k.mask_scale = avx2::mask_scale;
    k.consensus = avx2::consensus;
    fill_merge_more_avx2(k);
}

}  // namespace llamix
