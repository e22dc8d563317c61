// 2^f for f in [-1/2, 1/2] by its Taylor polynomial of degree 6 (relative error below 2e-7): the
// coefficients ln2^i / i!, highest first, for the one-pass softmaxes of every x86 ISA (Horner:
// p = c[0]; p = p * f + c[i]). One table, so the ISAs' exp stays the same polynomial.
#pragma once

namespace llamix {
namespace x86_shared {

constexpr float kExp2Taylor6[7] = {
    1.5403530393381609e-4f,  // ln2^6 / 6!
    1.3333558146428443e-3f,  // ln2^5 / 5!
    9.6181291076284772e-3f,  // ln2^4 / 4!
    5.5504108664821580e-2f,  // ln2^3 / 3!
    2.4022650695910071e-1f,  // ln2^2 / 2!
    6.9314718055994531e-1f,  // ln2
    1.0f,
};

}  // namespace x86_shared
}  // namespace llamix
