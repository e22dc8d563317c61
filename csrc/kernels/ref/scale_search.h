// The least-squares scale search shared by the reference quantizers that choose their scales
// (K-quants in kquant_ref.cpp, Q4_0 with a searched scale in quant_ref.cpp). Reference code only:
// no ISA folder includes it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace llamix {
namespace ref {

// Round to nearest (ties to even) by the 1.5 * 2^23 trick: exact for |v| < 2^22, which the clamp
// guarantees, and ~20x cheaper than a libm call in these search loops. NaN -> 0.
inline int nearest_int(float v) {
    if (!(v == v)) return 0;
    v = std::min(std::max(v, -4194303.0f), 4194303.0f);
    const float t = v + 12582912.0f;
    int32_t i;
    std::memcpy(&i, &t, 4);
    return (i & 0x007fffff) - 0x00400000;
}
inline int clampi(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }

// Round to nearest in float (ties to even) for |v| < 2^22: adding 1.5 * 2^23 leaves no fraction bits.
constexpr float kRoundMagic = 12582912.0f;
inline float round_clamp(float v, float lo, float hi) {
    return std::min(std::max((v + kRoundMagic) - kRoundMagic, lo), hi);
}

// Sums of q and q*x and q*q over n (a multiple of 8) elements for q = round_clamp(iscale * (x - x0)),
// in 4 lanes (GCC/Clang vector extensions: portable, and each lane's float operations are exactly
// the scalar ones, so the result does not depend on the target). Float lanes suffice: these sums
// only rank candidate scales.
typedef float f32x4 __attribute__((vector_size(16)));
struct QuantSums { float q = 0, qx = 0, qq = 0; };
inline QuantSums quant_sums(const float* x, int n, float iscale, float x0, float lo, float hi) {
    f32x4 q1 = {}, qx = {}, qq = {};
    const f32x4 vs = iscale - f32x4{}, v0 = x0 - f32x4{}, vlo = lo - f32x4{}, vhi = hi - f32x4{};
    const f32x4 magic = kRoundMagic - f32x4{};
    for (int i = 0; i < n; i += 4) {
        f32x4 xv;
        std::memcpy(&xv, x + i, sizeof(xv));
        f32x4 q = (vs * (xv - v0) + magic) - magic;
        q = q < vlo ? vlo : q;
        q = q > vhi ? vhi : q;
        q1 += q;
        qx += q * xv;
        qq += q * q;
    }
    QuantSums s;
    for (int j = 0; j < 4; ++j) { s.q += q1[j]; s.qx += qx[j]; s.qq += qq[j]; }
    return s;
}

// Fit x ~= s * q with q in [-nneg, npos] (a symmetric sub-block); s may be negative. Each
// candidate scale fixes the quants, which are refitted by least squares and re-rounded once
// (a Lloyd step); the candidate with the smallest squared error wins.
inline float fit_scale_sym(const float* x, int n, int nneg, int npos) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; ++i)
        if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); max = x[i]; }
    if (amax == 0.0f || !std::isfinite(amax)) return max / -nneg;
    // with the least-squares s = sqx / sq2 the error is sum x^2 - sqx^2 / sq2: maximise sqx^2 / sq2
    double best = -1.0;
    float best_s = max / -nneg;
    auto consider = [&](const QuantSums& q) {
        if (q.qq > 0 && double(q.qx) * q.qx / q.qq > best) { best = double(q.qx) * q.qx / q.qq; best_s = q.qx / q.qq; }
    };
    // the largest element on the -nneg side, then on the npos side of the grid
    // (a 0.2-wide grid with a Lloyd step reaches the brute-force optimum within 0.1 % on
    // Gaussian and heavy-tailed blocks; see tests/test_kquant.py)
    constexpr int kSteps = 13;
    for (int cand = 0; cand < 2 * kSteps; ++cand) {
        const float step = 0.2f * float(cand % kSteps - kSteps / 2);
        const float iscale = cand < kSteps ? -(nneg + step) / max : (npos + step) / max;
        const QuantSums q = quant_sums(x, n, iscale, 0.0f, float(-nneg), float(npos));
        consider(q);
        if (q.qx != 0) consider(quant_sums(x, n, q.qq / q.qx, 0.0f, float(-nneg), float(npos)));  // re-round
    }
    return best_s;
}

}  // namespace ref
}  // namespace llamix
