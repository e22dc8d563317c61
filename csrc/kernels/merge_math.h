// float32 exp and log for the merge kernels (arcee_fusion's softmax and KL divergence): Cephes'
// polynomials evaluated with fused multiply-adds in a fixed order, so the scalar reference and the
// SIMD variants (which repeat these steps lane by lane) give the same bits. Both are within 2 ulps
// of the true value on their domain.
//
// exp_f32: x < kExpLo gives 0 (no subnormal results below e^-87.34), x > kExpHi gives +inf (a little
// early: exp(88.72) still fits in a float), NaN stays NaN.
// log_f32: for normal positive x; 0 gives -inf, negative x the quiet NaN 0x7fc00000, +inf gives +inf,
// NaN stays NaN. A subnormal x is read as if its exponent field were that of a normal number (the
// same wrong answer on every ISA; the merge kernels never pass one).
#pragma once
#include <cstdint>

namespace llamix {
namespace merge_math {

constexpr float kExpLo = -87.33654f;  // x * log2(e) >= -126: 2^k stays a normal number
constexpr float kExpHi = 88.0f;       // x * log2(e) <= 127
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;     // ln 2 = kLn2Hi + kLn2Lo, kLn2Hi exact in 9 bits
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpP[6] = {1.9875691500E-4f, 1.3981999507E-3f, 8.3334519073E-3f,
                            4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f};
constexpr float kSqrtHalf = 0.707106781186547524f;
constexpr float kLogP[9] = {7.0376836292E-2f,  -1.1514610310E-1f, 1.1676998740E-1f,
                            -1.2420140846E-1f, 1.4249322787E-1f,  -1.6668057665E-1f,
                            2.0000714765E-1f,  -2.4999993993E-1f, 3.3333331174E-1f};
constexpr uint32_t kQuietNan = 0x7fc00000u;

// Defined in ref/merge_more_ref.cpp (baseline code: the ISA files call these for their tails, so
// no copy compiled with SIMD flags can stand in for them).
float exp_f32(float x);
float log_f32(float x);

}  // namespace merge_math
}  // namespace llamix
