#include "kernels/quant.h"

namespace llamix {
void fill_quant_avx512(QuantKernels&) {}
}  // namespace llamix
