// Weighted low-bit quantizers (see kernels/quantize_lowbit.h). Our own search, written from the
// formats (ggml-common.h): each (sub-)block's scale (and min) is fitted by trying a grid of
// candidate scales, refitting each candidate's quants by weighted least squares and re-rounding
// once (a Lloyd step); the sub-block scales are then coded in few bits against an fp16
// super-block scale, and that super-block scale is refitted by least squares to the coded
// integers, keeping whichever is better. The objective everywhere is sum w_i (x_i - y_i)^2.
#include "kernels/quantize_lowbit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "common/fp16.h"
#include "kernels/ref/scale_search.h"

namespace llamix {
namespace lowbit {

namespace {


using ref::clampi;
using ref::nearest_int;

constexpr int kQK = 256;  // super-block
struct Ones {
    float v[kQK];
    Ones() { std::fill(v, v + kQK, 1.0f); }
};
const Ones kOnes;

// IQ4_NL / IQ4_XS code book (ggml's kvalues_iq4nl), ascending.
constexpr int8_t kIQ4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

inline float finite_or_zero(float v) { return std::isfinite(v) ? v : 0.0f; }
inline uint16_t to_half(float v) { return fp32_to_fp16(finite_or_zero(v)); }

// The weights of a block: the importance slice, or ones where none is given or it is all zero.
const float* block_weights(const float* importance, int64_t offset, int n) {
    if (importance == nullptr) return kOnes.v;
    const float* w = importance + offset;
    for (int i = 0; i < n; ++i)
        if (w[i] > 0) return w;
    return kOnes.v;
}

// ---- grids: value(q) and the nearest q to a value -------------------------------------------

struct UniformGrid {  // q in [lo, hi], value q; candidates: the ends +- step * (0..steps)
    int lo, hi;
    float step;
    int steps;
    int sides;  // 1: only the largest |x| mapped to lo (the end with more levels), 2: to either end
    int nearest(float v) const { return clampi(nearest_int(v), lo, hi); }
    float value(int q) const { return float(q); }
    float lo_value() const { return float(lo); }
    float hi_value() const { return float(hi); }
    // value(nearest(v)) of 4 lanes; NaN -> lo
    ref::f32x4 values4(ref::f32x4 v) const {
        const ref::f32x4 vlo = float(lo) - ref::f32x4{}, vhi = float(hi) - ref::f32x4{};
        v = (v + ref::kRoundMagic) - ref::kRoundMagic;
        v = v > vlo ? v : vlo;
        return v < vhi ? v : vhi;
    }
    // sum w v x and sum w v v for v = value(nearest(iscale x)), in float lanes (only ranks candidates)
    void sums(const float* x, const float* w, int n, float iscale, float& svx, float& svv) const {
        float a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
        for (int i = 0; i < n; i += 4)
            for (int l = 0; l < 4; ++l) {
                const float v = ref::round_clamp(iscale * x[i + l], float(lo), float(hi));
                a[l] += w[i + l] * v * x[i + l];
                b[l] += w[i + l] * v * v;
            }
        svx = (a[0] + a[1]) + (a[2] + a[3]);
        svv = (b[0] + b[1]) + (b[2] + b[3]);
    }
};

// IQ4 nearest index by a table over ceil(2 v): every midpoint between code book values is a
// multiple of 1/2, so v > m exactly when ceil(2 v) > 2 m.
struct IQ4Table {
    static constexpr int kHalf = 300;
    uint8_t idx[2 * kHalf + 1];
    float value[2 * kHalf + 1];  // kIQ4Values[idx]
    IQ4Table() {
        for (int c = -kHalf; c <= kHalf; ++c) {
            int q = 0;
            for (int i = 0; i < 15; ++i) q += c > kIQ4Values[i] + kIQ4Values[i + 1];
            idx[c + kHalf] = static_cast<uint8_t>(q);
            value[c + kHalf] = float(kIQ4Values[q]);
        }
    }
};
const IQ4Table kIQ4Table;

struct IQ4Grid {  // q in [0, 16), value kIQ4Values[q]
    // ceil(2 v) clamped to the table, NaN -> 0, without a libm call (the rounding trick, then up)
    static float table_pos(float v) {
        const float t = std::min(std::max(2.0f * v, -float(IQ4Table::kHalf)), float(IQ4Table::kHalf));
        const float r = (t + ref::kRoundMagic) - ref::kRoundMagic;
        return t == t ? (r < t ? r + 1.0f : r) : 0.0f;
    }
    int nearest(float v) const { return kIQ4Table.idx[int(table_pos(v)) + IQ4Table::kHalf]; }
    ref::f32x4 values4(ref::f32x4 v) const {
        using ref::f32x4;
        const f32x4 lim = float(IQ4Table::kHalf) - f32x4{};
        f32x4 t = 2.0f * v;
        t = t > -lim ? t : -lim;  // also NaN -> -lim
        t = t < lim ? t : lim;
        f32x4 r = (t + ref::kRoundMagic) - ref::kRoundMagic;
        r = r < t ? r + 1.0f : r;
        f32x4 out;
        for (int u = 0; u < 4; ++u) out[u] = kIQ4Table.value[int(r[u]) + IQ4Table::kHalf];
        return out;
    }
    float value(int q) const { return float(kIQ4Values[q]); }
    float lo_value() const { return float(kIQ4Values[0]); }
    float hi_value() const { return float(kIQ4Values[15]); }
    float step = 2.0f;
    int steps = 4;
    int sides = 2;
    void sums(const float* x, const float* w, int n, float iscale, float& svx, float& svv) const {
        float a[4] = {0, 0, 0, 0}, b[4] = {0, 0, 0, 0};
        for (int i = 0; i < n; i += 4)
            for (int l = 0; l < 4; ++l) {
                const float v = value(nearest(iscale * x[i + l]));
                a[l] += w[i + l] * v * x[i + l];
                b[l] += w[i + l] * v * v;
            }
        svx = (a[0] + a[1]) + (a[2] + a[3]);
        svv = (b[0] + b[1]) + (b[2] + b[3]);
    }
};

// ---- sub-block fits ---------------------------------------------------------------------------

// The element of largest magnitude (the positive one on a tie), by a max and a min that vectorize.
inline float signed_absmax(const float* x, int n) {
    float hi = 0.0f, lo = 0.0f;
    for (int i = 0; i < n; ++i) {
        hi = std::max(hi, x[i]);
        lo = std::min(lo, x[i]);
    }
    return hi >= -lo ? hi : lo;
}

// x ~= s * value(q): the s minimising sum w (x - s value(q))^2 over a grid of candidates (the
// largest |x| mapped near each end of the grid), the best refitted and re-rounded twice (Lloyd
// steps). Returns s (0 for an all-zero block).
template <class Grid>
float fit_scale(const float* x, const float* w, int n, const Grid& g) {
    const float mx = signed_absmax(x, n), amax = std::fabs(mx);
    if (!(amax > 0.0f) || !std::isfinite(amax)) return 0.0f;
    // the least-squares s = svx / svv leaves the error sum w x^2 - svx^2 / svv: the best candidate
    // has the largest svx^2 / svv, compared by cross-multiplying (a division per candidate stalls)
    float bvx = 0.0f, bvv = 0.0f;  // bvv == 0: no candidate yet
    auto consider = [&](float iscale) {
        float svx, svv;
        g.sums(x, w, n, iscale, svx, svv);
        if (svv > 0 && (bvv == 0.0f || double(svx) * svx * bvv > double(bvx) * bvx * svv)) {
            bvx = svx;
            bvv = svv;
            return true;
        }
        return false;
    };
    for (int side = 0; side < g.sides; ++side)
        for (int step = -g.steps; step <= g.steps; ++step)
            consider(((side == 0 ? g.lo_value() : g.hi_value()) + g.step * float(step)) / mx);
    for (int it = 0; it < 2 && bvv > 0.0f && bvx != 0.0f; ++it)
        if (!consider(bvv / bvx)) break;
    return bvv > 0.0f ? bvx / bvv : mx / g.lo_value();
}

// Weighted sums of q, q*q and q*x over n (a multiple of 4) elements for
// q = round_clamp(iscale * (x - x0), 0, qmax), in 4 float lanes (GCC/Clang vector extensions:
// portable, and each lane's operations are the scalar ones). Float suffices: they rank candidates.
struct WeightedQuantSums { float q = 0, qq = 0, qx = 0; };
inline WeightedQuantSums weighted_quant_sums(const float* x, const float* w, int n, float iscale, float x0, float qmax) {
    using ref::f32x4;
    f32x4 aq = {}, aqq = {}, aqx = {};
    const f32x4 vs = iscale - f32x4{}, v0 = x0 - f32x4{}, vhi = qmax - f32x4{}, zero = {};
    const f32x4 magic = ref::kRoundMagic - f32x4{};
    for (int i = 0; i < n; i += 4) {
        f32x4 xv, wv;
        std::memcpy(&xv, x + i, sizeof(xv));
        std::memcpy(&wv, w + i, sizeof(wv));
        f32x4 q = (vs * (xv - v0) + magic) - magic;
        q = q > zero ? q : zero;  // also NaN -> 0
        q = q < vhi ? q : vhi;
        const f32x4 wq = wv * q;
        aq += wq;
        aqq += wq * q;
        aqx += wq * xv;
    }
    WeightedQuantSums s;
    s.q = (aq[0] + aq[1]) + (aq[2] + aq[3]);
    s.qq = (aqq[0] + aqq[1]) + (aqq[2] + aqq[3]);
    s.qx = (aqx[0] + aqx[1]) + (aqx[2] + aqx[3]);
    return s;
}

// fit_scale on a uniform grid for 4 consecutive sub-blocks of n (<= 32, a multiple of 4) elements
// at once, one per float lane (no horizontal sums in the candidate loop): the same candidates,
// Lloyd steps and choice per sub-block as fit_scale.
template <class Grid>
void fit_scale_x4(const float* x, const float* w, int n, const Grid& g, float* s_out) {
    using ref::f32x4;
    f32x4 xt[32], wt[32];  // element i of the 4 sub-blocks
    f32x4 hi = {}, lo = {};
    for (int i = 0; i < n; ++i) {
        for (int u = 0; u < 4; ++u) { xt[i][u] = x[u * n + i]; wt[i][u] = w[u * n + i]; }
        hi = hi > xt[i] ? hi : xt[i];
        lo = lo < xt[i] ? lo : xt[i];
    }
    const f32x4 mx = hi >= -lo ? hi : lo;  // the element of largest magnitude, positive on a tie
    const f32x4 zero = {};
    f32x4 bvx = {}, bvv = {}, best = {};  // best = bvx^2 / bvv; bvv == 0: none yet
    auto consider = [&](f32x4 iscale) {
        f32x4 svx = {}, svv = {};
        for (int i = 0; i < n; ++i) {
            const f32x4 v = g.values4(iscale * xt[i]);  // NaN lanes (a zero mx) are discarded below
            const f32x4 wv = wt[i] * v;
            svx += wv * xt[i];
            svv += wv * v;
        }
        const f32x4 r = svv > zero ? svx * (svx / svv) : zero;
        const auto take = (svv > zero) & ((bvv == zero) | (r > best));
        bvx = take ? svx : bvx;
        bvv = take ? svv : bvv;
        best = take ? r : best;
    };
    for (int side = 0; side < g.sides; ++side)
        for (int step = -g.steps; step <= g.steps; ++step)
            consider(((side == 0 ? g.lo_value() : g.hi_value()) + g.step * float(step)) / mx);
    for (int it = 0; it < 2; ++it) {  // Lloyd steps (a lane that stops improving recomputes its best)
        const auto ok = (bvv > zero) & (bvx != zero);
        consider(ok ? bvv / (ok ? bvx : 1.0f - zero) : zero);
    }
    for (int u = 0; u < 4; ++u) {
        const float a = std::fabs(mx[u]);
        s_out[u] = !(a > 0.0f) || !std::isfinite(a) ? 0.0f : bvv[u] > 0.0f ? bvx[u] / bvv[u] : mx[u] / g.lo_value();
    }
}

// x ~= s * q + b with q in [0, nmax], s >= 0 (and b <= 0 when nonpos_b: K-quant mins are stored
// as non-negative offsets to subtract). Weighted least squares for (s, b) per candidate scale.
void fit_affine(const float* x, const float* w, int n, int nmax, bool nonpos_b, float& s_out, float& b_out) {
    float xmin = x[0], xmax = x[0];
    double sw = 0, sx = 0, sxx = 0;
    for (int i = 0; i < n; ++i) {
        xmin = std::min(xmin, x[i]);
        xmax = std::max(xmax, x[i]);
        sw += w[i];
        sx += double(w[i]) * x[i];
        sxx += double(w[i]) * x[i] * x[i];
    }
    if (nonpos_b) xmin = std::min(xmin, 0.0f);
    s_out = 0.0f;
    b_out = finite_or_zero(xmin);
    if (!(xmax > xmin) || !std::isfinite(xmax - xmin)) return;
    s_out = (xmax - xmin) / float(nmax);
    double best_err = INFINITY;
    // weighted least squares of x ~= s q + b for the quants of (s0, b0); returns the error
    auto refit = [&](float inv_s, float b0, float& s, float& b) {
        const WeightedQuantSums ws = weighted_quant_sums(x, w, n, inv_s, b0, float(nmax));
        const double sq = ws.q, sqq = ws.qq, sqx = ws.qx;
        const double det = sw * sqq - sq * sq;
        double ds, db;
        if (det > 1e-30 * sw * sqq) {
            ds = (sw * sqx - sq * sx) / det;
            db = (sqq * sx - sq * sqx) / det;
        } else {
            ds = 0; db = sw > 0 ? sx / sw : 0;
        }
        if (nonpos_b && db > 0) { db = 0; ds = sqq > 0 ? sqx / sqq : 0; }
        if (ds < 0) return double(INFINITY);
        s = float(ds);
        b = float(db);
        const double fs = s, fb = b;  // the error of the float values that will be used
        return fs * fs * sqq + 2 * fs * fb * sq + fb * fb * sw - 2 * fs * sqx - 2 * fb * sx + sxx;
    };
    const int nsteps = nmax <= 3 ? 10 : 6;
    const float dstep = nmax <= 3 ? 0.1f : 0.2f;
    for (int step = -nsteps; step <= nsteps; ++step) {
        const float iscale = (float(nmax) + dstep * float(step)) / (xmax - xmin);
        float s = 0.0f, b = 0.0f;
        const double err = refit(iscale, xmin, s, b);
        if (err < best_err) { best_err = err; s_out = s; b_out = b; }
    }
    for (int it = 0; it < 2 && s_out > 0; ++it) {  // Lloyd steps from the best
        float s2 = 0.0f, b2 = 0.0f;
        const double err = refit(1.0f / s_out, b_out, s2, b2);
        if (!(err < best_err)) break;
        best_err = err; s_out = s2; b_out = b2;
    }
}

// ---- super-blocks with coded sub-block scales ------------------------------------------------

// Symmetric sub-blocks (Q3_K, Q6_K, IQ4_XS): scale j is d * L[j], L in [lmin, lmax]. Quantizes
// x against the coded scales; returns the weighted error.
template <class Grid>
double quants_sym(const float* x, const float* w, int nsub, int sub, float d, const int* L, const Grid& g, int* q) {
    double err = 0;
    for (int j = 0; j < nsub; ++j) {
        const float se = d * float(L[j]);
        const float inv = se != 0.0f ? 1.0f / se : 0.0f;
        float e4[4] = {0, 0, 0, 0};  // float lanes: these errors only rank candidates
        for (int l = 0; l < sub; l += 4)
            for (int u = 0; u < 4; ++u) {
                const int i = j * sub + l + u;
                float v;
                if constexpr (std::is_same_v<Grid, UniformGrid>) {  // rounding in float lanes vectorizes
                    v = ref::round_clamp(x[i] * inv, float(g.lo), float(g.hi));
                    v = v == v ? v : 0.0f;  // NaN input: quant 0
                    q[i] = int(v);
                } else {
                    const int pos = int(IQ4Grid::table_pos(x[i] * inv)) + IQ4Table::kHalf;
                    q[i] = kIQ4Table.idx[pos];
                    v = kIQ4Table.value[pos];
                }
                const float e = x[i] - se * v;
                e4[u] += w[i] * e * e;
            }
        err += double((e4[0] + e4[1]) + (e4[2] + e4[3]));
    }
    return err;
}

// Fit each sub-block, code the scales as d * L (L in [lmin, lmax], d fp16), quantize, then refit
// d to the coded integers by least squares and keep the better. Returns fp16 d; fills L and q.
template <class Grid>
uint16_t code_sym(const float* x, const float* w, int nsub, int sub, const Grid& g, int lmin, int lmax,
                  int* L, int* q) {
    float s[16];
    float smax = 0.0f;
    for (int j = 0; j < nsub; ++j) {
        if (nsub % 4 == 0 && sub <= 32) {
            if (j % 4 == 0) fit_scale_x4(x + j * sub, w + j * sub, sub, g, s + j);
        } else {
            s[j] = fit_scale(x + j * sub, w + j * sub, sub, g);
        }
        if (std::fabs(s[j]) > std::fabs(smax)) smax = s[j];
    }
    // the largest scale takes the end of the integer range with more room
    const float d0 = lmin + lmax < 0 ? smax / float(lmin) : smax / float(lmax);
    uint16_t dh = to_half(d0);
    float d = fp16_to_fp32(dh);
    for (int j = 0; j < nsub; ++j) {
        L[j] = d != 0.0f ? clampi(nearest_int(s[j] / d), lmin, lmax) : 0;
        // the rounded integer, or a neighbour when its quants fit better
        double best = quants_sym(x + j * sub, w + j * sub, 1, sub, d, &L[j], g, q + j * sub);
        const int l0 = L[j];
        for (int dl = -1; dl <= 1 && d != 0.0f; dl += 2) {
            int l1 = clampi(l0 + dl, lmin, lmax), q1[kQK];
            const double e1 = quants_sym(x + j * sub, w + j * sub, 1, sub, d, &l1, g, q1);
            if (e1 < best) { best = e1; L[j] = l1; }
        }
    }
    double err = quants_sym(x, w, nsub, sub, d, L, g, q);
    for (int iter = 0; iter < 2 && d != 0.0f; ++iter) {
        double num = 0, den = 0;
        for (int j = 0; j < nsub; ++j)
            for (int l = 0; l < sub; ++l) {
                const int i = j * sub + l;
                const double a = double(L[j]) * g.value(q[i]);
                num += w[i] * a * x[i];
                den += w[i] * a * a;
            }
        if (den <= 0) break;
        const uint16_t dh2 = to_half(float(num / den));
        int q2[kQK];
        const double err2 = quants_sym(x, w, nsub, sub, fp16_to_fp32(dh2), L, g, q2);
        if (!(err2 < err)) break;
        err = err2;
        dh = dh2;
        d = fp16_to_fp32(dh2);
        std::memcpy(q, q2, sizeof(int) * nsub * sub);
    }
    return dh;
}

// ---- Q3_K with an importance matrix: the scales searched jointly --------------------------------
//
// Q3_K codes sub-block j's scale as d * L[j] (d fp16, L in [-32, 31]) over quants in [-4, 3]. At a
// given scale the nearest quants are optimal, so the error is sum_j E_j(d L[j]), E_j(s) sub-block
// j's error at scale s. With uneven weights E_j has several local minima, and the best coded L is
// not always the one nearest the sub-block's own best scale s_j: on TinyLlama-shaped weights with
// an imatrix, 7 % of the time it is not within 1 of s_j / d, mostly lying near the other sign's
// optimum (the largest |x| on the other end of [-4, 3]: about -4/3 s_j or -3/4 s_j) or near
// 3/4 s_j (the largest |x| clipped, when it weighs little). So each sub-block tries L within 1 of
// those four scales / d, for d = smax / -32 and smax / 31 (smax: the s_j of largest magnitude),
// then for the least-squares d of the better choice's integers. Measured on those matrices
// (docs/PERFORMANCE.md): 0.6 % less weighted error than code_sym's search at 1.8x its time; every
// L for each of 12 d gains 0.3 % more at 9x its time, every L over a dense grid of d 0.35 %.

// The four candidate scales of each sub-block for one super-block (see above).
struct Q3Candidates {
    float s[4][16];
    float smax = 0.0f;
};

// The L of least error for one sub-block at super-block scale d among ls[0..n) (n a multiple of
// 4), 4 per vector (ties: the first). Returns the error (float lanes: it ranks candidates).
inline float q3_best_level(const float* x, const float* w, float d, const int* ls, int n, int& best_l) {
    using ref::f32x4;
    const f32x4 lo = -4.0f - f32x4{}, hi = 3.0f - f32x4{}, magic = ref::kRoundMagic - f32x4{};
    float best = INFINITY;
    best_l = ls[0];
    for (int k0 = 0; k0 < n; k0 += 4) {
        f32x4 se, inv;
        for (int u = 0; u < 4; ++u) {
            se[u] = d * float(ls[k0 + u]);
            inv[u] = se[u] != 0.0f ? 1.0f / se[u] : 0.0f;
        }
        f32x4 acc = {};
        for (int i = 0; i < 16; ++i) {
            f32x4 v = (x[i] * inv + magic) - magic;
            v = v > lo ? v : lo;  // also NaN -> lo
            v = v < hi ? v : hi;
            const f32x4 e = x[i] - se * v;
            acc += w[i] * (e * e);
        }
        for (int u = 0; u < 4; ++u)
            if (acc[u] < best) { best = acc[u]; best_l = ls[k0 + u]; }
    }
    return best;
}

// For the fp16 d `dh`, each sub-block's best L within 1 of its candidate scales / d. Fills L and
// q (in [-4, 3]); returns the weighted error.
double q3_levels(const float* x, const float* w, const Q3Candidates& c, uint16_t dh, int* L, int* q) {
    const float d = fp16_to_fp32(dh);
    double err = 0;
    for (int j = 0; j < 16; ++j) {
        int ls[12], n = 0;
        for (int k = 0; k < 4; ++k) {
            const int l0 = clampi(nearest_int(c.s[k][j] / d), -32, 31);
            for (int l = std::max(-32, l0 - 1); l <= std::min(31, l0 + 1); ++l) {
                bool seen = false;
                for (int m = 0; m < n; ++m) seen |= ls[m] == l;
                if (!seen) ls[n++] = l;
            }
        }
        while (n % 4 != 0) { ls[n] = ls[n - 1]; ++n; }
        err += q3_best_level(x + 16 * j, w + 16 * j, d, ls, n, L[j]);
        const float se = d * float(L[j]), inv = se != 0.0f ? 1.0f / se : 0.0f;
        for (int i = 16 * j; i < 16 * j + 16; ++i) {
            const float v = ref::round_clamp(x[i] * inv, -4.0f, 3.0f);
            q[i] = v == v ? int(v) : -4;
        }
    }
    return err;
}

// Returns fp16 d; fills L[16] and q[256] (quants in [-4, 3]).
uint16_t q3_K_joint(const float* x, const float* w, int* L, int* q) {
    Q3Candidates c;
    for (int j = 0; j < 16; j += 4) fit_scale_x4(x + 16 * j, w + 16 * j, 16, UniformGrid{-4, 3, 0.2f, 5, 2}, c.s[0] + j);
    for (int j = 0; j < 16; ++j) {
        c.s[1][j] = c.s[0][j] * (-4.0f / 3.0f);
        c.s[2][j] = c.s[0][j] * -0.75f;
        c.s[3][j] = c.s[0][j] * 0.75f;
        if (std::fabs(c.s[0][j]) > std::fabs(c.smax)) c.smax = c.s[0][j];
    }
    std::fill(L, L + 16, 0);
    std::fill(q, q + kQK, 0);
    if (!(c.smax != 0.0f) || !std::isfinite(c.smax)) return 0;
    int Lt[16], qt[kQK];
    double best_err = INFINITY;
    uint16_t best_dh = 0;
    auto consider = [&](float d) {
        const uint16_t dh = to_half(d);
        const float df = fp16_to_fp32(dh);
        if (!(df != 0.0f) || !std::isfinite(df)) return;
        const double e = q3_levels(x, w, c, dh, Lt, qt);
        if (!(e < best_err)) return;
        best_err = e;
        best_dh = dh;
        std::memcpy(L, Lt, sizeof(Lt));
        std::memcpy(q, qt, sizeof(qt));
    };
    consider(c.smax / -32.0f);
    consider(c.smax / 31.0f);
    if (!(best_err < INFINITY)) return 0;
    double num = 0, den = 0;  // the least-squares d for the chosen integers
    for (int i = 0; i < kQK; ++i) {
        const double a = double(L[i / 16]) * q[i];
        num += w[i] * a * x[i];
        den += w[i] * a * a;
    }
    if (den > 0) consider(float(num / den));
    return best_dh;
}

// Affine sub-blocks (Q2_K, Q4_K, Q5_K): y = d * sc[j] * q - dmin * mn[j], sc and mn in [0, lmax].
double quants_affine(const float* x, const float* w, int nsub, int sub, int nmax, float d, float dmin, const int* sc,
                     const int* mn, int* q) {
    double err = 0;
    for (int j = 0; j < nsub; ++j) {
        const float se = d * float(sc[j]), me = dmin * float(mn[j]);
        const float inv = se > 0.0f ? 1.0f / se : 0.0f;
        float e4[4] = {0, 0, 0, 0};  // float lanes: these errors only rank candidates
        for (int l = 0; l < sub; l += 4)
            for (int u = 0; u < 4; ++u) {
                const int i = j * sub + l + u;
                q[i] = int(ref::round_clamp((x[i] + me) * inv, 0.0f, float(nmax)));
                const float e = x[i] - (se * float(q[i]) - me);
                e4[u] += w[i] * e * e;
            }
        err += double((e4[0] + e4[1]) + (e4[2] + e4[3]));
    }
    return err;
}

// Fit each sub-block's (scale, min), code both in [0, lmax] against fp16 d and dmin, quantize,
// then refit (d, dmin) jointly to the coded integers and keep the better.
void code_affine(const float* x, const float* w, int nsub, int sub, int nmax, int lmax, uint16_t& dh, uint16_t& dminh,
                 int* sc, int* mn, int* q) {
    float s[16], m[16], smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < nsub; ++j) {
        float b = 0.0f;
        fit_affine(x + j * sub, w + j * sub, sub, nmax, true, s[j], b);
        m[j] = -b;
        smax = std::max(smax, s[j]);
        mmax = std::max(mmax, m[j]);
    }
    dh = to_half(smax / float(lmax));
    dminh = to_half(mmax / float(lmax));
    float d = fp16_to_fp32(dh), dmin = fp16_to_fp32(dminh);
    for (int j = 0; j < nsub; ++j) {
        const int s0 = d > 0 ? clampi(nearest_int(s[j] / d), 0, lmax) : 0;
        const int m0 = dmin > 0 ? clampi(nearest_int(m[j] / dmin), 0, lmax) : 0;
        // the rounded integers, or neighbours when their quants fit better
        double best = INFINITY;
        for (int a = std::max(0, s0 - 1); a <= std::min(lmax, s0 + 1); ++a)
            for (int b = std::max(0, m0 - 1); b <= std::min(lmax, m0 + 1); ++b) {
                int q1[kQK];
                const double e1 = quants_affine(x + j * sub, w + j * sub, 1, sub, nmax, d, dmin, &a, &b, q1);
                if (e1 < best) { best = e1; sc[j] = a; mn[j] = b; }
            }
    }
    double err = quants_affine(x, w, nsub, sub, nmax, d, dmin, sc, mn, q);
    for (int iter = 0; iter < 2; ++iter) {
        // x ~= d * a - dmin * c with a = sc q, c = mn: 2x2 weighted normal equations
        // per sub-block float lanes over its elements (sums of w q, w q q, w q x, w, w x), then
        // scaled by sc[j] and mn[j] and added in double
        double saa = 0, sac = 0, scc = 0, sax = 0, scx = 0;
        for (int j = 0; j < nsub; ++j) {
            float a4[5][4] = {};
            for (int l = 0; l < sub; l += 4)
                for (int u = 0; u < 4; ++u) {
                    const int i = j * sub + l + u;
                    const float qf = float(q[i]), wq = w[i] * qf;
                    a4[0][u] += wq; a4[1][u] += wq * qf; a4[2][u] += wq * x[i];
                    a4[3][u] += w[i]; a4[4][u] += w[i] * x[i];
                }
            double t[5];
            for (int k = 0; k < 5; ++k) t[k] = double((a4[k][0] + a4[k][1]) + (a4[k][2] + a4[k][3]));
            const double a = sc[j], c = mn[j];
            saa += a * a * t[1]; sac += a * c * t[0]; scc += c * c * t[3];
            sax += a * t[2]; scx += c * t[4];
        }
        const double det = saa * scc - sac * sac;
        double nd, ndmin;
        if (scc > 0 && det > 1e-12 * saa * scc) {
            nd = (sax * scc - scx * sac) / det;
            ndmin = -(saa * scx - sac * sax) / det;
        } else if (saa > 0) {
            nd = sax / saa; ndmin = 0;
        } else {
            break;
        }
        if (nd < 0 || ndmin < 0) break;
        const uint16_t dh2 = to_half(float(nd)), dminh2 = to_half(float(ndmin));
        int q2[kQK];
        const double err2 = quants_affine(x, w, nsub, sub, nmax, fp16_to_fp32(dh2), fp16_to_fp32(dminh2), sc, mn, q2);
        if (!(err2 < err)) break;
        err = err2;
        dh = dh2;
        dminh = dminh2;
        std::memcpy(q, q2, sizeof(int) * nsub * sub);
    }
}

// ---- block writers ------------------------------------------------------------------------

struct BlockQ4_0 { uint16_t d; uint8_t qs[16]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[16]; };
struct BlockQ2_K { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; };
struct BlockQ6_K { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };
struct BlockIQ4_NL { uint16_t d; uint8_t qs[16]; };
struct BlockIQ4_XS { uint16_t d; uint16_t scales_h; uint8_t scales_l[4]; uint8_t qs[128]; };
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24, "block size");
static_assert(sizeof(BlockQ4_1) == 20 && sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110, "block size");
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210, "block size");
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136, "block size");

