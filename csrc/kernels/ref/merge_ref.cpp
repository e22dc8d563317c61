// Reference merge primitives: THE SPEC every SIMD variant must reproduce bit for bit.
// Plain loops; the rounding of every operation is written out (the build uses -ffp-contract=off).
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "common/fp16.h"
#include "kernels/ref/merge_ref.h"

namespace llamix {
namespace ref {

void load(const void* src, QType type, float* dst, int64_t n) {
    switch (type) {
        case QType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
        case QType::F16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(s[i]);
            return;
        }
        case QType::BF16: {
            const auto* s = static_cast<const uint16_t*>(src);
            for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(s[i]);
            return;
        }
        default: throw std::invalid_argument("merge: inputs must be float32, float16 or bfloat16");
    }
}

// Element i of a float32 / float16 / bfloat16 array, as float32.
static float element(const void* src, QType type, int64_t i) {
    float v;
    load(static_cast<const uint8_t*>(src) + i * (type == QType::F32 ? 4 : 2), type, &v, 1);
    return v;
}

void store(const float* src, void* dst, QType type, int64_t n) {
    switch (type) {
        case QType::F32: std::memcpy(dst, src, size_t(n) * 4); return;
        case QType::F16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_fp16(src[i]);
            return;
        }
        case QType::BF16: {
            auto* d = static_cast<uint16_t*>(dst);
            for (int64_t i = 0; i < n; ++i) d[i] = fp32_to_bf16(src[i]);
            return;
        }
        default: throw std::invalid_argument("merge: outputs must be float32, float16 or bfloat16");
    }
}

void fma_acc(float* acc, const float* x, float w, int64_t n) {
    for (int64_t i = 0; i < n; ++i) acc[i] = std::fma(x[i], w, acc[i]);
}

void fma_acc_typed(float* acc, const void* x, QType type, float w, int64_t n) {
    float tmp[256];
    const int64_t size = type == QType::F32 ? 4 : 2;
    for (int64_t i = 0; i < n; i += 256) {
        const int64_t m = n - i < 256 ? n - i : 256;
        load(static_cast<const uint8_t*>(x) + i * size, type, tmp, m);
        fma_acc(acc + i, tmp, w, m);
    }
}

void weighted_sum_from(float* out, const void* const* x, const QType* type, const float* w, int k, float d,
                       int64_t begin, int64_t n) {
    for (int64_t i = begin; i < n; ++i) {
        float acc = 0.0f;
        for (int m = 0; m < k; ++m) {
            acc = std::fma(element(x[m], type[m], i), w[m], acc);
        }
        out[i] = d != 1.0f ? acc / d : acc;
    }
}

void weighted_sum(float* out, const void* const* x, const QType* type, const float* w, int k, float d, int64_t n) {
    weighted_sum_from(out, x, type, w, k, d, 0, n);
}

void task_sum_from(float* out, const void* base, QType tb, const void* const* x, const QType* type, const float* w,
                   int k, float d, float lambda, int64_t begin, int64_t n) {
    for (int64_t i = begin; i < n; ++i) {
        const float b = element(base, tb, i);
        float acc = 0.0f;
        for (int m = 0; m < k; ++m) {
            const float dm = (element(x[m], type[m], i) - b) * w[m];
            acc = m == 0 ? dm : acc + dm;
        }
        if (d != 1.0f) acc = acc / d;
        if (lambda != 1.0f) acc = acc * lambda;
        out[i] = acc + b;
    }
}

void task_sum(float* out, const void* base, QType tb, const void* const* x, const QType* type, const float* w, int k,
              float d, float lambda, int64_t n) {
    task_sum_from(out, base, tb, x, type, w, k, d, lambda, 0, n);
}

void stock_mix_from(float* out, const void* base, QType tb, const void* const* x, const QType* type, int k, float ca,
                    float cb, int64_t begin, int64_t n) {
    for (int64_t i = begin; i < n; ++i) {
        const float b = element(base, tb, i);
        float acc = 0.0f;
        for (int m = 0; m < k; ++m) {
            const float v = element(x[m], type[m], i);
            acc = m == 0 ? v : acc + v;
        }
        acc = acc / float(k);
        const float pa = ca * acc;
        const float pb = cb * b;
        out[i] = pa + pb;
    }
}

void stock_mix(float* out, const void* base, QType tb, const void* const* x, const QType* type, int k, float ca,
               float cb, int64_t n) {
    stock_mix_from(out, base, tb, x, type, k, ca, cb, 0, n);
}

void div(float* x, float d, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] / d;
}

void lincomb2(float* out, const float* a, float ca, const float* b, float cb, float d, int64_t n) {
    // A sum is never a signalling NaN, so dividing it by 1 returns it unchanged: skipped.
    for (int64_t i = 0; i < n; ++i) {
        const float pa = ca * a[i];
        const float pb = cb * b[i];
        out[i] = d == 1.0f ? pa + pb : (pa + pb) / d;
    }
}

void sub(float* out, const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
}

void dot3(const float* a, const float* b, int64_t n, double out[3]) {
    double aa[8] = {}, bb[8] = {}, ab[8] = {};
    for (int64_t i = 0; i < n; ++i) {
        const double x = a[i], y = b[i];
        aa[i % 8] += x * x;  // exact product: the sum order alone decides the result
        bb[i % 8] += y * y;
        ab[i % 8] += x * y;
    }
    out[0] = combine_lanes(aa);
    out[1] = combine_lanes(bb);
    out[2] = combine_lanes(ab);
}

