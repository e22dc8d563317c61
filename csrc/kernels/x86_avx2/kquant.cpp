#include "kernels/kquant.h"

namespace llamix {
void fill_kquant_avx2(KQuantKernels&) {}
}  // namespace llamix
