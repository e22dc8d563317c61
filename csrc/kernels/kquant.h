// K-quants (Q4_K, Q5_K, Q6_K): super-blocks of 256 with packed sub-block scales.
#pragma once
#include <cstdint>

namespace llamix {

struct KQuantKernels {
    // Placeholder entry so the table has a shape before the K-quant kernels land.
    int reserved = 0;
};

void fill_kquant_ref(KQuantKernels& k);
void fill_kquant_avx2(KQuantKernels& k);
void fill_kquant_avx512(KQuantKernels& k);
void fill_kquant_neon(KQuantKernels& k);

}  // namespace llamix
