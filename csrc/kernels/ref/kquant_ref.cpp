// Reference (scalar) K-quant kernels: THE SPEC for Q4_K / Q5_K / Q6_K in llamix.
// Formats: llama.cpp's k-quants (ggml-quants.c, PR #1684); dequantization follows gguf.quants
// operation by operation so the floats are bit-identical. The quantizers are our own: for each
// sub-block a grid of candidate scales is tried, the quants fixed by each are refitted by least
// squares, and the best (lowest squared error) is kept; the sub-block scales are then coded in
// 6 (Q4_K/Q5_K) or 8 (Q6_K) bits against fp16 super-block scales.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/fp16.h"
#include "kernels/kquant.h"

namespace llamix {
namespace ref {

namespace {

inline int nearest_int(float v) { return static_cast<int>(std::lround(v)); }  // half away from zero
inline int clampi(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }
inline float finite_or_zero(float v) { return std::isfinite(v) ? v : 0.0f; }

// Fit x ~= s * q - m with q in [0, nmax], s >= 0, m >= 0 (an asymmetric sub-block).
void fit_scale_min(const float* x, int n, int nmax, float& s_out, float& m_out) {
    float xmin = x[0], xmax = x[0];
    for (int i = 1; i < n; ++i) { xmin = std::min(xmin, x[i]); xmax = std::max(xmax, x[i]); }
    xmin = std::min(xmin, 0.0f);  // the min is stored as a non-negative offset
    if (!(xmax > xmin)) { s_out = 0.0f; m_out = -xmin; return; }
    float best_err = INFINITY, best_s = (xmax - xmin) / nmax, best_m = -xmin;
    int q[QK_K];
    for (int step = -10; step <= 10; ++step) {
        const float iscale = (nmax + 0.1f * step) / (xmax - xmin);
        double sq = 0, sq2 = 0, sx = 0, sqx = 0;
        for (int i = 0; i < n; ++i) {
            q[i] = clampi(nearest_int(iscale * (x[i] - xmin)), 0, nmax);
            sq += q[i]; sq2 += double(q[i]) * q[i]; sx += x[i]; sqx += double(q[i]) * x[i];
        }
        // least squares for (s, b) in x ~= s q + b, then b <= 0 enforced
        const double det = n * sq2 - sq * sq;
        if (det <= 0) continue;
        double s = (n * sqx - sq * sx) / det, b = (sq2 * sx - sq * sqx) / det;
        if (b > 0) { b = 0; s = sq2 > 0 ? sqx / sq2 : 0; }
        if (s < 0) continue;
        double err = 0;
        for (int i = 0; i < n; ++i) { const double e = s * q[i] + b - x[i]; err += e * e; }
        if (err < best_err) { best_err = float(err); best_s = float(s); best_m = float(-b); }
    }
    s_out = best_s;
    m_out = best_m;
}

// Fit x ~= s * q with q in [-nneg, npos] (a symmetric sub-block); s may be negative. Each
// candidate scale fixes the quants, which are refitted by least squares and re-rounded once
// (a Lloyd step); the candidate with the smallest squared error wins.
float fit_scale_sym(const float* x, int n, int nneg, int npos) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; ++i)
        if (std::fabs(x[i]) > amax) { amax = std::fabs(x[i]); max = x[i]; }
    if (amax == 0.0f || !std::isfinite(amax)) return max / -nneg;
    // with the least-squares s = sqx / sq2 the error is sum x^2 - sqx^2 / sq2: maximise sqx^2 / sq2
    auto fit = [&](float iscale, double& sqx, double& sq2) {
        sqx = 0; sq2 = 0;
        for (int i = 0; i < n; ++i) {
            const int q = clampi(nearest_int(iscale * x[i]), -nneg, npos);
            sqx += double(q) * x[i]; sq2 += double(q) * q;
        }
    };
    double best = -1.0;
    float best_s = max / -nneg;
    // the largest element on the -nneg side, then on the npos side of the grid
    for (int cand = 0; cand < 146; ++cand) {
        const int step = cand % 73 - 36;
        const float iscale = cand < 73 ? -(nneg + 0.1f * step) / max : (npos + 0.1f * step) / max;
        double sqx, sq2;
        fit(iscale, sqx, sq2);
        if (!(sq2 > 0)) continue;
        if (sqx * sqx / sq2 > best) { best = sqx * sqx / sq2; best_s = float(sqx / sq2); }
        fit(float(sq2 / sqx), sqx, sq2);  // re-round with the refitted scale
        if (sq2 > 0 && sqx * sqx / sq2 > best) { best = sqx * sqx / sq2; best_s = float(sqx / sq2); }
    }
    return best_s;
}

// Code 8 sub-block scales and mins in 6 bits each (Q4_K/Q5_K): fills d, dmin and scales[12],
// and the effective float scale and min of each sub-block.
void pack_scales_k4(const float* s, const float* m, uint16_t& d, uint16_t& dmin, uint8_t* scales,
                    float* s_eff, float* m_eff) {
    float smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; ++j) { smax = std::max(smax, s[j]); mmax = std::max(mmax, m[j]); }
    d = fp32_to_fp16(finite_or_zero(smax / 63.0f));
    dmin = fp32_to_fp16(finite_or_zero(mmax / 63.0f));
    const float dh = fp16_to_fp32(d), dminh = fp16_to_fp32(dmin);
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
        sc[j] = static_cast<uint8_t>(dh > 0 ? clampi(nearest_int(s[j] / dh), 0, 63) : 0);
        mn[j] = static_cast<uint8_t>(dminh > 0 ? clampi(nearest_int(m[j] / dminh), 0, 63) : 0);
    }
    for (int j = 0; j < 4; ++j) {
        scales[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
        scales[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
        scales[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
    }
    for (int j = 0; j < 8; ++j) {
        uint8_t a, b;
        kquant_scale_min(j, scales, a, b);
        s_eff[j] = dh * a;
        m_eff[j] = dminh * b;
    }
}

// Quants of one 256-block against the coded scales: q = round((x + m) / s) in [0, nmax].
void quants_k4(const float* x, const float* s_eff, const float* m_eff, int nmax, uint8_t* q) {
    for (int j = 0; j < 8; ++j)
        for (int l = 0; l < 32; ++l)
            q[32 * j + l] = static_cast<uint8_t>(
                s_eff[j] > 0 ? clampi(nearest_int((x[32 * j + l] + m_eff[j]) / s_eff[j]), 0, nmax) : 0);
}

}  // namespace

void dequantize_row_q4_K(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q4_K*>(in);
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        for (int j = 0; j < 8; ++j, y += 32) {
            uint8_t sc, m;
            kquant_scale_min(j, x[b].scales, sc, m);
            const float d1 = d * sc, m1 = dmin * m;
            const uint8_t* q = x[b].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; ++l) y[l] = d1 * float((q[l] >> shift) & 0xF) - m1;
        }
    }
}

