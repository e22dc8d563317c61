#include "kernels/matmul.h"

namespace llamix {
void fill_matmul_avx512(MatmulKernels&) {}
}  // namespace llamix
