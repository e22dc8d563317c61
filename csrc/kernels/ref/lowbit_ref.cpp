// Reference (scalar) kernels of Q4_1, IQ4_NL, Q2_K, Q3_K and IQ4_XS: THE SPEC for these types in
// llamix. Formats: llama.cpp's ggml-quants.c; dequantization follows gguf.quants operation by
// operation (float32, multiply and add rounded separately) so the floats are bit-identical.
// Dot products are exact integer sums per block combined in float32 in a fixed order, which the
// SIMD variants reproduce bit for bit.
#include <cstring>

#include "common/fp16.h"
#include "kernels/lowbit.h"
#include "kernels/ref/row_loops.h"

namespace llamix {
namespace ref {

namespace {

// Q3_K's 6-bit scale j (0..15) from its 12-byte field: low 4 bits from scales[j % 8] (low nibble
// for j < 8), high 2 bits from scales[8 + j % 4] at bit 2 (j / 4).
inline int q3_K_scale(const uint8_t* s, int j) {
    const int lo = (s[j % 8] >> (4 * (j / 8))) & 0xF;
    const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | (hi << 4)) - 32;
}

// IQ4_XS's 6-bit scale of sub-block j (0..7), offset removed.
inline int iq4_xs_scale(const block_iq4_xs& x, int j) {
    const int lo = (x.scales_l[j / 2] >> (4 * (j % 2))) & 0xF;
    const int hi = (x.scales_h >> (2 * j)) & 3;
    return (lo | (hi << 4)) - 32;
}

// Element e (0..255) of a Q2_K / Q3_K super-block's 2-bit field: bits 2s of qs[32 h + l] for
// e = 128 h + 32 s + l.
inline int two_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * ((e / 32) % 4))) & 3; }

}  // namespace

void dequantize_row_q4_1(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q4_1*>(in);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d), m = fp16_to_fp32(x[b].m);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = d * float(x[b].qs[j] & 0xF) + m;
            y[j + QK4_0 / 2] = d * float(x[b].qs[j] >> 4) + m;
        }
    }
}

void dequantize_row_iq4_nl(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_iq4_nl*>(in);
    for (int64_t b = 0; b < k / QK4_0; ++b, y += QK4_0) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            y[j] = d * float(kvalues_iq4nl[x[b].qs[j] & 0xF]);
            y[j + QK4_0 / 2] = d * float(kvalues_iq4nl[x[b].qs[j] >> 4]);
        }
    }
}

void dequantize_row_q2_K(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q2_K*>(in);
    for (int64_t b = 0; b < k / QK_K; ++b, y += QK_K) {
        const float d = fp16_to_fp32(x[b].d), dmin = fp16_to_fp32(x[b].dmin);
        for (int j = 0; j < 16; ++j) {
            const float dl = d * float(x[b].scales[j] & 0xF), ml = dmin * float(x[b].scales[j] >> 4);
            for (int e = 16 * j; e < 16 * j + 16; ++e) y[e] = dl * float(two_bits(x[b].qs, e)) - ml;
        }
    }
}

void dequantize_row_q3_K(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_q3_K*>(in);
    for (int64_t b = 0; b < k / QK_K; ++b, y += QK_K) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < 16; ++j) {
            const float dl = d * float(q3_K_scale(x[b].scales, j));
            for (int e = 16 * j; e < 16 * j + 16; ++e) {
                const int h = (x[b].hmask[e % 32] >> (e / 32)) & 1;
                y[e] = dl * float(two_bits(x[b].qs, e) - (h ? 0 : 4));
            }
        }
    }
}

void dequantize_row_iq4_xs(const void* in, float* y, int64_t k) {
    const auto* x = static_cast<const block_iq4_xs*>(in);
    for (int64_t b = 0; b < k / QK_K; ++b) {
        const float d = fp16_to_fp32(x[b].d);
        for (int j = 0; j < 8; ++j, y += 32) {
            const float dl = d * float(iq4_xs_scale(x[b], j));
            const uint8_t* q = x[b].qs + 16 * j;
            for (int l = 0; l < 16; ++l) {
                y[l] = dl * float(kvalues_iq4nl[q[l] & 0xF]);
                y[l + 16] = dl * float(kvalues_iq4nl[q[l] >> 4]);
            }
        }
    }
}

