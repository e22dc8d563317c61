// AVX-512 VNNI kernels of Q4_1, IQ4_NL, Q2_K, Q3_K and IQ4_XS: the packed group kernels of
// lowbit_tiles.h (or their VBMI + GFNI copies, lowbit_vbmi.cpp, where the CPU has both), and the
// Q2_K, Q3_K, IQ4_XS row dots of kernels/x86_shared/lowbit_kquant.h compiled with this folder's flags.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "common/cpu_features.h"
#include "kernels/x86_avx512/lowbit_tiles.h"
#include "kernels/x86_shared/lowbit_kquant.h"

namespace llamix {
namespace avx512 {

struct Tag {};  // names this ISA's copies of kernels/x86_shared code

void fill_lowbit_groups_vbmi(MatmulKernels& m, KQuantKernels& k);  // lowbit_vbmi.cpp

}  // namespace avx512

void fill_lowbit_avx512(QuantKernels&, MatmulKernels& m, KQuantKernels& k) {
    m.gemm_q4_1 = avx512::run_tiles<true>;
    m.gemm_iq4_nl = avx512::run_tiles<false>;
    x86_shared::fill_lowbit_kquant_dots<avx512::Tag>(k);
    k.gemm_q2_K_groups = avx512::lowbit_groups<avx512::Q2Tile>;
    k.gemm_q3_K_groups = avx512::lowbit_groups<avx512::Q3Tile>;
    k.gemm_iq4_xs_groups = avx512::lowbit_groups<avx512::IQ4XSTile>;
    k.q3_K_layout = Q3KLayout::masks;  // its own layout, not AVX2's
    avx512::fill_gemv_pairs(m, k);
    if (cpu_features().avx512vbmi && cpu_features().gfni) avx512::fill_lowbit_groups_vbmi(m, k);
}

}  // namespace llamix
