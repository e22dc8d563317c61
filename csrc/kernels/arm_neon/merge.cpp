// arm64: the merge primitives are memory-bound and the reference loops auto-vectorise well
// enough; NEON variants can be added here (they must match ref/merge_ref.cpp bit for bit).
#include "kernels/merge.h"

namespace llamix {
void fill_merge_neon(MergeKernels&) {}
}  // namespace llamix
