// Kernels of the types published files use besides llamix's own (issue #15): Q4_1 and IQ4_NL
// (32-blocks, multiplied as packed 16-row groups against Q8_0 activations, as Q4_0 is) and Q2_K,
// Q3_K, IQ4_XS (256-element super-blocks, row dots against Q8_K activations, as the K-quants).
// Their entries live in the families' tables (kernels/quant.h, matmul.h, kquant.h); these
// functions fill them, each ISA only what it accelerates.
#pragma once
#include "kernels/kquant.h"
#include "kernels/matmul.h"
#include "kernels/quant.h"

namespace llamix {

void fill_lowbit_ref(QuantKernels& q, MatmulKernels& m, KQuantKernels& k);
void fill_lowbit_avx2(QuantKernels& q, MatmulKernels& m, KQuantKernels& k);
void fill_lowbit_avx512(QuantKernels& q, MatmulKernels& m, KQuantKernels& k);

}  // namespace llamix
