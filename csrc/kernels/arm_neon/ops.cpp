// arm64: no NEON transformer ops yet; the reference fills the table.
#include "kernels/ops.h"

namespace llamix {
void fill_ops_neon(OpsKernels&) {}
}  // namespace llamix
