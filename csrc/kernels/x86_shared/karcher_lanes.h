// The Karcher mean's iteration (kernels/merge.h, karcher_step) over whole vectors, written once for
// the AVX2 and AVX-512 builds: L is the ISA's lane type (as in multislerp_lanes.h, plus
// fmsub(a, b, c) = a b - c and fnmadd(a, b, c) = c - a b, each one rounding). The arithmetic uses
// GCC's vector operators, one IEEE operation each (the build has -ffp-contract=off), in the
// reference's order; the tail (n % kWidth elements) is the reference's.
//
// The units u = x / d of 16-bit inputs skip the divider when karcher_recip found an exact
// alternative for d: q = x r (r = 1 / d rounded), then u = q - (q d - x) r (Markstein's
// correction, two fused steps). It can miss x / d where the quotient is tiny (subnormal) or huge,
// or x is infinite; so it is used where |u| lies in [kUnitLo, kUnitHi] in every lane of every
// input (else that vector's units are divided), and karcher_recip_check compares it with x / d
// for all 65536 values of the type, bit for bit, wherever it would be used, before it is trusted.
// The bits are always the division's.
#pragma once
#include <cstdint>
#include <cstring>
#include <memory>

#include "kernels/ref/merge_ref.h"

namespace llamix {
namespace x86 {

constexpr uint32_t kUnitLo = 0x0d800000u;  // 2^-100
constexpr uint32_t kUnitHi = 0x71800000u;  // 2^100

template <class L>
inline typename L::V karcher_unit(typename L::V x, typename L::V d, typename L::V r) {
    const typename L::V q = x * r;
    return L::fnmadd(L::fmsub(q, d, x), r, q);
}

// 1 / d if karcher_unit(x, d, 1 / d) == x / d bit for bit for every value x of type t (F16, BF16)
// whose karcher_unit lies in [kUnitLo, kUnitHi] in magnitude, else 0.
template <class L>
float karcher_recip_check(float d, QType t) {
    using V = typename L::V;
    constexpr int W = L::kWidth;
    if (t != QType::F16 && t != QType::BF16) return 0.0f;
    const float r = 1.0f / d;
    if (!(r != 0.0f) || r - r != 0.0f) return 0.0f;  // d infinite, zero or NaN
    const V vd = L::set(d), vr = L::set(r);
    uint16_t x[2 * W];  // W values; the size of W floats, as L::load may read for F32
    float a[W], b[W];
    for (uint32_t base = 0; base < 65536; base += W) {
        for (int j = 0; j < W; ++j) x[j] = uint16_t(base + uint32_t(j));
        const V v = L::load(x, t, 0);
        L::store(a, v / vd);
        L::store(b, karcher_unit<L>(v, vd, vr));
        for (int j = 0; j < W; ++j) {
            uint32_t ba, bb;
            std::memcpy(&ba, a + j, 4);
            std::memcpy(&bb, b + j, 4);
            const uint32_t mag = bb & 0x7fffffffu;
            if (mag >= kUnitLo && mag <= kUnitHi && ba != bb) return 0.0f;
        }
    }
    return r;
}

// kAllFast: every input has a reciprocal; kDivide: a.div != 0 (no branch on either in the loop);
// kCheck: test every vector's units against [kUnitLo, kUnitHi] (else a.in_range said that every
// whole vector of this call passed that test before: the inputs and their norms do not change
// between iterations, so neither do the units). Returns whether every whole vector passed it.
template <class L, int kModels, bool kBF16, bool kAllFast, bool kDivide, bool kCheck>
bool karcher_loop(const KarcherArgs& a, float* m, int64_t off, int64_t n) {
    using V = typename L::V;
    constexpr int W = L::kWidth;
    const int K = kModels > 0 ? kModels : a.k;
    struct PerModel {
        const void* x;
        QType type;
        bool fast;
        V norm, recip, neg_dot, coef, u;
    };
    PerModel few[8];  // on the stack for up to 8 inputs
    std::unique_ptr<PerModel[]> many(K > 8 ? new PerModel[size_t(K)] : nullptr);
    PerModel* const pm = K > 8 ? many.get() : few;
    for (int p = 0; p < K; ++p) {
        const float r = a.recip ? a.recip[p] : 0.0f;
        pm[p].x = a.x[p];
        pm[p].type = kBF16 ? QType::BF16 : a.type[p];
        pm[p].fast = kAllFast || r != 0.0f;
        pm[p].norm = L::set(a.norm[p]);
        pm[p].recip = L::set(r);
        pm[p].neg_dot = L::set(-a.dot[p]);
        pm[p].coef = L::set(a.coef[p]);
    }
    const V div = L::set(a.div), tn = L::set(a.tn), cos_tn = L::set(a.cos_tn), sin_tn = L::set(a.sin_tn);
    bool any_fast = kAllFast;
    for (int p = 0; p < K; ++p) any_fast = any_fast || pm[p].fast;
    auto load = [&](int p, int64_t i) { return L::load(pm[p].x, kBF16 ? QType::BF16 : pm[p].type, i); };
    bool all_in = kAllFast;
    int64_t i = 0;
    if constexpr (!kCheck) {
        // Software-pipelined: the mean's division for group j + 2, the tangent of group j + 1, the
        // tangent's division and the store of group j in one step (the same operations on each
        // element). In the plain loop the two divisions sit on one long dependent chain per group,
        // whose waiting operations fill the scheduler before the next groups' loads can start.
        auto first = [&](int64_t j) {
            V v = L::load(m, QType::F32, j);
            if (kDivide) v = v / div;
            return v;
        };
        auto tangent = [&](int64_t j, V mi) {
            V tan = L::set(0.0f);
            for (int p = 0; p < K; ++p) {
                const V u = karcher_unit<L>(load(p, off + j), pm[p].norm, pm[p].recip);
                tan = tan + pm[p].coef * (u + pm[p].neg_dot * mi);
            }
            return tan;
        };
        auto last = [&](int64_t j, V mi, V tan) {
            tan = tan / tn;
            L::store(m + j, cos_tn * mi + sin_tn * tan);
        };
        if (n >= 2 * W) {
            V mi2 = first(0), tan2 = tangent(0, mi2), mi1 = first(W);
            for (i = 2 * W; i + W <= n; i += W) {
                const V mi0 = first(i);
                const V tan1 = tangent(i - W, mi1);
                last(i - 2 * W, mi2, tan2);
                mi2 = mi1, tan2 = tan1, mi1 = mi0;
            }
            last(i - 2 * W, mi2, tan2);
            last(i - W, mi1, tangent(i - W, mi1));
        }
    }
    for (; i + W <= n; i += W) {
        V mi = L::load(m, QType::F32, i);
        if (kDivide) mi = mi / div;
        if (!kCheck) {
            for (int p = 0; p < K; ++p) pm[p].u = karcher_unit<L>(load(p, off + i), pm[p].norm, pm[p].recip);
        } else if (kAllFast || any_fast) {
            typename L::I lo = L::abs_bits(L::set(1.0f)), hi = lo;
            for (int p = 0; p < K; ++p) {
                const V x = load(p, off + i);
                if (kAllFast || pm[p].fast) {
                    pm[p].u = karcher_unit<L>(x, pm[p].norm, pm[p].recip);
                    const typename L::I bits = L::abs_bits(pm[p].u);
                    lo = L::umin(lo, bits), hi = L::umax(hi, bits);
                } else {
                    pm[p].u = x / pm[p].norm;
                }
            }
            if (!L::inside(lo, hi, kUnitLo, kUnitHi)) {  // zeros, tiny or huge values: divide
                all_in = false;
                for (int p = 0; p < K; ++p) pm[p].u = load(p, off + i) / pm[p].norm;
            }
        } else {
            for (int p = 0; p < K; ++p) pm[p].u = load(p, off + i) / pm[p].norm;
        }
        V tan = L::set(0.0f);
        for (int p = 0; p < K; ++p) tan = tan + pm[p].coef * (pm[p].u + pm[p].neg_dot * mi);
        tan = tan / tn;
        L::store(m + i, cos_tn * mi + sin_tn * tan);
    }
    if (i < n) ref::karcher_step_from(a, m, off, i, n);
    return all_in;
}

template <class L, int kModels, bool kBF16>
bool karcher_pick(const KarcherArgs& a, float* m, int64_t off, int64_t n) {
    bool all_fast = a.recip != nullptr;
    for (int p = 0; p < a.k && all_fast; ++p) all_fast = a.recip[p] != 0.0f;
    if (all_fast && a.in_range) {
        if (a.div != 0.0f) return karcher_loop<L, kModels, kBF16, true, true, false>(a, m, off, n);
        return karcher_loop<L, kModels, kBF16, true, false, false>(a, m, off, n);
    }
    if (all_fast && a.div != 0.0f) return karcher_loop<L, kModels, kBF16, true, true, true>(a, m, off, n);
    if (all_fast) return karcher_loop<L, kModels, kBF16, true, false, true>(a, m, off, n);
    if (a.div != 0.0f) return karcher_loop<L, kModels, kBF16, false, true, true>(a, m, off, n);
    return karcher_loop<L, kModels, kBF16, false, false, true>(a, m, off, n);
}

template <class L>
bool karcher_lanes(const KarcherArgs& a, float* m, int64_t off, int64_t n) {
    bool bf16 = true;
    for (int p = 0; p < a.k; ++p) bf16 = bf16 && a.type[p] == QType::BF16;
    if (a.k == 3 && bf16) return karcher_pick<L, 3, true>(a, m, off, n);
    if (a.k == 2 && bf16) return karcher_pick<L, 2, true>(a, m, off, n);
    if (bf16) return karcher_pick<L, 0, true>(a, m, off, n);
    return karcher_pick<L, 0, false>(a, m, off, n);
}

}  // namespace x86
}  // namespace llamix
