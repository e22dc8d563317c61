#include "kernels/kquant.h"

namespace llamix {
void fill_kquant_avx512(KQuantKernels&) {}
}  // namespace llamix
