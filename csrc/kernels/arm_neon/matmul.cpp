#include "kernels/matmul.h"

namespace llamix {
void fill_matmul_neon(MatmulKernels&) {}
}  // namespace llamix