// ggml's reference Q4_1 (min/max, truncating rounding): the bytes gguf.quants writes.
void q4_1_reference(const float* x, BlockQ4_1& y) {
    float mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < 32; ++i) { mn = std::min(mn, x[i]); mx = std::max(mx, x[i]); }
    const float d = (mx - mn) / 15.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y.d = fp32_to_fp16(d);
    y.m = fp32_to_fp16(mn);
    for (int j = 0; j < 16; ++j) {
        const float a = (x[j] - mn) * id + 0.5f, b = (x[j + 16] - mn) * id + 0.5f;
        const int qa = std::min(15, int(a)), qb = std::min(15, int(b));  // truncation, as ggml
        y.qs[j] = static_cast<uint8_t>(std::max(qa, 0) | (std::max(qb, 0) << 4));
    }
}

void q4_1_weighted(const float* x, const float* w, BlockQ4_1& y) {
    float s = 0.0f, b = 0.0f;
    fit_affine(x, w, 32, 15, false, s, b);
    y.d = to_half(s);
    y.m = to_half(b);
    const float d = fp16_to_fp32(y.d), m = fp16_to_fp32(y.m);
    const float inv = d > 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; ++j) {
        const int qa = clampi(nearest_int((x[j] - m) * inv), 0, 15), qb = clampi(nearest_int((x[j + 16] - m) * inv), 0, 15);
        y.qs[j] = static_cast<uint8_t>(qa | (qb << 4));
    }
}

