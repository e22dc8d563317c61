// Reference primitives of nearswap, RAM, SCE and arcee_fusion: THE SPEC the SIMD variants must
// reproduce bit for bit. Each operation's rounding is written out (-ffp-contract=off).
#include <cmath>
#include <cstring>
#include <vector>

#include "common/fp16.h"
#include "kernels/merge_math.h"
#include "kernels/ref/merge_ref.h"

namespace llamix {

namespace merge_math {

// e^x: k = round-half-even(x log2 e), r = x - k ln 2 (two fused steps), e^r by a degree-7
// polynomial, times 2^k built from the exponent bits.
float exp_f32(float x) {
    if (x != x) return x;
    if (x < kExpLo) return 0.0f;
    if (x > kExpHi) return INFINITY;
    const float k = std::nearbyint(x * kLog2e);
    float r = std::fma(k, -kLn2Hi, x);
    r = std::fma(k, -kLn2Lo, r);
    float p = kExpP[0];
    for (int j = 1; j < 6; ++j) p = std::fma(p, r, kExpP[j]);
    const float r2 = r * r;
    float y = std::fma(p, r2, r);
    y = y + 1.0f;
    return y * bits_f32(uint32_t(int32_t(k) + 127) << 23);
}

// ln x: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln(m) = f - f^2/2 + f^3 P(f) with f = m - 1.
float log_f32(float x) {
    if (x != x) return x;
    if (x < 0.0f) return bits_f32(kQuietNan);
    if (x == 0.0f) return -INFINITY;
    if (x == INFINITY) return INFINITY;
    const uint32_t bits = f32_bits(x);
    int32_t e = int32_t(bits >> 23) - 126;
    float m = bits_f32((bits & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
    if (m < kSqrtHalf) {
        e -= 1;
        m = (m + m) - 1.0f;
    } else {
        m = m - 1.0f;
    }
    const float z = m * m;
    float y = kLogP[0];
    for (int j = 1; j < 9; ++j) y = std::fma(y, m, kLogP[j]);
    y = y * m;
    y = y * z;
    const float fe = float(e);
    y = std::fma(fe, kLn2Lo, y);
    y = std::fma(z, -0.5f, y);
    float r = m + y;
    r = std::fma(fe, kLn2Hi, r);
    return r;
}

}  // namespace merge_math

namespace ref {

void nearswap(const float* a, const float* b, float t, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        const float d = std::fabs(a[i] - b[i]);
        const float c = d < 1e-6f ? 1e-6f : d;  // clamp(min=1e-6); NaN stays NaN
        float w = (1.0f / c) * t;
        w = w < 0.0f ? 0.0f : w;
        w = w > 1.0f ? 1.0f : w;
        const float pb = w * b[i];
        const float pa = (1.0f - w) * a[i];
        out[i] = pb + pa;
    }
}

static inline bool nonzero(float v, float eps) { return std::fabs(v) > eps; }

void ram(const float* const* d, const float* lambda, int n_models, float eps, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        int c = 0;
        for (int m = 0; m < n_models; ++m) c += nonzero(d[m][i], eps);
        const float uniq = c == 1 ? 1.0f : 0.0f, over = c > 1 ? 1.0f : 0.0f;
        const float cnt = float(c > 1 ? c : 1);
        float acc = 0.0f;
        for (int m = 0; m < n_models; ++m) {
            const float z = d[m][i] * (nonzero(d[m][i], eps) ? 1.0f : 0.0f);
            const float u = (z * uniq) * lambda[m];
            const float o = (z * over) / cnt;
            const float term = u + o;
            acc = m == 0 ? term : acc + term;
        }
        out[i] = acc;
    }
}

void ram_counts(const float* const* d, int n_models, float eps, int64_t* shared, int64_t* unique, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        int c = 0;
        for (int m = 0; m < n_models; ++m) c += nonzero(d[m][i], eps);
        for (int m = 0; m < n_models; ++m) {
            if (!nonzero(d[m][i], eps)) continue;
            shared[m] += c > 1;
            unique[m] += c == 1;
        }
    }
}

void variance(const float* const* d, int n_models, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        double s = d[0][i];
        for (int m = 1; m < n_models; ++m) s = s + double(d[m][i]);
        const double mean = s / double(n_models);
        double q = 0.0;
        for (int m = 0; m < n_models; ++m) {
            const double e = double(d[m][i]) - mean;
            q = m == 0 ? e * e : q + e * e;
        }
        out[i] = float(q / double(n_models));
    }
}

// -1, 0, +1, or the NaN itself (a NaN never equals the elected sign)
static inline float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : (v == 0.0f ? 0.0f : v)); }

void sce(const float* const* d, const float* w, int n_models, float* out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        float vote = d[0][i];
        for (int m = 1; m < n_models; ++m) vote = vote + d[m][i];
        const float sigma = vote >= 0.0f ? 1.0f : -1.0f;
        float acc = 0.0f, den = 0.0f;
        for (int m = 0; m < n_models; ++m) {
            const float e = w[m] * (sign_of(d[m][i]) == sigma ? 1.0f : 0.0f);
            const float term = d[m][i] * e;
            acc = m == 0 ? term : acc + term;
            den = m == 0 ? e : den + e;
        }
        const float dc = den < 1e-6f ? 1e-6f : den;  // clamp(min=1e-6); NaN stays NaN
        out[i] = acc / dc;
    }
}

float max(const float* x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; ++i)
        if (x[i] > m) m = x[i];
    return m;
}

