// NEON conversions between float32 and fp16 / bfloat16 (exact, round to nearest even, as the
// reference). The Q4_0 / Q8_0 quantizers stay the reference's: their bytes must match gguf
// exactly, and quantizing is done once per weight.
#include <arm_neon.h>

#include <cstring>

#include "kernels/quant.h"

namespace llamix {
namespace neon {

namespace {
// 4 at a time; the tail (< 4) goes through a zero-padded vector: the one place it is handled.
template <class Src, class Dst, class Convert>
void convert(const Src* x, Dst* y, int64_t n, Convert f) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) f(x + i, y + i);
    if (i < n) {
        Src in[4] = {};
        Dst out[4];
        std::memcpy(in, x + i, size_t(n - i) * sizeof(Src));
        f(in, out);
        std::memcpy(y + i, out, size_t(n - i) * sizeof(Dst));
    }
}
}  // namespace

void f16_to_f32(const uint16_t* x, float* y, int64_t n) {
    convert(x, y, n, [](const uint16_t* s, float* d) { vst1q_f32(d, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(s)))); });
}

void f32_to_f16(const float* x, uint16_t* y, int64_t n) {
    convert(x, y, n, [](const float* s, uint16_t* d) { vst1_u16(d, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(s)))); });
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
    convert(x, y, n, [](const uint16_t* s, float* d) { vst1q_f32(d, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(s), 16))); });
}

void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
    convert(x, y, n, [](const float* s, uint16_t* d) {
        const uint32x4_t u = vld1q_u32(reinterpret_cast<const uint32_t*>(s));
        const uint32x4_t lsb = vandq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(1));
        const uint32x4_t r = vshrq_n_u32(vaddq_u32(u, vaddq_u32(vdupq_n_u32(0x7fff), lsb)), 16);
        const uint32x4_t nan = vcgtq_u32(vandq_u32(u, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
        const uint32x4_t quiet = vorrq_u32(vshrq_n_u32(u, 16), vdupq_n_u32(0x40));
        vst1_u16(d, vmovn_u32(vbslq_u32(nan, quiet, r)));
    });
}

}  // namespace neon

void fill_quant_neon(QuantKernels& k) {
    k.f16_to_f32 = neon::f16_to_f32;
    k.f32_to_f16 = neon::f32_to_f16;
    k.bf16_to_f32 = neon::bf16_to_f32;
    k.f32_to_bf16 = neon::f32_to_bf16;
}

}  // namespace llamix