// Q4_0 / Q5_0 (weighted only: the unweighted ones are ggml's reference, kernels/quant.h):
// x = d * q on [-8, 7] / [-16, 15], stored with an offset of 8 / 16.
template <int kLo>
void sym32(const float* x, const float* w, uint16_t& dh, int* q) {
    dh = to_half(fit_scale(x, w, 32, UniformGrid{kLo, -kLo - 1, 0.25f, 3, 2}));
    const float d = fp16_to_fp32(dh), inv = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 32; ++i) q[i] = clampi(nearest_int(x[i] * inv), kLo, -kLo - 1) - kLo;
}

void q4_0(const float* x, const float* w, BlockQ4_0& y) {
    int q[32];
    sym32<-8>(x, w, y.d, q);
    for (int j = 0; j < 16; ++j) y.qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}

// Q5_0 / Q5_1: low nibbles as Q4_0, bit 4 of element j in bit j of qh (little-endian u32)
void pack_q5(const int* q, uint8_t* qh, uint8_t* qs) {
    uint32_t h = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        h |= uint32_t(q[j] >> 4) << j;
        h |= uint32_t(q[j + 16] >> 4) << (j + 16);
    }
    for (int b = 0; b < 4; ++b) qh[b] = static_cast<uint8_t>(h >> (8 * b));
}

