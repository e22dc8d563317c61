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
#include "kernels/ref/row_loops.h"
#include "kernels/ref/scale_search.h"

namespace llamix {
namespace ref {

namespace {

inline float finite_or_zero(float v) { return std::isfinite(v) ? v : 0.0f; }

// Fit x ~= s * q - m with q in [0, nmax], s >= 0, m >= 0 (an asymmetric sub-block): for each
// candidate scale, the quants it gives are refitted by weighted-free least squares; the error
// is evaluated in closed form from the sums.
void fit_scale_min(const float* x, int n, int nmax, float& s_out, float& m_out) {
    float xmin = x[0], xmax = x[0];
    double sx = 0, sxx = 0;
    for (int i = 0; i < n; ++i) {
        xmin = std::min(xmin, x[i]); xmax = std::max(xmax, x[i]);
        sx += x[i]; sxx += double(x[i]) * x[i];
    }
    xmin = std::min(xmin, 0.0f);  // the min is stored as a non-negative offset
    if (!(xmax > xmin) || !std::isfinite(xmax - xmin)) { s_out = 0.0f; m_out = -xmin; return; }
    double best_err = INFINITY;
    float best_s = (xmax - xmin) / nmax, best_m = -xmin;
    for (int step = -10; step <= 10; ++step) {
        const float iscale = (nmax + 0.1f * step) / (xmax - xmin);
        const QuantSums q = quant_sums(x, n, iscale, xmin, 0.0f, float(nmax));
        // least squares for (s, b) in x ~= s q + b, then b <= 0 enforced
        const double det = n * double(q.qq) - double(q.q) * q.q;
        if (det <= 0) continue;
        double s = (n * double(q.qx) - q.q * sx) / det, b = (double(q.qq) * sx - q.q * double(q.qx)) / det;
        if (b > 0) { b = 0; s = q.qq > 0 ? q.qx / double(q.qq) : 0; }
        if (s < 0) continue;
        // sum (s q + b - x)^2 expanded
        const double err = s * s * q.qq + 2 * s * b * q.q + n * b * b - 2 * s * q.qx - 2 * b * sx + sxx;
        if (err < best_err) { best_err = err; best_s = float(s); best_m = float(-b); }
    }
    s_out = best_s;
    m_out = best_m;
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
    k.quantize_act_q8_K = ref::quantize_act_q8_K;
    k.dot_q4_K_q8_K = ref::dot_rows<ref::dot_q4_K_q8_K>;
    k.dot_q5_K_q8_K = ref::dot_rows<ref::dot_q5_K_q8_K>;
    k.dot_q6_K_q8_K = ref::dot_rows<ref::dot_q6_K_q8_K>;
}

}  // namespace llamix
