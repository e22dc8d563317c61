// Quantize / dequantize / convert rows between float32 and the block formats.
#pragma once
#include <cstdint>

#include "common/formats.h"

namespace llamix {

struct QuantKernels {
    // x: (k) float32 -> y: (k / 32) blocks. k is a multiple of 32.
    void (*quantize_row_q4_0)(const float* x, void* y, int64_t k) = nullptr;
    void (*quantize_row_q8_0)(const float* x, void* y, int64_t k) = nullptr;
    // blocks -> (k) float32
    void (*dequantize_row_q4_0)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q8_0)(const void* x, float* y, int64_t k) = nullptr;
    // element-wise conversions
    void (*f16_to_f32)(const uint16_t* x, float* y, int64_t n) = nullptr;
    void (*bf16_to_f32)(const uint16_t* x, float* y, int64_t n) = nullptr;
    void (*f32_to_f16)(const float* x, uint16_t* y, int64_t n) = nullptr;
    void (*f32_to_bf16)(const float* x, uint16_t* y, int64_t n) = nullptr;
    // Q4_0 bytes (readable by every Q4_0 reader) with the per-block scale chosen to minimise
    // the squared error instead of the max-abs rule; k is a multiple of 32.
    void (*quantize_row_q4_0_mse)(const float* x, void* y, int64_t k) = nullptr;
    // Q5_0 / Q5_1, the fallbacks of Q4_K / Q5_K for rows that are not a multiple of 256; the
    // quantizers are llama.cpp's reference rules, byte-identical with gguf.quants. k is a
    // multiple of 32.
    void (*quantize_row_q5_0)(const float* x, void* y, int64_t k) = nullptr;
    void (*quantize_row_q5_1)(const float* x, void* y, int64_t k) = nullptr;
    void (*dequantize_row_q5_0)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_q5_1)(const void* x, float* y, int64_t k) = nullptr;
    // Q4_1 / IQ4_NL blocks -> float32, bit-exact with gguf.quants.dequantize; k a multiple of 32.
    void (*dequantize_row_q4_1)(const void* x, float* y, int64_t k) = nullptr;
    void (*dequantize_row_iq4_nl)(const void* x, float* y, int64_t k) = nullptr;
};

void fill_quant_ref(QuantKernels& k);

// One block of the reference quantizers: SIMD variants hand blocks containing NaN to these, so
// NaN payloads and the sign of zero come out exactly as the spec says.
namespace ref {
void quantize_block_q4_0(const float* x, block_q4_0* y);
void quantize_block_q8_0(const float* x, block_q8_0* y);
}  // namespace ref
void fill_quant_avx2(QuantKernels& k);
void fill_quant_avx512(QuantKernels& k);
void fill_quant_neon(QuantKernels& k);

}  // namespace llamix