void q5_0(const float* x, const float* w, BlockQ5_0& y) {
    int q[32];
    sym32<-16>(x, w, y.d, q);
    pack_q5(q, y.qh, y.qs);
}

void q5_1(const float* x, const float* w, BlockQ5_1& y) {
    float s = 0.0f, b = 0.0f;
    fit_affine(x, w, 32, 31, false, s, b);
    y.d = to_half(s);
    y.m = to_half(b);
    const float d = fp16_to_fp32(y.d), m = fp16_to_fp32(y.m), inv = d > 0.0f ? 1.0f / d : 0.0f;
    int q[32];
    for (int i = 0; i < 32; ++i) q[i] = clampi(nearest_int((x[i] - m) * inv), 0, 31);
    pack_q5(q, y.qh, y.qs);
}

void q2_K(const float* x, const float* w, BlockQ2_K& y) {
    int sc[16], mn[16], q[kQK];
    code_affine(x, w, 16, 16, 3, 15, y.d, y.dmin, sc, mn, q);
    for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<uint8_t>(sc[j] | (mn[j] << 4));
    std::memset(y.qs, 0, sizeof(y.qs));
    // element 128 n + 32 j + l: bits 2j of qs[32 n + l]
    for (int e = 0; e < kQK; ++e)
        y.qs[32 * (e / 128) + e % 32] = static_cast<uint8_t>(y.qs[32 * (e / 128) + e % 32] | (q[e] << (2 * ((e % 128) / 32))));
}

