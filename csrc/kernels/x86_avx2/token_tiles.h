// The AVX2 token-tile driver of the 16-row groups paired with Q8_0 activations (Q4_0 and Q8_0 in
// matmul.cpp, Q4_1 and IQ4_NL in lowbit.cpp): written once for the files of this ISA folder.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/formats.h"

namespace llamix {
namespace avx2 {
namespace {

constexpr int kTile = 4;  // tokens per register tile (16 ymm registers)

// One 8-row half of a group for T = 1..kTile tokens: out[t][row].
using HalfFn = void (*)(const uint8_t*, int64_t, const block_q8a*, int, float[][8]);

// Token tiles of kTile, then one smaller tile: the only tail handling. Results go through a small
// buffer so rows beyond `rows` (padding) are never written.
template <HalfFn F1, HalfFn F2, HalfFn F3, HalfFn F4>
void run_tiles(const uint8_t* w, int64_t nb, const block_q8a* x, int64_t n, float* y, int64_t y_stride, int rows) {
    static constexpr HalfFn fns[kTile + 1] = {nullptr, F1, F2, F3, F4};
    float out[kTile][8];
    for (int64_t t = 0; t < n; t += kTile) {
        const int nt = int(n - t < kTile ? n - t : kTile);
        for (int h = 0; h < 2 && 8 * h < rows; ++h) {
            fns[nt](w, nb, x + t * nb, h, out);
            const int nr = rows - 8 * h < 8 ? rows - 8 * h : 8;
            for (int i = 0; i < nt; ++i) std::memcpy(y + (t + i) * y_stride + 8 * h, out[i], size_t(nr) * sizeof(float));
        }
    }
}

}  // namespace
}  // namespace avx2
}  // namespace llamix
