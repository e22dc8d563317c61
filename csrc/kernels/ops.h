// The transformer's hot operations (everything but the matmuls).
#pragma once
#include <cstdint>

namespace llamix {

struct OpsKernels {
    // y = x / sqrt(mean(x^2) + eps) * w, one row of n.
    void (*rmsnorm)(const float* x, const float* w, float* y, int64_t n, float eps) = nullptr;
};

void fill_ops_ref(OpsKernels& k);
void fill_ops_avx2(OpsKernels& k);
void fill_ops_avx512(OpsKernels& k);
void fill_ops_neon(OpsKernels& k);

}  // namespace llamix