// Q3_K: d * L[j] * q, L in [-32, 31] stored + 32 in 6 bits, q in [-4, 3] stored + 4 in 2 + 1 bits.
void pack_q3_K(const int* L, const int* q, BlockQ3_K& y) {
    std::memset(y.scales, 0, sizeof(y.scales));
    for (int j = 0; j < 16; ++j) {
        const int ls = L[j] + 32;
        if (j < 8) y.scales[j] = static_cast<uint8_t>(ls & 0xF);
        else y.scales[j - 8] = static_cast<uint8_t>(y.scales[j - 8] | ((ls & 0xF) << 4));
        y.scales[8 + j % 4] = static_cast<uint8_t>(y.scales[8 + j % 4] | ((ls >> 4) << (2 * (j / 4))));
    }
    std::memset(y.qs, 0, sizeof(y.qs));
    std::memset(y.hmask, 0, sizeof(y.hmask));
    for (int e = 0; e < kQK; ++e) {
        const int u = q[e] + 4, n = e / 128, j = (e % 128) / 32, l = e % 32;
        y.qs[32 * n + l] = static_cast<uint8_t>(y.qs[32 * n + l] | ((u & 3) << (2 * j)));
        if (u & 4) y.hmask[l] = static_cast<uint8_t>(y.hmask[l] | (1 << (4 * n + j)));
    }
}

