// y = x @ W.T with W in a block format or F16/BF16/F32 and x float32.
// The SIMD-specific pieces are dot products over one weight row; the threaded driver
// (kernels/matmul.cpp) is shared by every ISA.
#pragma once
#include <cstdint>

#include "common/formats.h"

namespace llamix {

struct MatmulKernels {
    // Activation quantizer used before integer dot products (same rule as quantize_row_q8_0:
    // round half away from zero), so every ISA produces the same activation bytes.
    void (*quantize_act_q8_0)(const float* x, void* y, int64_t k) = nullptr;
    // One weight row (k elements) against one activation row; returns the float32 dot product.
    float (*dot_q4_0_q8_0)(int64_t k, const void* w, const void* x_q8) = nullptr;
    float (*dot_q8_0_q8_0)(int64_t k, const void* w, const void* x_q8) = nullptr;
    float (*dot_f16_f32)(int64_t k, const void* w, const float* x) = nullptr;
    float (*dot_bf16_f32)(int64_t k, const void* w, const float* x) = nullptr;
    float (*dot_f32_f32)(int64_t k, const void* w, const float* x) = nullptr;
};

void fill_matmul_ref(MatmulKernels& k);
void fill_matmul_avx2(MatmulKernels& k);
void fill_matmul_avx512(MatmulKernels& k);
void fill_matmul_neon(MatmulKernels& k);

// A weight matrix prepared once for fast multiplication (an ISA may repack it, e.g. rows
// interleaved in tiles); it borrows the source bytes, which must outlive it.
struct PreparedWeight {
    const void* data = nullptr;  // the original GGUF bytes, (rows, row_bytes)
    QType type = QType::F32;
    int64_t rows = 0, k = 0;
};

PreparedWeight prepare_weight(const void* w, QType wtype, int64_t rows, int64_t k);
// y: (n, rows) = x: (n, k) @ W.T
void matmul_prepared(const float* x, int64_t n, const PreparedWeight& w, float* y);

// The threaded driver. x: (n, k) float32, w: (rows, k) of type wtype, y: (n, rows) float32.
void matmul(const float* x, int64_t n, int64_t k, const void* w, QType wtype, int64_t rows, float* y);

}  // namespace llamix
