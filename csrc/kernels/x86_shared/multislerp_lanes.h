// Multi-SLERP's stages (kernels/merge.h, SlerpStage) over whole vectors, written once for the AVX2
// and AVX-512 builds: L is the ISA's lane type (V: the float vector, kWidth floats; load(p, type, i):
// elements i .. i + kWidth - 1 of an F32 / F16 / BF16 array as floats; store(p, v); set(x)). The
// arithmetic uses GCC's vector operators, one IEEE operation each (the build has
// -ffp-contract=off), in the reference's order; the tail (n % kWidth elements) is the reference's.
//
// The loop is compiled for each stage, with or without a base, for two models (every per-model
// value in registers) or any number, and for bfloat16 inputs or any types, so that the inner loop
// has no branch on these.
#pragma once
#include <memory>

#include "kernels/ref/merge_ref.h"

namespace llamix {
namespace x86 {

template <class L, SlerpStage S, bool kBase, int kModels, bool kBF16>
void multislerp_loop(const MultislerpArgs& a, float* const* out, int64_t n) {
    using V = typename L::V;
    constexpr int W = L::kWidth;
    const int N = kModels > 0 ? kModels : a.n_models;
    auto load = [&](const void* p, QType type, int64_t i) { return L::load(p, kBF16 ? QType::BF16 : type, i); };
    // per model: the weight, the denominator and -dot as vectors, and the current units
    struct PerModel {
        V w, den, neg_dot, u;
    };
    PerModel few[8];  // on the stack for up to 8 models: this runs once per block of ~1000 elements
    std::unique_ptr<PerModel[]> many(N > 8 ? new PerModel[size_t(N)] : nullptr);
    PerModel* const pm = N > 8 ? many.get() : few;
    for (int m = 0; m < N; ++m) {
        pm[m].w = L::set(a.w[m]);
        pm[m].den = L::set(a.den ? a.den[m] : 1.0f);
        pm[m].neg_dot = L::set(a.dots ? -a.dots[m] : 0.0f);
    }
    const V mean_norm = L::set(a.mean_norm), cos_tn = L::set(a.cos_tn), sinc = L::set(a.sinc),
            avg_norm = L::set(a.avg_norm);
    // The arrays' addresses in locals: read through `a` and `out`, the compiler loads them again
    // after every store (a store to a float could, as far as it knows, change them), three
    // dependent loads ahead of each input's load on every step.
    const void* xp[8];
    QType xt[8];
    float* op[8];
    for (int m = 0; m < N && m < 8; ++m) {
        xp[m] = a.x[m];
        xt[m] = a.type[m];
        op[m] = (S == SlerpStage::deltas || S == SlerpStage::dots || m == 0 || (S == SlerpStage::tangent_result && m == 1))
                    ? out[m]
                    : nullptr;
    }
    const void* const bp = a.base;
    const QType bt = a.base_type;
    auto x_at = [&](int m) { return m < 8 ? xp[m] : a.x[m]; };
    auto type_at = [&](int m) { return m < 8 ? xt[m] : a.type[m]; };
    auto out_at = [&](int m) { return m < 8 ? op[m] : out[m]; };
    int64_t i = 0;
    for (; i + W <= n; i += W) {
        const V b = kBase ? load(bp, bt, i) : L::set(0.0f);
        for (int m = 0; m < N; ++m) {
            V d = load(x_at(m), type_at(m), i);
            if (kBase) d = d - b;
            if (S == SlerpStage::deltas) L::store(out_at(m) + i, d);
            else pm[m].u = d / pm[m].den;
        }
        if (S == SlerpStage::deltas) continue;
        V mean = pm[0].w * pm[0].u + pm[1].w * pm[1].u;
        for (int m = 2; m < N; ++m) mean = mean + pm[m].w * pm[m].u;
        if (S == SlerpStage::mean) {
            L::store(out_at(0) + i, mean);
            continue;
        }
        const V mn = mean / mean_norm;
        if (S == SlerpStage::dots) {
            for (int m = 0; m < N; ++m) L::store(out_at(m) + i, pm[m].u * mn);
            continue;
        }
        V acc = (pm[0].u + pm[0].neg_dot * mn) * pm[0].w;
        for (int m = 1; m < N; ++m) acc = acc + pm[m].w * (pm[m].u + pm[m].neg_dot * mn);
        if (S == SlerpStage::tangent) {
            L::store(out_at(0) + i, acc);
            continue;
        }
        V r = (cos_tn * mn + sinc * acc) * avg_norm;
        if (kBase) r = r + b;
        if (S == SlerpStage::tangent_result) {
            L::store(out_at(0) + i, acc);
            L::store(out_at(1) + i, r);
        } else {
            L::store(out_at(0) + i, r);
        }
    }
    if (i < n) ref::multislerp_from(a, S, out, i, n);
}

template <class L, SlerpStage S, bool kBase>
void multislerp_stage(const MultislerpArgs& a, float* const* out, int64_t n) {
    bool bf16 = !kBase || a.base_type == QType::BF16;
    for (int m = 0; m < a.n_models; ++m) bf16 = bf16 && a.type[m] == QType::BF16;
    if (a.n_models == 2 && bf16) return multislerp_loop<L, S, kBase, 2, true>(a, out, n);
    if (a.n_models == 2) return multislerp_loop<L, S, kBase, 2, false>(a, out, n);
    if (bf16) return multislerp_loop<L, S, kBase, 0, true>(a, out, n);
    multislerp_loop<L, S, kBase, 0, false>(a, out, n);
}

template <class L, SlerpStage S>
void multislerp_stage(const MultislerpArgs& a, float* const* out, int64_t n) {
    if (a.base) multislerp_stage<L, S, true>(a, out, n);
    else multislerp_stage<L, S, false>(a, out, n);
}

template <class L>
void multislerp_lanes(const MultislerpArgs& a, SlerpStage stage, float* const* out, int64_t n) {
    switch (stage) {
        case SlerpStage::deltas: return multislerp_stage<L, SlerpStage::deltas>(a, out, n);
        case SlerpStage::mean: return multislerp_stage<L, SlerpStage::mean>(a, out, n);
        case SlerpStage::dots: return multislerp_stage<L, SlerpStage::dots>(a, out, n);
        case SlerpStage::tangent: return multislerp_stage<L, SlerpStage::tangent>(a, out, n);
        case SlerpStage::result: return multislerp_stage<L, SlerpStage::result>(a, out, n);
        case SlerpStage::tangent_result: return multislerp_stage<L, SlerpStage::tangent_result>(a, out, n);
    }
}

}  // namespace x86
}  // namespace llamix