// Without importance: the largest |x| at either end of [-4, 3] (llama.cpp's search puts it at -4).
void q3_K(const float* x, const float* w, BlockQ3_K& y) {
    int L[16], q[kQK];
    y.d = code_sym(x, w, 16, 16, UniformGrid{-4, 3, 0.2f, 5, 2}, -32, 31, L, q);
    pack_q3_K(L, q, y);
}

// With importance: the joint search above (its weighted error 0.990x llama.cpp's on TinyLlama-
// shaped matrices, where code_sym's search tied at 0.996x; without importance that search is
// already 0.91x llama.cpp's and the joint one gains nothing: measured 0.1 %).
void q3_K_weighted(const float* x, const float* w, BlockQ3_K& y) {
    int L[16], q[kQK];
    y.d = q3_K_joint(x, w, L, q);
    pack_q3_K(L, q, y);
}

// Q4_K / Q5_K 12-byte field: 8 scales and 8 mins of 6 bits.
void pack_k4_scales(const int* sc, const int* mn, uint8_t* s) {
    for (int j = 0; j < 4; ++j) {
        s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
        s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
}

void q4_K(const float* x, const float* w, BlockQ4_K& y) {
    int sc[8], mn[8], q[kQK];
    code_affine(x, w, 8, 32, 15, 63, y.d, y.dmin, sc, mn, q);
    pack_k4_scales(sc, mn, y.scales);
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l) y.qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

void q5_K(const float* x, const float* w, BlockQ5_K& y) {
    int sc[8], mn[8], q[kQK];
    code_affine(x, w, 8, 32, 31, 63, y.d, y.dmin, sc, mn, q);
    pack_k4_scales(sc, mn, y.scales);
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l)
            y.qs[32 * c + l] = static_cast<uint8_t>((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
    std::memset(y.qh, 0, sizeof(y.qh));
    for (int j = 0; j < 8; ++j)
        for (int l = 0; l < 32; ++l) y.qh[l] = static_cast<uint8_t>(y.qh[l] | ((q[32 * j + l] >> 4) << j));
}

void q6_K(const float* x, const float* w, BlockQ6_K& y) {
    int L[16], q[kQK];
    y.d = code_sym(x, w, 16, 16, UniformGrid{-32, 31, 1.0f, 2, 1}, -127, 127, L, q);
    for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<int8_t>(L[j]);
    std::memset(y.ql, 0, sizeof(y.ql));
    std::memset(y.qh, 0, sizeof(y.qh));
    // element 128 h + 32 c + l: nibble c / 2 of ql[64 h + 32 (c % 2) + l], bits 2c of qh[32 h + l]
    for (int e = 0; e < kQK; ++e) {
        const int v = q[e] + 32, h = e / 128, c = (e % 128) / 32, l = e % 32;
        uint8_t& lo = y.ql[64 * h + 32 * (c % 2) + l];
        lo = static_cast<uint8_t>(lo | ((v & 0xF) << (4 * (c / 2))));
        y.qh[32 * h + l] = static_cast<uint8_t>(y.qh[32 * h + l] | ((v >> 4) << (2 * c)));
    }
}

void iq4_nl_quants(const float* x, float s, BlockIQ4_NL& y) {
    const IQ4Grid g;
    y.d = to_half(s);
    const float d = fp16_to_fp32(y.d);
    const float inv = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < 16; ++j)
        y.qs[j] = static_cast<uint8_t>(g.nearest(x[j] * inv) | (g.nearest(x[j + 16] * inv) << 4));
}

// A row of IQ4_NL blocks: scales fitted 4 blocks at a time (fit_scale_x4), the rest one by one.
void iq4_nl_row(const float* x, void* out, int64_t k, const float* importance) {
    auto* y = static_cast<BlockIQ4_NL*>(out);
    const IQ4Grid g;
    const int64_t nb = k / 32;
    int64_t b = 0;
    for (; b + 4 <= nb; b += 4) {
        float w4[128], s[4];
        for (int u = 0; u < 4; ++u) std::memcpy(w4 + 32 * u, block_weights(importance, (b + u) * 32, 32), 32 * sizeof(float));
        fit_scale_x4(x + b * 32, w4, 32, g, s);
        for (int u = 0; u < 4; ++u) iq4_nl_quants(x + (b + u) * 32, s[u], y[b + u]);
    }
    for (; b < nb; ++b)
        iq4_nl_quants(x + b * 32, fit_scale(x + b * 32, block_weights(importance, b * 32, 32), 32, g), y[b]);
}

void iq4_xs(const float* x, const float* w, BlockIQ4_XS& y) {
    int L[8], q[kQK];
    y.d = code_sym(x, w, 8, 32, IQ4Grid{}, -32, 31, L, q);
    y.scales_h = 0;
    std::memset(y.scales_l, 0, sizeof(y.scales_l));
    for (int j = 0; j < 8; ++j) {
        const int ls = L[j] + 32;
        y.scales_l[j / 2] = static_cast<uint8_t>(y.scales_l[j / 2] | ((ls & 0xF) << (4 * (j % 2))));
        y.scales_h = static_cast<uint16_t>(y.scales_h | ((ls >> 4) << (2 * j)));
        for (int l = 0; l < 16; ++l) y.qs[16 * j + l] = static_cast<uint8_t>(q[32 * j + l] | (q[32 * j + 16 + l] << 4));
    }
}

template <class Block, void (*Quantize)(const float*, const float*, Block&)>
void row(const float* x, void* out, int64_t k, const float* importance, int n) {
    auto* y = static_cast<Block*>(out);
    for (int64_t b = 0; b < k / n; ++b) Quantize(x + b * n, block_weights(importance, b * n, n), y[b]);
}

}  // namespace