void dequantize_row_q5_K(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q5_K*>(in);
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        for (int j = 0; j < 8; ++j, y += 32) {
            uint8_t sc, m;
            kquant_scale_min(j, x[b].scales, sc, m);
            const float d1 = d * sc, m1 = dmin * m;
            const uint8_t* q = x[b].qs + 32 * (j / 2);
            const int shift = 4 * (j % 2);
            for (int l = 0; l < 32; ++l) {
                const int v = ((q[l] >> shift) & 0xF) | (((x[b].qh[l] >> j) & 1) << 4);
                y[l] = d1 * float(v) - m1;
            }
        }
    }
}

// Q6_K: each half of 128 has ql[64], qh[32], 8 scales; element 32 c + l of the half (c = 0..3)
// takes the low or high nibble of ql[l + 32 (c % 2)] and bits 2c, 2c+1 of qh[l].
void dequantize_row_q6_K(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q6_K*>(in);
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d);
        for (int h = 0; h < 2; ++h, y += 128) {
            const uint8_t* ql = x[b].ql + 64 * h;
            const uint8_t* qh = x[b].qh + 32 * h;
            const int8_t* sc = x[b].scales + 8 * h;
            for (int c = 0; c < 4; ++c)
                for (int l = 0; l < 32; ++l) {
                    const int lo = (ql[l + 32 * (c % 2)] >> (4 * (c / 2))) & 0xF;
                    const int q = (lo | (((qh[l] >> (2 * c)) & 3) << 4)) - 32;
                    y[32 * c + l] = (d * float(sc[2 * c + l / 16])) * float(q);
                }
        }
    }
}

