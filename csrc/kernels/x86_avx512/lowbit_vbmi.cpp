// The packed-group kernels of lowbit_tiles.h compiled for CPUs with AVX512-VBMI and GFNI (Ice Lake
// and later, Zen 4): vpermb looks up nibbles and 2-bit fields without the AND a vpshufb needs, and
// a GF(2) affine map takes a byte's top 2-bit field down in one instruction: fewer instructions
// per 64 weight bytes in the unpack that bounds decode. Same integer sums, so bit-identical with
// lowbit.cpp's copies and the reference. Chosen by fill_lowbit_avx512.
#pragma GCC target("avx512vbmi,gfni")
// GCC 12's own intrinsic headers under a target pragma: their _mm512_undefined_* self-initialise
// (GCC bug 105593), which warns once per use; nothing in this file is uninitialised
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define LLAMIX_LOWBIT_VBMI 1
#include "kernels/x86_avx512/lowbit_tiles.h"

namespace llamix {
namespace avx512 {

void fill_lowbit_groups_vbmi(MatmulKernels& m, KQuantKernels& k) {
    m.gemm_q4_1 = run_tiles<true>;
    m.gemm_iq4_nl = run_tiles<false>;
    k.gemm_q2_K_groups = lowbit_groups<Q2Tile>;
    k.gemm_q3_K_groups = lowbit_groups<Q3Tile>;
    k.gemm_iq4_xs_groups = lowbit_groups<IQ4XSTile>;
    fill_gemv_pairs(m, k);
}

}  // namespace avx512
}  // namespace llamix
