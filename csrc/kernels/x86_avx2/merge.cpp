#include "kernels/merge.h"

namespace llamix {
void fill_merge_avx2(MergeKernels&) {}
}  // namespace llamix