void quantize_row_q4_K(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q4_K*>(out);
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        float s[8], m[8], s_eff[8], m_eff[8];
        for (int j = 0; j < 8; ++j) fit_scale_min(x + 32 * j, 32, 15, s[j], m[j]);
        pack_scales_k4(s, m, y[b].d, y[b].dmin, y[b].scales, s_eff, m_eff);
        uint8_t q[QK_K];
        quants_k4(x, s_eff, m_eff, 15, q);
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l)
                y[b].qs[32 * c + l] = static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
}

void quantize_row_q5_K(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q5_K*>(out);
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        float s[8], m[8], s_eff[8], m_eff[8];
        for (int j = 0; j < 8; ++j) fit_scale_min(x + 32 * j, 32, 31, s[j], m[j]);
        pack_scales_k4(s, m, y[b].d, y[b].dmin, y[b].scales, s_eff, m_eff);
        uint8_t q[QK_K];
        quants_k4(x, s_eff, m_eff, 31, q);
        std::memset(y[b].qh, 0, sizeof(y[b].qh));
        for (int c = 0; c < 4; ++c)
            for (int l = 0; l < 32; ++l)
                y[b].qs[32 * c + l] = static_cast<uint8_t>((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4));
        for (int j = 0; j < 8; ++j)
            for (int l = 0; l < 32; ++l) y[b].qh[l] = static_cast<uint8_t>(y[b].qh[l] | ((q[32 * j + l] >> 4) << j));
    }
}

void quantize_row_q6_K(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q6_K*>(out);
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        float s[16], smax = 0.0f;
        for (int j = 0; j < 16; ++j) {
            s[j] = fit_scale_sym(x + 16 * j, 16, 32, 31);
            smax = std::max(smax, std::fabs(s[j]));
        }
        y[b].d = fp32_to_fp16(finite_or_zero(smax / 127.0f));
        const float dh = fp16_to_fp32(y[b].d);
        uint8_t q[QK_K];
        for (int j = 0; j < 16; ++j) {
            y[b].scales[j] = static_cast<int8_t>(dh > 0 ? clampi(nearest_int(s[j] / dh), -127, 127) : 0);
            const float se = dh * y[b].scales[j];
            for (int l = 0; l < 16; ++l)
                q[16 * j + l] = static_cast<uint8_t>(se != 0 ? clampi(nearest_int(x[16 * j + l] / se), -32, 31) + 32 : 32);
        }
        std::memset(y[b].qh, 0, sizeof(y[b].qh));
        for (int h = 0; h < 2; ++h)
            for (int c = 0; c < 4; ++c)
                for (int l = 0; l < 32; ++l) {
                    const uint8_t v = q[128 * h + 32 * c + l];
                    uint8_t& lo = y[b].ql[64 * h + l + 32 * (c % 2)];
                    lo = static_cast<uint8_t>(c < 2 ? (v & 0xF) : (lo | ((v & 0xF) << 4)));
                    y[b].qh[32 * h + l] = static_cast<uint8_t>(y[b].qh[32 * h + l] | ((v >> 4) << (2 * c)));
                }
    }
}

