// Merge primitives (weighted sums, SLERP, task-vector sparsify / consensus).
#pragma once
#include <cstdint>

namespace llamix {

struct MergeKernels {
    // Placeholder entry so the table has a shape before the merge kernels land.
    int reserved = 0;
};

void fill_merge_ref(MergeKernels& k);
void fill_merge_avx2(MergeKernels& k);
void fill_merge_avx512(MergeKernels& k);
void fill_merge_neon(MergeKernels& k);

}  // namespace llamix
