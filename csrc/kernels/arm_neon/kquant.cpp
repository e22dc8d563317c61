#include "kernels/kquant.h"

namespace llamix {
void fill_kquant_neon(KQuantKernels&) {}
}  // namespace llamix