// Q4_0 with a searched scale. Candidates: the max-abs rule itself (so no block gets worse than
// plain Q4_0) and least-squares refits of the quants given by a grid of scales; each is judged
// with its fp16-rounded scale, as a reader will see it.
void quantize_row_q4_0_mse(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q4_0*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; ++j)
            if (std::fabs(x[j]) > amax) { amax = std::fabs(x[j]); max = x[j]; }
        auto err_of = [&](uint16_t dh16, const float* id_opt) {
            const float dh = fp16_to_fp32(dh16);
            const float id = id_opt ? *id_opt : (dh != 0.0f ? 1.0f / dh : 0.0f);
            double e = 0;
            for (int j = 0; j < QK4_0; ++j) {
                const int q = clampi(id_opt ? int(std::min(15.0f, std::max(0.0f, x[j] * id + 8.5f))) - 8
                                            : nearest_int(x[j] * id), -8, 7);
                const double r = double(dh) * q - x[j];
                e += r * r;
            }
            return e;
        };
        // plain Q4_0: the quants use the float32 1/d, as the max-abs rule defines them
        const float d0 = max / -8.0f;
        const float id0 = d0 != 0.0f ? 1.0f / d0 : 0.0f;
        uint16_t best_d = fp32_to_fp16(d0);
        bool best_plain = true;
        double best_err = err_of(best_d, &id0);
        if (amax > 0.0f && std::isfinite(amax)) {
            const float s = fit_scale_sym(x, QK4_0, 8, 7);
            for (const uint16_t cand : {fp32_to_fp16(s), fp32_to_fp16(-s)}) {
                const double e = err_of(cand, nullptr);
                if (e < best_err) { best_err = e; best_d = cand; best_plain = false; }
            }
        }
        y[b].d = best_d;
        const float dh = fp16_to_fp32(best_d);
        const float id = best_plain ? id0 : (dh != 0.0f ? 1.0f / dh : 0.0f);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            int lo, hi;
            if (best_plain) {
                lo = int(std::min(15.0f, std::max(0.0f, x[j] * id + 8.5f)));
                hi = int(std::min(15.0f, std::max(0.0f, x[j + 16] * id + 8.5f)));
            } else {
                lo = clampi(nearest_int(x[j] * id), -8, 7) + 8;
                hi = clampi(nearest_int(x[j + 16] * id), -8, 7) + 8;
            }
            y[b].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
        }
    }
}

// Truncating float -> 5-bit conversion (llama.cpp's (int8_t)(v) then MIN(31, .)), NaN-safe.
static inline uint8_t q5_from(float v) {
    if (v >= 31.0f) return 31;
    if (v > 0.0f) return static_cast<uint8_t>(v);
    return 0;
}

static void pack_q5(const uint8_t* q, uint8_t* qh, uint8_t* qs) {
    uint32_t h = 0;
    for (int j = 0; j < 16; ++j) {
        qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
        h |= uint32_t(q[j] >> 4) << j;
        h |= uint32_t(q[j + 16] >> 4) << (j + 16);
    }
    std::memcpy(qh, &h, 4);
}

static inline int unpack_q5(const uint8_t* qh, const uint8_t* qs, int j) {
    uint32_t h;
    std::memcpy(&h, qh, 4);
    const int lo = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
    return lo | int((h >> j) & 1) << 4;
}

// Q5_0: d = max / -16 with max the element of largest magnitude, with its sign (first on ties).
void quantize_row_q5_0(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q5_0*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK4_0; ++j) {
            const bool first_nan = std::isnan(x[j]) && !std::isnan(amax);
            if (amax < std::fabs(x[j]) || first_nan) { amax = std::fabs(x[j]); max = x[j]; }
        }
        const float d = max / -16.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        uint8_t q[QK4_0];
        for (int j = 0; j < QK4_0; ++j) q[j] = q5_from(x[j] * id + 16.5f);
        pack_q5(q, y[b].qh, y[b].qs);
    }
}

// Q5_1: d = (max - min) / 31, offset min.
void quantize_row_q5_1(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q5_1*>(out);
    for (int64_t b = 0; b < k / QK4_0; ++b, x += QK4_0) {
        float min = x[0], max = x[0];
        for (int j = 1; j < QK4_0; ++j) { min = std::min(min, x[j]); max = std::max(max, x[j]); }
        const float d = (max - min) / 31.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = fp32_to_fp16(d);
        y[b].m = fp32_to_fp16(min);
        uint8_t q[QK4_0];
        for (int j = 0; j < QK4_0; ++j) q[j] = q5_from((x[j] - min) * id + 0.5f);
        pack_q5(q, y[b].qh, y[b].qs);
    }
}

void dequantize_row_q5_0(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q5_0*>(in);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK4_0; ++j) y[j] = d * float(unpack_q5(x[b].qh, x[b].qs, j) - 16);
    }
}

void dequantize_row_q5_1(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q5_1*>(in);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        for (int j = 0; j < QK4_0; ++j) y[j] = d * float(unpack_q5(x[b].qh, x[b].qs, j)) + m;
    }
}

