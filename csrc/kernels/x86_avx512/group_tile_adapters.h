// Adapters from the AVX-512 K-quant family's multi-group tiles (G row groups, T tokens; K-quant
// and low-bit kernels alike) to the kernel table's entries: one group for GEMM, two for decode.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace llamix {
namespace avx512 {

using GroupTileFn = void (*)(const uint8_t*, int64_t, const uint8_t*, int64_t, float*, int64_t, __mmask16);
using MultiTileFn = void (*)(const uint8_t* const*, int64_t, const uint8_t*, int64_t, float* const*, int64_t, const __mmask16*);

// One group, T tokens.
template <MultiTileFn Tile>
void one_group(const uint8_t* w, int64_t nsb, const uint8_t* xq, int64_t xq_stride, float* y, int64_t y_stride, __mmask16 rows) {
    Tile(&w, nsb, xq, xq_stride, &y, y_stride, &rows);
}

// Two groups, one token (MatmulKernels::GemvPair): the decode tiles with G = 2.
template <MultiTileFn Tile>
void gemv_pair(const uint8_t* w0, const uint8_t* w1, int64_t nsb, const void* xq, float* y0, float* y1, int rows0, int rows1) {
    const uint8_t* const w[2] = {w0, w1};
    float* const y[2] = {y0, y1};
    const __mmask16 rows[2] = {__mmask16((1u << rows0) - 1), __mmask16((1u << rows1) - 1)};
    Tile(w, nsb, static_cast<const uint8_t*>(xq), 0, y, 0, rows);
}

}  // namespace avx512
}  // namespace llamix
