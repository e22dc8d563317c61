// Multi-SLERP's stages (kernels/merge.h, SlerpStage) over whole vectors, written once for the AVX2
// and AVX-512 builds: L is the ISA's lane type (V: the float vector, kWidth floats; load(p, type, i):
// elements i .. i + kWidth - 1 of an F32 / F16 / BF16 array as floats; store(p, v); set(x)). The
// arithmetic uses GCC's vector operators, one IEEE operation each (the build has
// -ffp-contract=off), in the reference's order; the tail (n % kWidth elements) is the reference's.
#pragma once
#include <memory>

#include "kernels/ref/merge_ref.h"

namespace llamix {
namespace x86 {

template <class L>
void multislerp_lanes(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t n) {
    using V = typename L::V;
    constexpr int W = L::kWidth;
    const int N = a.n_models;
    // per model: the weight, the denominator and -dot as vectors, and the current units
    struct PerModel {
        V w, den, neg_dot, u;
    };
    PerModel few[8];  // on the stack for up to 8 models: this runs once per block of ~1000 elements
    std::unique_ptr<PerModel[]> many(N > 8 ? new PerModel[size_t(N)] : nullptr);
    PerModel* const pm = N > 8 ? many.get() : few;
    for (int m = 0; m < N; ++m) {
        pm[size_t(m)].w = L::set(a.w[m]);
        pm[size_t(m)].den = L::set(a.den ? a.den[m] : 1.0f);
        pm[size_t(m)].neg_dot = L::set(a.dots ? -a.dots[m] : 0.0f);
    }
    const V mean_norm = L::set(a.mean_norm), cos_tn = L::set(a.cos_tn), sinc = L::set(a.sinc),
            avg_norm = L::set(a.avg_norm);
    int64_t i = 0;
    for (; i + W <= n; i += W) {
        const V b = a.base ? L::load(a.base, a.base_type, i) : L::set(0.0f);
        for (int m = 0; m < N; ++m) {
            V d = L::load(a.x[m], a.type[m], i);
            if (a.base) d = d - b;
            if (stage == SlerpStage::deltas) L::store(out[m] + i, d);
            else pm[size_t(m)].u = d / pm[size_t(m)].den;
        }
        if (stage == SlerpStage::deltas) continue;
        V mean = pm[0].w * pm[0].u + pm[1].w * pm[1].u;
        for (int m = 2; m < N; ++m) mean = mean + pm[size_t(m)].w * pm[size_t(m)].u;
        if (stage == SlerpStage::mean) {
            L::store(out[0] + i, mean);
            continue;
        }
        const V mn = mean / mean_norm;
        if (stage == SlerpStage::dots) {
            for (int m = 0; m < N; ++m) L::store(out[m] + i, pm[size_t(m)].u * mn);
            continue;
        }
        V acc = (pm[0].u + pm[0].neg_dot * mn) * pm[0].w;
        for (int m = 1; m < N; ++m) {
            const PerModel& p = pm[size_t(m)];
            acc = acc + p.w * (p.u + p.neg_dot * mn);
        }
        if (stage == SlerpStage::tangent) {
            L::store(out[0] + i, acc);
            continue;
        }
        V r = (cos_tn * mn + sinc * acc) * avg_norm;
        if (a.base) r = r + b;
        L::store(out[0] + i, r);
    }
    if (i < n) ref::multislerp_from(a, stage, out, i, n);
}

}  // namespace x86
}  // namespace llamix
