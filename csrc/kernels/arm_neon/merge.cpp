#include "kernels/merge.h"

namespace llamix {
void fill_merge_neon(MergeKernels&) {}
}  // namespace llamix
