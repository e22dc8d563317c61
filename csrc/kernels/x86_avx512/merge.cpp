#include "kernels/merge.h"

namespace llamix {
void fill_merge_avx512(MergeKernels&) {}
}  // namespace llamix
