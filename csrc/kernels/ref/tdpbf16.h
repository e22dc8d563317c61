// The arithmetic of AMX's TDPBF16PS in portable C++: the spec of the bf16 attention products
// (kernels/ops.h, attn_bf16_*), which the AVX2 / AVX-512 emulations and the AMX kernels reproduce
// bit for bit. Intel SDM, TDPBF16PS: per output element and instruction (32 bf16 pairs of a row
// of A and a column of B), the even and the odd products are summed in two float32 chains of fused
// multiply-adds from zero, then c + (even + odd); round to nearest even, denormal inputs read as
// zero, denormal results flushed to zero, MXCSR neither read nor written. Checked against the
// instruction on random and edge inputs (tests/test_attention_amx.py).
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "common/fp16.h"

namespace llamix {
namespace ref {

// A denormal read as a zero of its sign.
inline float tdp_daz(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }

// c + a b rounded once to nearest even, denormal inputs as zero, a tiny result flushed to a zero of
// its sign. Tininess is detected after rounding (to 24 bits, exponent unbounded), as x86 does: a
// result that rounds up to the smallest normal under gradual underflow is still flushed when the
// unbounded rounding stays below it, so that case is decided again on operands scaled by 2^64
// (exact then: |a b| and |c| are below 2^-100 there).
inline float tdp_fma(float a, float b, float c) {
    a = tdp_daz(a);
    b = tdp_daz(b);
    c = tdp_daz(c);
    const float r = std::fma(a, b, c);
    const float mag = std::fabs(r);
    if (mag < FLT_MIN) return std::copysign(0.0f, r);
    if (mag == FLT_MIN && std::fabs(std::fma(a * 0x1p32f, b * 0x1p32f, c * 0x1p64f)) < 0x1p-62f)
        return std::copysign(0.0f, r);
    return r;
}

// c plus one block of 16 bf16 pairs in TDPBF16PS's order: a's pairs (a[2i], a[2i+1]) against b's
// (b[32 i], b[32 i + 1]): a row of an A tile against a column of a B tile in AMX's pair layout.
inline float tdp_block(float c, const uint16_t* a, const uint16_t* b) {
    float even = 0.0f, odd = 0.0f;
    for (int i = 0; i < 16; ++i) {
        even = tdp_fma(bf16_to_fp32(a[2 * i]), bf16_to_fp32(b[32 * i]), even);
        odd = tdp_fma(bf16_to_fp32(a[2 * i + 1]), bf16_to_fp32(b[32 * i + 1]), odd);
    }
    return tdp_fma(1.0f, c, tdp_fma(1.0f, even, odd));
}

}  // namespace ref
}  // namespace llamix
