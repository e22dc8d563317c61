// The scalar references' shared loops: packed 16-row groups against Q8_0 activations (Q4_0, Q8_0,
// Q4_1, IQ4_NL; layouts in kernels/matmul.h) and weight rows against Q8_K activations (Q4_K,
// Q5_K, Q6_K, Q2_K, Q3_K, IQ4_XS). Each type gives only its per-block term; the float32 sum runs
// block by block in order, which every SIMD variant reproduces.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/fp16.h"
#include "kernels/matmul.h"

namespace llamix {
namespace ref {

// Row r's fp16 field of a packed group (d at offset 0, Q4_1's m at 2 * kGroupRows), as float.
inline float group_half(const uint8_t* blk, int64_t offset, int r) {
    uint16_t h;
    std::memcpy(&h, blk + offset + 2 * r, 2);
    return fp16_to_fp32(h);
}

// y[t * y_stride + r] = sum over the nb blocks, in order, of Term(packed block, r, activation block).
template <int64_t BlockBytes, float (*Term)(const uint8_t* blk, int r, const block_q8a& xb)>
void gemm_groups(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    for (int64_t t = 0; t < n; ++t, x += nb)
        for (int r = 0; r < rows; ++r) {
            float sum = 0.0f;
            for (int64_t b = 0; b < nb; ++b) sum += Term(w + b * BlockBytes, r, x[b]);
            y[t * y_stride + r] = sum;
        }
}

// One weight row against n Q8_K activation rows (xq_stride bytes apart), Dot(k, row, activations).
template <float (*Dot)(int64_t, const void*, const void*)>
void dot_rows(int64_t k, const void* w, const void* xq, int64_t xq_stride, int n, float* y, int64_t y_stride) {
    for (int t = 0; t < n; ++t) y[t * y_stride] = Dot(k, w, static_cast<const uint8_t*>(xq) + t * xq_stride);
}

}  // namespace ref
}  // namespace llamix