bool supported(int type) { return block_elems(type) > 0; }

int64_t block_elems(int type) {
    switch (type) {
        case Q4_0: case Q5_0: case Q5_1: case Q4_1: case IQ4_NL: return 32;
        case Q2_K: case Q3_K: case Q4_K: case Q5_K: case Q6_K: case IQ4_XS: return kQK;
        default: return 0;
    }
}

int64_t block_bytes(int type) {
    switch (type) {
        case Q4_0: return sizeof(BlockQ4_0);
        case Q5_0: return sizeof(BlockQ5_0);
        case Q5_1: return sizeof(BlockQ5_1);
        case Q4_1: return sizeof(BlockQ4_1);
        case Q2_K: return sizeof(BlockQ2_K);
        case Q3_K: return sizeof(BlockQ3_K);
        case Q4_K: return sizeof(BlockQ4_K);
        case Q5_K: return sizeof(BlockQ5_K);
        case Q6_K: return sizeof(BlockQ6_K);
        case IQ4_NL: return sizeof(BlockIQ4_NL);
        case IQ4_XS: return sizeof(BlockIQ4_XS);
        default: return 0;
    }
}

// The weight of each element: importance * sqrt(sigma2 + x^2), sigma2 a mean square of the
// weights around it (the row's, the super-block's or the block's, doubled for some types), as
// llama.cpp's imatrix quantizers weight their error (ggml-quants.c, quantize_row_*_impl): the
// imatrix alone, the diagonal of the activations' second moments, ranks blocks worse for the
// model's output (measured: KL on qwen2.5-0.5B, docs/PERFORMANCE.md). Q6_K keeps the imatrix alone.
// `importance` null: unit importance (the no-imatrix weights of the types in default_weighted).
static void element_weights(int type, const float* x, int64_t k, const float* importance, float* w) {
    int64_t span = k;      // elements sigma2 is the mean square over
    float factor = 1.0f;
    switch (type) {
        case Q6_K: std::copy(importance, importance + k, w); return;
        case Q2_K: span = kQK; break;
        case Q3_K: case Q4_K: case Q5_K: case IQ4_XS: span = kQK; factor = 2.0f; break;
        case IQ4_NL: span = 32; factor = 2.0f; break;
        default: break;  // Q4_0, Q4_1, Q5_0, Q5_1: the whole row
    }
    for (int64_t b = 0; b < k; b += span) {
        float s2 = 0.0f;
        for (int64_t i = b; i < b + span; ++i) s2 += x[i] * x[i];
        s2 = factor * s2 / float(span);
        for (int64_t i = b; i < b + span; ++i)
            w[i] = (importance != nullptr ? importance[i] : 1.0f) * std::sqrt(s2 + x[i] * x[i]);
    }
}