double exp_sum(const float* x, float m, float* e, int64_t n) {
    double l[8] = {};
    for (int64_t i = 0; i < n; ++i) {
        e[i] = merge_math::exp_f32(x[i] - m);
        l[i % 8] += double(e[i]);
    }
    return combine_lanes(l);
}

double kl_sum(const float* ex, float sx, const float* ey, float sy, float eps, int64_t n) {
    double l[8] = {};
    for (int64_t i = 0; i < n; ++i) {
        const float p = ex[i] * sx + eps;
        const float q = ey[i] * sy + eps;
        const float term = p * merge_math::log_f32(p / q);
        l[i % 8] += double(term);
    }
    return combine_lanes(l);
}

void abs_scale(float* x, float s, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = std::fabs(x[i]) * s;
}

void keep_ge(float* x, const float* key, float th, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] = x[i] * (key[i] >= th ? 1.0f : 0.0f);
}

void mul(float* out, const float* a, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

void sq_lanes8(float* lanes, const float* x, int64_t n) {
    for (int64_t i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) {
            const float sq = x[i + j] * x[i + j];
            lanes[j] = lanes[j] + sq;
        }
}

void sum_groups32(float* acc, const float* x, int64_t groups) {
    for (int64_t g = 0; g < groups; ++g)
        for (int k = 0; k < 32; ++k) acc[k] = acc[k] + x[g * 32 + k];
}

namespace {

float element(const void* p, QType type, int64_t i) {
    float v;
    load(static_cast<const uint8_t*>(p) + i * (type == QType::F32 ? 4 : 2), type, &v, 1);
    return v;
}

}  // namespace

void delta_sq_lanes8(float* lanes, const void* x, QType tx, const void* base, QType tb, int64_t n) {
    for (int64_t i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) {
            float d = element(x, tx, i + j);
            if (base) d = d - element(base, tb, i + j);
            const float sq = d * d;
            lanes[j] = lanes[j] + sq;
        }
}

void multislerp_from(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t begin, int64_t n) {
    const int N = a.n_models;
    std::vector<float> u(static_cast<size_t>(N));
    for (int64_t i = begin; i < n; ++i) {
        const float b = a.base ? element(a.base, a.base_type, i) : 0.0f;
        for (int m = 0; m < N; ++m) {
            float d = element(a.x[m], a.type[m], i);
            if (a.base) d = d - b;
            if (stage == SlerpStage::deltas) out[m][i] = d;
            else u[size_t(m)] = d / a.den[m];
        }
        if (stage == SlerpStage::deltas) continue;
        float mean = a.w[0] * u[0] + a.w[1] * u[1];
        for (int m = 2; m < N; ++m) mean = mean + a.w[m] * u[size_t(m)];
        if (stage == SlerpStage::mean) {
            out[0][i] = mean;
            continue;
        }
        const float mn = mean / a.mean_norm;
        if (stage == SlerpStage::dots) {
            for (int m = 0; m < N; ++m) out[m][i] = u[size_t(m)] * mn;
            continue;
        }
        float acc = (u[0] + -a.dots[0] * mn) * a.w[0];
        for (int m = 1; m < N; ++m) {
            const float t = u[size_t(m)] + -a.dots[m] * mn;
            acc = acc + a.w[m] * t;
        }
        if (stage == SlerpStage::tangent) {
            out[0][i] = acc;
            continue;
        }
        float r = (a.cos_tn * mn + a.sinc * acc) * a.avg_norm;
        if (a.base) r = r + b;
        if (stage == SlerpStage::tangent_result) {
            out[0][i] = acc;
            out[1][i] = r;
        } else {
            out[0][i] = r;
        }
    }
}

void multislerp(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t n) {
    multislerp_from(a, stage, out, 0, n);
}

void karcher_step_from(const KarcherArgs& a, float* m, int64_t off, int64_t begin, int64_t n) {
    for (int64_t i = begin; i < n; ++i) {
        const float mi = a.div != 0.0f ? m[i] / a.div : m[i];
        float tan = 0.0f;
        for (int p = 0; p < a.k; ++p) {
            const float u = element(a.x[p], a.type[p], off + i) / a.norm[p];
            const float dm = -a.dot[p] * mi;
            const float t = u + dm;
            const float ct = a.coef[p] * t;
            tan = tan + ct;
        }
        tan = tan / a.tn;
        const float c = a.cos_tn * mi;
        const float s = a.sin_tn * tan;
        m[i] = c + s;
    }
}

bool karcher_step(const KarcherArgs& a, float* m, int64_t off, int64_t n) {
    karcher_step_from(a, m, off, 0, n);
    return false;  // it divides: nothing to skip
}

float karcher_recip(float, QType) { return 0.0f; }  // the reference divides

}  // namespace ref

void fill_merge_more_ref(MergeKernels& k) {
    k.karcher_step = ref::karcher_step;
    k.karcher_recip = ref::karcher_recip;
    k.nearswap = ref::nearswap;
    k.ram = ref::ram;
    k.ram_counts = ref::ram_counts;
    k.variance = ref::variance;
    k.sce = ref::sce;
    k.max = ref::max;
    k.exp_sum = ref::exp_sum;
    k.kl_sum = ref::kl_sum;
    k.abs_scale = ref::abs_scale;
    k.keep_ge = ref::keep_ge;
    k.mul = ref::mul;
    k.sq_lanes8 = ref::sq_lanes8;
    k.delta_sq_lanes8 = ref::delta_sq_lanes8;
    k.sum_groups32 = ref::sum_groups32;
    k.multislerp = ref::multislerp;
}

}  // namespace llamix