void quantize_act_q8_K(const float* x, void* out, int64_t k) {
    auto* y = static_cast<block_q8_K*>(out);
    for (int64_t b = 0; b < k / QK_K; ++b, x += QK_K) {
        float amax = 0.0f;
        for (int j = 0; j < QK_K; ++j) amax = std::max(amax, std::fabs(x[j]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = d;
        for (int j = 0; j < QK_K; ++j) {
            const float r = std::round(x[j] * id);
            y[b].qs[j] = static_cast<int8_t>(r >= 127.0f ? 127 : r <= -127.0f ? -127 : (r == r ? int(r) : 0));
        }
        for (int g = 0; g < QK_K / 16; ++g) {
            int s = 0;
            for (int l = 0; l < 16; ++l) s += y[b].qs[16 * g + l];
            y[b].bsums[g] = static_cast<int16_t>(s);
        }
    }
}

// sum_j sc_j * <q_j, a_j> - and the min term sum_j m_j * (sum of a_j), per super-block in int32.
float dot_q4_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q4_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            kquant_scale_min(j, x[b].scales, sc, m);
            const uint8_t* q = x[b].qs + 32 * (j / 2);
            const int8_t* av = a[b].qs + 32 * j;
            int32_t s = 0;
            for (int l = 0; l < 32; ++l) s += ((q[l] >> (4 * (j % 2))) & 0xF) * av[l];
            sumi += sc * s;
            summ += m * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        }
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

float dot_q5_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q5_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 8; ++j) {
            uint8_t sc, m;
            kquant_scale_min(j, x[b].scales, sc, m);
            const uint8_t* q = x[b].qs + 32 * (j / 2);
            const int8_t* av = a[b].qs + 32 * j;
            int32_t s = 0;
            for (int l = 0; l < 32; ++l)
                s += (((q[l] >> (4 * (j % 2))) & 0xF) | (((x[b].qh[l] >> j) & 1) << 4)) * av[l];
            sumi += sc * s;
            summ += m * (a[b].bsums[2 * j] + a[b].bsums[2 * j + 1]);
        }
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

// Quants are taken unsigned (0..63, as SIMD multiplies them) and the offset removed with bsums.
float dot_q6_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q6_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t sumi = 0;
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = x[b].ql + 64 * h;
            const uint8_t* qh = x[b].qh + 32 * h;
            for (int c = 0; c < 4; ++c)
                for (int half = 0; half < 2; ++half) {
                    const int j = 8 * h + 2 * c + half;  // sub-block of 16
                    int32_t s = 0;
                    for (int l = 16 * half; l < 16 * half + 16; ++l) {
                        const int lo = (ql[l + 32 * (c % 2)] >> (4 * (c / 2))) & 0xF;
                        s += (lo | (((qh[l] >> (2 * c)) & 3) << 4)) * a[b].qs[128 * h + 32 * c + l];
                    }
                    sumi += x[b].scales[j] * (s - 32 * a[b].bsums[j]);
                }
        }
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi));
    }
    return sum;
}

}  // namespace ref

void fill_kquant_ref(KQuantKernels& k) {
    k.dequantize_row_q4_K = ref::dequantize_row_q4_K;
    k.dequantize_row_q5_K = ref::dequantize_row_q5_K;
    k.dequantize_row_q6_K = ref::dequantize_row_q6_K;
    k.quantize_row_q4_K = ref::quantize_row_q4_K;
    k.quantize_row_q5_K = ref::quantize_row_q5_K;
    k.quantize_row_q6_K = ref::quantize_row_q6_K;
    k.quantize_row_q4_0_mse = ref::quantize_row_q4_0_mse;
    k.quantize_row_q5_0 = ref::quantize_row_q5_0;
    k.quantize_row_q5_1 = ref::quantize_row_q5_1;
    k.dequantize_row_q5_0 = ref::dequantize_row_q5_0;
    k.dequantize_row_q5_1 = ref::dequantize_row_q5_1;
    k.quantize_act_q8_K = ref::quantize_act_q8_K;
    k.dot_q4_K_q8_K = ref::dot_q4_K_q8_K;
    k.dot_q5_K_q8_K = ref::dot_q5_K_q8_K;
    k.dot_q6_K_q8_K = ref::dot_q6_K_q8_K;
}

}  // namespace llamix
