// K-quants (Q4_K, Q5_K, Q6_K): super-blocks of 256 weights with packed sub-block scales
// (block layouts in common/formats.h; values as llama.cpp's ggml-quants.c / gguf.quants define
// them), and the error-minimising quantizers (K-quants, and Q4_0 bytes with a searched scale).
//
// Dot products run against activations quantized to Q8_K: one float32 scale per 256 values,
// int8 quants, and the sum of every 16 quants (so the K-quant mins and Q6_K's offset of 32 are
// removed with one multiply per sub-block). Every ISA computes the same integer sums per
// super-block and combines them in float32 in the same order, so results are bit-identical
// across ISAs.
#pragma once
#include <cstdint>

#include "common/formats.h"

namespace llamix {

// Activations for K-quant dot products: value = d * qs[i].
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];  // sum of qs[16 j .. 16 j + 15]
};
static_assert(sizeof(block_q8_K) == 292, "Q8_K block must be 292 bytes");

// Unpack sub-block j (0..7) scale and min from a Q4_K/Q5_K 12-byte scale field.
inline void kquant_scale_min(int j, const uint8_t* s, uint8_t& sc, uint8_t& m) {
    if (j < 4) {
        sc = s[j] & 63;
        m = s[j + 4] & 63;
    } else {
        sc = static_cast<uint8_t>((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        m = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

struct KQuantKernels {
    // blocks -> (k) float32; k is a multiple of 256. Bit-exact with gguf.quants.dequantize.
    void (*dequantize_row_q4_K)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q5_K)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q6_K)(const void* x, float* y, int64_t k) = nullptr;
    // (k) float32 -> blocks, scales and mins chosen by a weighted least-squares search.
    void (*quantize_row_q4_K)(const float* x, void* y, int64_t k) = nullptr;
    void (*quantize_row_q5_K)(const float* x, void* y, int64_t k) = nullptr;
    void (*quantize_row_q6_K)(const float* x, void* y, int64_t k) = nullptr;
    // Q4_0 bytes (readable by every Q4_0 reader) with the per-block scale chosen to minimise
    // the squared error instead of the max-abs rule; k is a multiple of 32.
    void (*quantize_row_q4_0_mse)(const float* x, void* y, int64_t k) = nullptr;
    // Q5_0 / Q5_1, the fallbacks of Q4_K / Q5_K for rows that are not a multiple of 256; the
    // quantizers are llama.cpp's reference rules, byte-identical with gguf.quants.
    void (*quantize_row_q5_0)(const float* x, void* y, int64_t k) = nullptr;
    void (*quantize_row_q5_1)(const float* x, void* y, int64_t k) = nullptr;
    void (*dequantize_row_q5_0)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q5_1)(const void* x, float* y, int64_t k) = nullptr;
    // Activation quantizer: d = amax / 127, q = round(x / d) half away from zero.
    void (*quantize_act_q8_K)(const float* x, void* y, int64_t k) = nullptr;
    // One weight row (k elements) against one Q8_K activation row.
    float (*dot_q4_K_q8_K)(int64_t k, const void* w, const void* x_q8k) = nullptr;
    float (*dot_q5_K_q8_K)(int64_t k, const void* w, const void* x_q8k) = nullptr;
    float (*dot_q6_K_q8_K)(int64_t k, const void* w, const void* x_q8k) = nullptr;
};

void fill_kquant_ref(KQuantKernels& k);
void fill_kquant_avx2(KQuantKernels& k);
void fill_kquant_avx512(KQuantKernels& k);
void fill_kquant_neon(KQuantKernels& k);

// The threaded matmul for K-quant weights (kernels/kquant_matmul.cpp): quantize the activations
// to Q8_K once, then fixed-size row tasks. Q5_0 / Q5_1 (small fallback tensors) are dequantized
// row by row and multiplied in float32. x: (n, k), w: (rows, k) of type wtype, y: (n, rows).
bool is_kquant(QType t);  // Q4_K, Q5_K, Q6_K, Q5_0, Q5_1: the types this family multiplies
// One row of any of those types -> float32 (e.g. an embedding lookup).
void dequantize_row_kquant(QType t, const void* x, float* y, int64_t k);
void matmul_kquant(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y);

}  // namespace llamix