namespace {
float value_at(const void* src, QType type, int64_t i) {
    switch (type) {
        case QType::F16: return fp16_to_fp32(static_cast<const uint16_t*>(src)[i]);
        case QType::BF16: return bf16_to_fp32(static_cast<const uint16_t*>(src)[i]);
        default: return static_cast<const float*>(src)[i];
    }
}
}  // namespace

void delta_dot3(const void* x0, QType t0, const void* x1, QType t1, const void* base, QType tb, int64_t n,
                double lanes[24]) {
    for (int64_t i = 0; i < n; ++i) {
        float a = value_at(x0, t0, i), b = value_at(x1, t1, i);
        if (base) {
            const float s = value_at(base, tb, i);
            a = a - s;
            b = b - s;
        }
        const double x = a, y = b;
        lanes[i % 8] += x * x;
        lanes[8 + i % 8] += y * y;
        lanes[16 + i % 8] += x * y;
    }
}

void abs_sums(const float* x, const uint8_t* mask, int64_t n, double out[2]) {
    double all[8] = {}, kept[8] = {};
    for (int64_t i = 0; i < n; ++i) {
        const double v = std::fabs(double(x[i]));
        all[i % 8] += v;
        if (!mask || (mask[i >> 3] >> (i & 7) & 1)) kept[i % 8] += v;
    }
    out[0] = combine_lanes(all);
    out[1] = combine_lanes(kept);
}

void random_mask(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t threshold24, uint8_t* mask, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
        uint8_t byte = 0;
        for (int64_t j = 0; j < 8 && i + j < n; ++j) {
            const uint32_t u = mask_hash(k0, k1, index0 + uint32_t(i + j)) >> 8;
            byte |= uint8_t(u < threshold24) << j;
        }
        mask[i >> 3] = byte;
    }
}

void mask_hash24(uint32_t k0, uint32_t k1, uint32_t index0, uint32_t* h, int64_t n) {
    for (int64_t i = 0; i < n; ++i) h[i] = mask_hash(k0, k1, index0 + uint32_t(i)) >> 8;
}

int64_t rank_of(const uint32_t* key, int64_t n, int64_t i) {
    const uint32_t k = key[i];
    int64_t r = 0;
    for (int64_t j = 0; j < n; ++j) r += key[j] < k || (key[j] == k && j < i);
    return r;
}

void range_mask(const float* x, uint32_t lo, uint32_t hi, uint8_t* mask, int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
        uint8_t byte = 0;
        for (int64_t j = 0; j < 8 && i + j < n; ++j) {
            const uint32_t k = f32_bits(x[i + j]) & 0x7fffffffu;
            byte |= uint8_t(lo <= k && k <= hi) << j;
        }
        mask[i >> 3] = byte;
    }
}

void mask_scale(float* x, const uint8_t* mask, float s, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const bool keep = !mask || (mask[i >> 3] >> (i & 7) & 1);
        float v = x[i] * (keep ? 1.0f : 0.0f);  // a dropped entry keeps its sign: x * 0
        if (s != 1.0f) v = v * s;
        x[i] = v;
    }
}

void scale(float* x, float w, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] * w;
}

// sign as mergekit's mask sees it: -1, 0 or +1 (NaN compares unequal to both signs)
static inline float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : (v == 0.0f ? 0.0f : NAN)); }

void consensus(const float* const* d, const float* w, int n_models, Consensus rule, float* out, float* div, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        float vote = rule == Consensus::sum ? d[0][i] : sign_of(d[0][i]);
        for (int m = 1; m < n_models; ++m) vote = vote + (rule == Consensus::sum ? d[m][i] : sign_of(d[m][i]));
        const float sigma = vote >= 0.0f ? 1.0f : -1.0f;
        float acc = 0.0f, den = 0.0f;
        for (int m = 0; m < n_models; ++m) {
            const bool agree = sign_of(d[m][i]) == sigma;
            const float term = d[m][i] * (agree ? 1.0f : 0.0f);  // disagreeing: a signed zero
            const float wt = w[m] * (agree ? 1.0f : 0.0f);
            acc = m == 0 ? term : acc + term;
            den = m == 0 ? wt : den + wt;
        }
        out[i] = acc;
        div[i] = den == 0.0f ? 1.0f : den;
    }
}

void accumulate(float* acc, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] + x[i];
}

void div_elementwise(float* x, const float* d, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] / d[i];
}

}  // namespace ref

void fill_merge_ref(MergeKernels& k) {
    k.load = ref::load;
    k.store = ref::store;
    k.fma_acc = ref::fma_acc;
    k.fma_acc_typed = ref::fma_acc_typed;
    k.weighted_sum = ref::weighted_sum;
    k.task_sum = ref::task_sum;
    k.stock_mix = ref::stock_mix;
    k.div = ref::div;
    k.lincomb2 = ref::lincomb2;
    k.sub = ref::sub;
    k.dot3 = ref::dot3;
    k.delta_dot3 = ref::delta_dot3;
    k.abs_sums = ref::abs_sums;
    k.random_mask = ref::random_mask;
    k.mask_hash24 = ref::mask_hash24;
    k.rank_of = ref::rank_of;
    k.range_mask = ref::range_mask;
    k.mask_scale = ref::mask_scale;
    k.scale = ref::scale;
    k.consensus = ref::consensus;
    k.add = ref::accumulate;
    k.div_elementwise = ref::div_elementwise;
    fill_merge_more_ref(k);
}

}  // namespace llamix