// Without an importance matrix these types still weight each element by sqrt(sigma2 + x^2) (unit
// importance), as llama.cpp's reference quantizers weight theirs by |x|-like terms: on real
// weights (qwen2.5-0.5B) the error weighted by the true activations' second moments is then 4-11%
// lower than with unit weights, though the plain squared error rises (docs/PERFORMANCE.md).
static bool default_weighted(int type) {
    return type == Q4_K || type == Q5_K || type == IQ4_NL || type == IQ4_XS;
}

void quantize_row(int type, const float* x, void* y, int64_t k, const float* importance) {
    thread_local std::vector<float> weights;
    if (importance != nullptr || default_weighted(type)) {
        weights.resize(size_t(k));
        element_weights(type, x, k, importance, weights.data());
        importance = weights.data();
    }
    switch (type) {
        case Q4_1:
            if (importance == nullptr) {
                auto* b = static_cast<BlockQ4_1*>(y);
                for (int64_t i = 0; i < k / 32; ++i) q4_1_reference(x + 32 * i, b[i]);
            } else {
                row<BlockQ4_1, q4_1_weighted>(x, y, k, importance, 32);
            }
            return;
        case Q4_0: row<BlockQ4_0, q4_0>(x, y, k, importance, 32); return;
        case Q5_0: row<BlockQ5_0, q5_0>(x, y, k, importance, 32); return;
        case Q5_1: row<BlockQ5_1, q5_1>(x, y, k, importance, 32); return;
        case Q2_K: row<BlockQ2_K, q2_K>(x, y, k, importance, kQK); return;
        case Q3_K:
            if (importance == nullptr) row<BlockQ3_K, q3_K>(x, y, k, importance, kQK);
            else row<BlockQ3_K, q3_K_weighted>(x, y, k, importance, kQK);
            return;
        case Q4_K: row<BlockQ4_K, q4_K>(x, y, k, importance, kQK); return;
        case Q5_K: row<BlockQ5_K, q5_K>(x, y, k, importance, kQK); return;
        case Q6_K: row<BlockQ6_K, q6_K>(x, y, k, importance, kQK); return;
        case IQ4_NL: iq4_nl_row(x, y, k, importance); return;
        case IQ4_XS: row<BlockIQ4_XS, iq4_xs>(x, y, k, importance, kQK); return;
        default: return;
    }
}

}  // namespace lowbit
}  // namespace llamix
