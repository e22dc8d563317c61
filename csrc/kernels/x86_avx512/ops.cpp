// The AVX2 transformer ops are already bandwidth-bound at these sizes; AVX-512 adds nothing yet.
#include "kernels/ops.h"

namespace llamix {
void fill_ops_avx512(OpsKernels&) {}
}  // namespace llamix
