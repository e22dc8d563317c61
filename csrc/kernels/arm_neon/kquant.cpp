// arm64: no NEON K-quant kernels yet; the reference fills the table.
#include "kernels/kquant.h"

namespace llamix {
void fill_kquant_neon(KQuantKernels&) {}
}  // namespace llamix