// Packed Q4_1 group block (kernels/matmul.h: rows' d, then m, then nibbles as Q4_0's), row r:
// (d_w * d_x) * isum + m_w * (d_x * sum_x).
float term_q4_1(const uint8_t* blk, int r, const block_q8a& xb) {
    const uint8_t* qs = blk + 4 * kGroupRows;
    int32_t isum = 0;
    for (int c = 0; c < 4; ++c)
        for (int j = 0; j < 4; ++j) {
            const uint8_t q = qs[(c * kGroupRows + r) * 4 + j];
            isum += (q & 0x0f) * xb.qs[4 * c + j] + (q >> 4) * xb.qs[16 + 4 * c + j];
        }
    return group_half(blk, 0, r) * xb.d * float(isum) + group_half(blk, 2 * kGroupRows, r) * (xb.d * float(xb.sum));
}

// Packed IQ4_NL group block: Q4_0's layout, levels from kvalues_iq4nl.
float term_iq4_nl(const uint8_t* blk, int r, const block_q8a& xb) {
    const uint8_t* qs = blk + 2 * kGroupRows;
    int32_t isum = 0;
    for (int c = 0; c < 4; ++c)
        for (int j = 0; j < 4; ++j) {
            const uint8_t q = qs[(c * kGroupRows + r) * 4 + j];
            isum += kvalues_iq4nl[q & 0x0f] * xb.qs[4 * c + j] + kvalues_iq4nl[q >> 4] * xb.qs[16 + 4 * c + j];
        }
    return group_half(blk, 0, r) * xb.d * float(isum);
}

// sum_j sc_j * <q_j, a_j> and sum_j m_j * bsums_j per super-block in int32 (as Q4_K).
float dot_q2_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q2_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t sumi = 0, summ = 0;
        for (int j = 0; j < 16; ++j) {
            int32_t s = 0;
            for (int e = 16 * j; e < 16 * j + 16; ++e) s += two_bits(x[b].qs, e) * a[b].qs[e];
            sumi += (x[b].scales[j] & 0xF) * s;
            summ += (x[b].scales[j] >> 4) * a[b].bsums[j];
        }
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi) - fp16_to_fp32(x[b].dmin) * float(summ));
    }
    return sum;
}

// Quants taken unsigned (q + 4 h, 0..7, as SIMD multiplies them); the offset 4 removed with bsums.
float dot_q3_K_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_q3_K*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t sumi = 0, off = 0;
        for (int j = 0; j < 16; ++j) {
            int32_t s = 0;
            for (int e = 16 * j; e < 16 * j + 16; ++e) {
                const int u = two_bits(x[b].qs, e) | (((x[b].hmask[e % 32] >> (e / 32)) & 1) << 2);
                s += u * a[b].qs[e];
            }
            const int sc = q3_K_scale(x[b].scales, j);
            sumi += sc * s;
            off += sc * a[b].bsums[j];
        }
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi - 4 * off));
    }
    return sum;
}

float dot_iq4_xs_q8_K(int64_t k, const void* w, const void* xq) {
    const auto* x = static_cast<const block_iq4_xs*>(w);
    const auto* a = static_cast<const block_q8_K*>(xq);
    float sum = 0.0f;
    for (int64_t b = 0; b < k / QK_K; ++b) {
        int32_t sumi = 0;
        for (int j = 0; j < 8; ++j) {
            const uint8_t* q = x[b].qs + 16 * j;
            const int8_t* av = a[b].qs + 32 * j;
            int32_t s = 0;
            for (int l = 0; l < 16; ++l) s += kvalues_iq4nl[q[l] & 0xF] * av[l] + kvalues_iq4nl[q[l] >> 4] * av[l + 16];
            sumi += iq4_xs_scale(x[b], j) * s;
        }
        sum += a[b].d * (fp16_to_fp32(x[b].d) * float(sumi));
    }
    return sum;
}

}  // namespace ref

void fill_lowbit_ref(QuantKernels& q, MatmulKernels& m, KQuantKernels& k) {
    q.dequantize_row_q4_1 = ref::dequantize_row_q4_1;
    q.dequantize_row_iq4_nl = ref::dequantize_row_iq4_nl;
    m.gemm_q4_1 = ref::gemm_groups<kQ41GroupBlockBytes, ref::term_q4_1>;
    m.gemm_iq4_nl = ref::gemm_groups<kQ4GroupBlockBytes, ref::term_iq4_nl>;
    k.dequantize_row_q2_K = ref::dequantize_row_q2_K;
    k.dequantize_row_q3_K = ref::dequantize_row_q3_K;
    k.dequantize_row_iq4_xs = ref::dequantize_row_iq4_xs;
    k.dot_q2_K_q8_K = ref::dot_rows<ref::dot_q2_K_q8_K>;
    k.dot_q3_K_q8_K = ref::dot_rows<ref::dot_q3_K_q8_K>;
    k.dot_iq4_xs_q8_K = ref::dot_rows<ref::dot_iq4_xs_q8_K>;
}

}  // namespace llamix
